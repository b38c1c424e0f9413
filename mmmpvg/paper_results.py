"""The paper's published numbers, and which config reproduces which row.

The one place the paper's metrics live: ``tools/collect_results.py`` prints
them beside our runs and ``configs/*/metafile.yml`` state them (a test keeps
the metafiles equal to this module). Numbers are transcribed from the AAAI
2025 paper (Tables 1-6, Fig. 5); #Params are in millions, cut (not rounded)
to 3 decimals as printed.

A row names the structure that produced it: the registered backbone type,
its ``arch``, the data set, the task and the position-embedding settings
(``pe_cfg`` and, for backbones with a class token switch, ``global_pool``).
:func:`match_rows` finds the rows a config reproduces by comparing those
settings after expanding the PE method into its knobs, so
``dict(method='mpvg', last_norm_pos=0)`` is the MPVG row, not a variant.
"""
import importlib
import inspect
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mmmpvg.models.pe import resolve_pe_cfg

IMAGENET = 'ImageNet-1k'
CIFAR100 = 'CIFAR-100'
COCO = 'COCO'
ADE20K = 'ADE20K'

CLASSIFICATION = 'Image Classification'
DETECTION = 'Object Detection'  # Mask R-CNN: box AP and mask AP
SEGMENTATION = 'Semantic Segmentation'

# Table (or figure) -> caption and the metrics of its columns, in order.
TABLES = {
    'Table 1': ('Top-1 accuracy on ImageNet-1K', ('Top 1 Accuracy', )),
    'Table 2': ('Top-1 accuracy on CIFAR-100', ('Top 1 Accuracy', )),
    'Table 3': ('ViT-Adapter-Ti Mask R-CNN on COCO 2017 (3x + MS)',
                ('box AP', 'mask AP')),
    'Table 4': ('ViT-Adapter-Ti UperNet on ADE20K', ('mIoU', )),
    'Table 5': ('DeiT-Ti MPVG: which PE enters the Last LN',
                ('Top 1 Accuracy', )),
    'Table 6': ('DeiT-Ti MPVG: structural differences', ('Top 1 Accuracy', )),
    'Fig. 1/5': ('DeiT-Ti: GAP and the layer-wise structure (text of '
                 'Fig. 1 and 5)', ('Top 1 Accuracy', )),
}


@dataclass(frozen=True, eq=False)  # rows are compared by identity
class PaperRow:
    """One published number and the structure that produced it.

    ``table`` is the key of :data:`TABLES` the row is printed in, ``source``
    the exact place in the paper (a table, or a figure's text).

    ``metrics`` is empty where the paper shows a bar but states no number.
    ``switches`` are boolean backbone arguments the row needs (a missing
    argument counts as its default, None as False).
    """
    table: str
    source: str
    model: str
    method: str
    backbone: str
    arch: Optional[str]
    dataset: str
    task: str
    pe_cfg: Tuple[Tuple[str, object], ...]
    global_pool: Optional[str]
    metrics: Dict[str, float]
    params_m: Optional[float] = None
    switches: Tuple[Tuple[str, bool], ...] = ()


def _row(table, model, label, backbone, arch, dataset, task, metrics,
         params_m=None, global_pool=None, switches=(), source=None,
         **pe_cfg):
    """A row labelled ``label`` of ``table``; ``pe_cfg`` defaults to the
    method of that name, ``source`` to ``table``."""
    pe_cfg.setdefault('method', label.lower())
    return PaperRow(table, source or table, model, label, backbone, arch,
                    dataset, task,
                    tuple(sorted(pe_cfg.items())), global_pool, metrics,
                    params_m, tuple(switches))


def _methods(source, model, backbone, arch, dataset, params, top1,
             pools=(None, ) * 4):
    """Default, LaPE, PVG and MPVG rows of Table 1 or 2."""
    return [
        _row(source, model, method, backbone, arch, dataset, CLASSIFICATION,
             {'Top 1 Accuracy': acc}, params_m=p, global_pool=pool)
        for method, p, acc, pool in zip(('Default', 'LaPE', 'PVG', 'MPVG'),
                                        params, top1, pools)
    ]


