"""``--smoke``: run any config a few iterations on generated data.

    python tools/make_smoke_data.py                 # writes data/smoke/
    python tools/train.py CONFIG --smoke            # 2 iterations + val
    python tools/test.py CONFIG CHECKPOINT --smoke  # one test batch

The config keeps its recipe (model, pipelines, optimizer, schedule,
hooks); what changes is the amount of work and where the data comes from:

- every path under ``data/`` in the data loaders and evaluators reads from
  the generated stand-in (``--smoke-data``, default ``data/smoke``), whose
  layouts mirror ``data/`` (:mod:`mmmpvg.datasets.smoke`);
- 2 training iterations (``--smoke-iters``) on one batch of 2 images
  (an epoch-based config runs that many epochs of one batch), then one
  validation and one test batch of 2 images; no loader workers (nor the
  serialised data lists they share), a log line per iteration, one
  checkpoint at the end (weights only, no best-checkpoint copy), in
  ``work_dirs/smoke/<config>`` unless ``--work-dir`` is given;
- detection and segmentation configs (mmdet, mmseg) have every image size
  of their pipelines and models scaled by one factor so that the longest
  side is at most 128 pixels (Mask R-CNN's 1333x800 becomes 128x77,
  UperNet's 512x512 crops 32x32), to keep a CPU iteration to seconds.
  Classification configs keep their image size;
- pre-trained checkpoints named in ``init_cfg`` that do not exist are not
  loaded (the weights keep their initialisation);
- without CUDA, fp16 recipes (``AmpOptimWrapper``) train in fp32;
- CIFAR-100 reads the generated files without checking them against the
  real release's MD5 sums (``GeneratedCIFAR100``).

``--cfg-options`` still apply on top, e.g. ``train_cfg.max_iters=1``.
"""
import os.path as osp

import torch

import mmmpvg.datasets  # noqa: F401  (registers GeneratedCIFAR100)

__all__ = ['SMOKE_BATCH_SIZE', 'SMOKE_TRAIN_ITERS', 'SMOKE_MAX_SIDE',
           'add_smoke_args', 'apply_smoke', 'apply_smoke_args']

SMOKE_BATCH_SIZE = 2
SMOKE_TRAIN_ITERS = 2
SMOKE_MAX_SIDE = 128
DEFAULT_SMOKE_DATA = osp.join('data', 'smoke')
# What stands in for the data sets that check the real release's files.
_GENERATED_TWINS = {'CIFAR100': 'GeneratedCIFAR100'}
# Image sizes in pipelines and models, in pixels (mmdet, mmseg).
_SIZE_KEYS = ('scale', 'scales', 'img_scale', 'crop_size')
_SCALED_SIZE_DOWNSTREAM_SCOPES = ('mmdet', 'mmseg')


def add_smoke_args(parser):
    """``--smoke`` and ``--smoke-data`` for tools/train.py and test.py."""
    parser.add_argument(
        '--smoke',
        action='store_true',
        help='a few iterations on generated data in the real layouts '
        f'(write it first: python tools/make_smoke_data.py); '
        f'{SMOKE_TRAIN_ITERS} training iterations and one validation/test '
        f'batch of {SMOKE_BATCH_SIZE} images at the config\'s own recipe. '
        f'Detection and segmentation configs are scaled down to images of '
        f'at most {SMOKE_MAX_SIDE} px to keep a CPU iteration to seconds; '
        'see mmmpvg/engine/smoke.py for every change')
    parser.add_argument(
        '--smoke-iters',
        type=int,
        default=SMOKE_TRAIN_ITERS,
        metavar='N',
        help=f'training iterations of a --smoke run (default: '
        f'{SMOKE_TRAIN_ITERS})')
    parser.add_argument(
        '--smoke-data',
        default=DEFAULT_SMOKE_DATA,
        metavar='DIR',
        help='the generated stand-in for data/ that --smoke reads '
        f'(default: {DEFAULT_SMOKE_DATA})')
    return parser


def apply_smoke_args(cfg, args):
    """:func:`apply_smoke` if ``--smoke`` was given; call it before
    ``--cfg-options`` are merged so that they apply on top."""
    if args.smoke:
        apply_smoke(cfg, args.smoke_data,
                    osp.splitext(osp.basename(args.config))[0],
                    args.smoke_iters)
    return cfg


def _walk(node):
    """Every dict inside ``node`` (dicts, lists, tuples), ``node`` first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


def _base_datasets(dataset):
    """The data sets that read files, inside dataset wrappers."""
    inner = dataset.get('dataset') or dataset.get('datasets')
    if inner is None:
        return [dataset]
    inner = inner if isinstance(inner, (list, tuple)) else [inner]
    return [leaf for item in inner for leaf in _base_datasets(item)]


def _under_data(path):
    """``path``'s parts after a leading ``data/``, or None."""
    parts = osp.normpath(path).split(osp.sep)
    return parts[1:] if parts[0] == 'data' else None


def _redirect_data(cfg, data_dir):
    """Point data roots and annotation files under ``data/`` at
    ``data_dir`` and check the layout is there."""
    seen = set()
    for section in [key for key in cfg
                    if key.endswith(('_dataloader', '_evaluator'))]:
        for node in _walk(cfg[section]):
            if id(node) in seen:
                continue
            seen.add(id(node))
            root = node.get('data_root')
            if isinstance(root, str) and root:
                rest = _under_data(root)
                if rest is None:
                    raise ValueError(
                        f'--smoke: {section} reads {root!r}, not a path '
                        'under data/; the generated data stands in for '
                        'data/ only. Use the data_root of the config as '
                        'shipped, or drop --smoke.')
                node['data_root'] = osp.join(data_dir, *rest)
                if not osp.isdir(node['data_root']):
                    raise FileNotFoundError(
                        f'--smoke: {node["data_root"]} does not exist: '
                        'write the generated data first with python '
                        f'tools/make_smoke_data.py {data_dir}')
            ann_file = node.get('ann_file')
            if not root and isinstance(ann_file, str) and ann_file and \
                    _under_data(ann_file) is not None:
                node['ann_file'] = osp.join(data_dir, *_under_data(ann_file))