# DeiT: the class token for Default and LaPE, GAP for PVG and MPVG.
_DEIT_POOLS = ('cls', 'cls', 'avg', 'avg')
_DEIT = 'PEVisionTransformer'
_ADAPTER = 'ViTAdapter'
# ViT-Adapter has no Last LN, so the paper's adapter rows have none either;
# `vit_last_norm=True` (MPVG's Eq. 11 in the adapter) is our extension.
_ADAPTER_SWITCHES = (('vit_last_norm', False), )

PAPER_ROWS: List[PaperRow] = [
    # Table 1: ImageNet-1K, 300 epochs (T2T-ViT-7: 310).
    *_methods('Table 1', 'DeiT-Ti', _DEIT, 'deit-tiny', IMAGENET,
              (5.717, 5.721, 5.721, 5.721), (72.14, 72.94, 73.17, 73.51),
              _DEIT_POOLS),
    *_methods('Table 1', 'DeiT-S', _DEIT, 'deit-small', IMAGENET,
              (22.050, 22.059, 22.058, 22.059), (79.81, 80.39, 80.38, 80.61),
              _DEIT_POOLS),
    *_methods('Table 1', 'DeiT-B', _DEIT, 'deit-base', IMAGENET,
              (86.567, 86.586, 86.583, 86.584), (81.85, 82.15, 82.21, 82.42),
              _DEIT_POOLS),
    *_methods('Table 1', 'Swin-Ti', 'PESwinTransformer', 'tiny', IMAGENET,
              (28.589, 28.599, 28.598, 28.599), (81.37, 81.48, 81.52, 81.64)),
    *_methods('Table 1', 'CeiT-Ti', 'PECeiT', 'ceit-tiny', IMAGENET,
              (6.356, 6.361, 6.361, 6.361), (76.62, 76.89, 77.14, 77.20)),
    *_methods('Table 1', 'T2T-ViT-7', 'PET2TViT', 't2t-vit-7', IMAGENET,
              (4.310, 4.313, 4.312, 4.313), (71.76, 72.01, 71.91, 72.28)),
    # Table 2: CIFAR-100 (ViT-Lite from scratch at 32x32, T2T-ViT-7
    # fine-tuned from its ImageNet-1K weights).
    *_methods('Table 2', 'ViT-Lite', 'PEViTLite', 'vit-lite-7', CIFAR100,
              (3.740, 3.744, 3.742, 3.743), (74.90, 75.52, 76.67, 76.87)),
    *_methods('Table 2', 'T2T-ViT-7', 'PET2TViT', 't2t-vit-7', CIFAR100,
              (4.078, 4.082, 4.081, 4.081), (83.22, 83.41, 83.39, 83.51)),
    # Table 3: ViT-Adapter-Ti over each method's DeiT-Ti, Mask R-CNN 3x+MS.
    *[
        _row('Table 3', 'ViT-Adapter-Ti', method, _ADAPTER, 'deit-tiny', COCO,
             DETECTION, {'box AP': box, 'mask AP': mask},
             switches=_ADAPTER_SWITCHES)
        for method, box, mask in (('Default', 45.9, 41.0),
                                  ('LaPE', 46.2, 41.2), ('PVG', 46.1, 41.2),
                                  ('MPVG', 46.5, 41.4))
    ],
    # Table 4: ViT-Adapter-Ti UperNet, 160k iterations, 512x512.
    *[
        _row('Table 4', 'ViT-Adapter-Ti', method, _ADAPTER, 'deit-tiny',
             ADE20K, SEGMENTATION, {'mIoU': miou},
             switches=_ADAPTER_SWITCHES)
        for method, miou in (('Default', 40.55), ('LaPE', 41.42),
                             ('PVG', 41.07), ('MPVG', 41.69))
    ],
    # Table 5: the PE added in MPVG's Last LN; pos_0 is MPVG itself.
    *[
        _row('Table 5', 'DeiT-Ti', f'MPVG, Last LN pos_{k}', _DEIT,
             'deit-tiny', IMAGENET, CLASSIFICATION, {'Top 1 Accuracy': acc},
             global_pool='avg', method='mpvg', last_norm_pos=k)
        for k, acc in ((11, 73.30), (8, 73.38), (5, 73.39), (0, 73.51))
    ],
    # Table 6: one of MPVG's three structural choices undone at a time.
    _row('Table 6', 'DeiT-Ti', 'MPVG, layer 0 receives PE', _DEIT,
         'deit-tiny', IMAGENET, CLASSIFICATION, {'Top 1 Accuracy': 73.31},
         global_pool='avg', method='mpvg', include_layer0=True),
    _row('Table 6', 'DeiT-Ti', 'MPVG, non-hierarchical', _DEIT, 'deit-tiny',
         IMAGENET, CLASSIFICATION, {'Top 1 Accuracy': 73.48},
         global_pool='avg', method='mpvg', hierarchical=False),
    _row('Table 6', 'DeiT-Ti', 'MPVG, no x+PE', _DEIT, 'deit-tiny', IMAGENET,
         CLASSIFICATION, {'Top 1 Accuracy': 73.28}, global_pool='avg',
         method='mpvg', add_to_input=False),
    _row('Table 6', 'DeiT-Ti', 'MPVG', _DEIT, 'deit-tiny', IMAGENET,
         CLASSIFICATION, {'Top 1 Accuracy': 73.51}, global_pool='avg'),
    # Fig. 1 and 5 (numbers from the text): GAP helps Default, GAP on the
    # layer-wise LaPE hurts (bar only, no number in the text), and pos_0 in
    # the Last LN without the layer-wise structure hurts.
    _row('Fig. 1/5', 'DeiT-Ti', 'Default + GAP', _DEIT, 'deit-tiny',
         IMAGENET, CLASSIFICATION, {'Top 1 Accuracy': 72.40},
         global_pool='avg', source='Fig. 5(a)', method='default'),
    _row('Fig. 1/5', 'DeiT-Ti', 'LaPE + GAP', _DEIT, 'deit-tiny', IMAGENET,
         CLASSIFICATION, {}, global_pool='avg', source='Fig. 1',
         method='lape'),
    _row('Fig. 1/5', 'DeiT-Ti', 'Default + GAP + Last LN pos_0', _DEIT,
         'deit-tiny', IMAGENET, CLASSIFICATION, {'Top 1 Accuracy': 72.14},
         global_pool='avg', source='Fig. 5(b)', method='default',
         last_norm_pos=0),
]

# Data set classes (train_dataloader.dataset.type) -> the paper's data set.
DATASETS = {
    'ImageNet': IMAGENET,
    'CIFAR100': CIFAR100,
    'CocoDataset': COCO,
    'ADE20KDataset': ADE20K,
}

# Each row family's detector/segmentor/classifier (model.type) -> task.
TASKS = {
    'ImageClassifier': CLASSIFICATION,
    'MaskRCNN': DETECTION,
    'EncoderDecoder': SEGMENTATION,
}


def _registered_class(backbone_type):
    """The backbone's class from the mmpretrain registry (our classification
    backbones) or the mmdet one (the adapter); None when neither has it."""
    for package, registry in (('mmmpvg.models', 'mmpretrain.registry'),
                              ('mmmpvg.adapter', 'mmdet.registry')):
        importlib.import_module(package)  # registers the modules
        cls = importlib.import_module(registry).MODELS.get(backbone_type)
        if cls is not None:
            return cls
    return None


def _default_of(cls, name):
    if cls is None:
        return None
    parameter = inspect.signature(cls.__init__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def pe_knobs(pe_cfg, backbone_type=None):
    """``pe_cfg`` expanded into every PE knob, as the backbone resolves it
    (:func:`~mmmpvg.models.pe.resolve_pe_cfg` with the family's
    ``pe_preset_overrides``, e.g. Swin's PVG/MPVG deliver PE to layer 0),
    without the method's name: the knobs are the structure.

    Raises:
        ValueError: for an unknown method or knob.
    """
    overrides = getattr(_registered_class(backbone_type),
                        'pe_preset_overrides', {}) if backbone_type else {}
    knobs = resolve_pe_cfg(pe_cfg, overrides)
    del knobs['method']
    return knobs


def train_dataset(cfg):
    """The training data set's config, out of any wrapper (RepeatDataset,
    ClassBalancedDataset); empty when there is none."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def describe_structure(cfg):
    """What a config trains, in the terms of :class:`PaperRow`.

    Returns:
        dict: ``backbone``, ``arch``, ``dataset``, ``task``, ``pe_cfg``,
        ``global_pool`` (None where a field does not apply or is unknown).
    """
    model = cfg.get('model', {})
    backbone = model.get('backbone', {}) or {}
    backbone_type = backbone.get('type')
    cls = _registered_class(backbone_type) if backbone_type else None
    arch = backbone.get('arch', _default_of(cls, 'arch'))
    pool = backbone.get('global_pool', _default_of(cls, 'global_pool'))
    dataset = train_dataset(cfg)
    dataset_type = dataset.get('type')
    dataset_name = DATASETS.get(dataset_type, dataset_type)
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is not None:  # e.g. generated shapes in COCO format
        dataset_name = f'{dataset_type} with its own {len(classes)} classes'
    return dict(
        backbone=backbone_type,
        arch=arch.lower() if isinstance(arch, str) else arch,
        dataset=dataset_name,
        task=TASKS.get(model.get('type'), model.get('type')),
        pe_cfg=backbone.get('pe_cfg'),
        global_pool=pool,
        switches={name: bool(backbone.get(name, _default_of(cls, name)))
                  for row in PAPER_ROWS for name, _ in row.switches})


def _arch_matches(row, arch, backbone_type):
    """Arch aliases (``deit-t`` / ``deit-tiny``, ``t`` / ``tiny``) resolve
    to the same arch_zoo entry."""
    if arch == row.arch:
        return True
    zoo = getattr(_registered_class(backbone_type), 'arch_zoo', {})
    return (isinstance(arch, str) and arch in zoo and row.arch in zoo
            and zoo[arch] == zoo[row.arch])


def match_rows(cfg):
    """The paper rows ``cfg`` reproduces, and why none when none.

    Returns:
        tuple[list[PaperRow], str]: the rows (one structure may appear in
        several tables, e.g. DeiT-Ti MPVG in Tables 1, 5 and 6) and, when
        there are none, the reason.
    """
    run = describe_structure(cfg)
    candidates = [r for r in PAPER_ROWS if r.backbone == run['backbone']]
    if not candidates:
        return [], f'backbone {run["backbone"]!r} is in no paper table'
    for field in ('dataset', 'task'):
        candidates = [r for r in candidates if getattr(r, field) == run[field]]
        if not candidates:
            return [], (f'no paper row for {run["backbone"]} with '
                        f'{field} {run[field]!r}')
    candidates = [r for r in candidates
                  if _arch_matches(r, run['arch'], run['backbone'])]
    if not candidates:
        return [], f'no paper row for {run["backbone"]} arch {run["arch"]!r}'
    try:
        knobs = pe_knobs(run['pe_cfg'], run['backbone'])
    except ValueError as error:
        return [], str(error)
    rows = [
        r for r in candidates
        if pe_knobs(dict(r.pe_cfg), r.backbone) == knobs and (
            r.global_pool is None or r.global_pool == run['global_pool'])
        and all(run['switches'][name] == value for name, value in r.switches)
    ]
    if not rows:
        switches = ''.join(f', {name}={value}'
                           for name, value in run['switches'].items()
                           if any(name == n for r in candidates
                                  for n, _ in r.switches))
        return [], (f'no paper row for {run["backbone"]} {run["arch"]} with '
                    f'pe_cfg={run["pe_cfg"]}, global_pool='
                    f'{run["global_pool"]!r}{switches}')
    return rows, ''