def _shrink_loader(loader, batch_size):
    """One batch of ``batch_size`` images, read in this process."""
    loader.update(batch_size=batch_size, num_workers=0,
                  persistent_workers=False)
    for dataset in _base_datasets(loader['dataset']):
        dataset['type'] = _GENERATED_TWINS.get(dataset.get('type'),
                                               dataset.get('type'))
        dataset['indices'] = batch_size
        # MMEngine serialises data lists for worker processes and then runs
        # gc.collect(), which takes longer than a smoke iteration.
        dataset['serialize_data'] = False


def _image_sizes(node):
    """(dict, key) of every pixel size in a pipeline or model config."""
    for item in _walk(node):
        if str(item.get('crop_type', '')).startswith('relative'):
            continue  # fractions of the image, not pixels
        for key in _SIZE_KEYS:
            if key in item:
                yield item, key


def _scaled(value, factor):
    if isinstance(value, (list, tuple)):
        return type(value)(_scaled(v, factor) for v in value)
    return max(1, round(value * factor))


def _largest(value):
    if isinstance(value, (list, tuple)):
        return max(_largest(v) for v in value)
    return value


def _cap_image_size(cfg):
    """Scale a detection or segmentation config's image sizes so that the
    longest side is at most :data:`SMOKE_MAX_SIDE`; returns the factor."""
    pipelines = [cfg[key].get('dataset') for key in cfg
                 if key.endswith('_dataloader') and cfg[key]]
    sizes = list(_image_sizes(pipelines))
    model = cfg.get('model', {})
    preprocessor = model.get('data_preprocessor') or {}
    if preprocessor.get('size'):
        sizes.append((preprocessor, 'size'))
    test_cfg = model.get('test_cfg') or {}
    sizes += [(test_cfg, key) for key in ('crop_size', 'stride')
              if test_cfg.get(key)]
    largest = max((_largest(node[key]) for node, key in sizes), default=0)
    if largest <= SMOKE_MAX_SIDE:
        return 1.0
    factor = SMOKE_MAX_SIDE / largest
    for node, key in sizes:
        node[key] = _scaled(node[key], factor)
    return factor


def _drop_missing_pretrained(model):
    """Remove ``Pretrained`` inits whose local checkpoint does not exist."""
    for node in _walk(model):
        init = node.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        kept = [item for item in inits if not (
            isinstance(item, dict) and item.get('type') == 'Pretrained'
            and '://' not in str(item.get('checkpoint', ''))
            and not osp.isfile(str(item.get('checkpoint'))))]
        if len(kept) < len(inits):
            node['init_cfg'] = kept if isinstance(init, (list, tuple)) \
                else None


def _shorten_schedule(cfg, train_iters):
    """``train_iters`` iterations: as many epochs of one batch, or as many
    iterations; validation and a checkpoint at the end."""
    train_cfg = cfg.get('train_cfg') or {}
    by_epoch = train_cfg.get('by_epoch', 'max_epochs' in train_cfg) or \
        train_cfg.get('type') == 'EpochBasedTrainLoop'
    length = 'max_epochs' if by_epoch else 'max_iters'
    train_cfg.update({length: train_iters, 'val_interval': train_iters})
    cfg.train_cfg = train_cfg
    hooks = cfg.setdefault('default_hooks', {})
    if hooks.get('checkpoint'):
        hooks['checkpoint'].update(
            interval=train_iters, by_epoch=by_epoch, max_keep_ckpts=1,
            save_best=None, save_optimizer=False)
    if hooks.get('logger'):
        hooks['logger']['interval'] = 1


def _train_on_this_device(cfg):
    """fp16 loss scaling (AmpOptimWrapper) needs CUDA; fp32 without it."""
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        wrapper['type'] = 'OptimWrapper'
        for key in ('loss_scale', 'dtype'):
            wrapper.pop(key, None)


def apply_smoke(cfg, data_dir=DEFAULT_SMOKE_DATA, name=None,
                train_iters=SMOKE_TRAIN_ITERS):
    """Change ``cfg`` in place for a smoke run (see the module docstring).

    Args:
        data_dir (str): The generated stand-in for ``data/``.
        name (str, optional): The config's name; the default work dir is
            ``work_dirs/smoke/<name>``.
        train_iters (int): Training iterations.

    Returns:
        float: The factor applied to image sizes (1.0 when unchanged).
    """
    if train_iters < 1:
        raise ValueError(f'--smoke-iters must be >= 1, got {train_iters}')
    _redirect_data(cfg, data_dir)
    for split in ('train', 'val', 'test'):
        if cfg.get(f'{split}_dataloader'):
            _shrink_loader(cfg[f'{split}_dataloader'], SMOKE_BATCH_SIZE)
    factor = 1.0
    if cfg.get('default_scope') in _SCALED_SIZE_DOWNSTREAM_SCOPES:
        factor = _cap_image_size(cfg)
    _drop_missing_pretrained(cfg.get('model', {}))
    _shorten_schedule(cfg, train_iters)
    _train_on_this_device(cfg)
    if name is not None and cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', 'smoke', name)
    return factor
