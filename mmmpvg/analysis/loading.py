"""Model, images and command-line arguments shared by tools/analysis/.

A model comes from an OpenMMLab config plus a checkpoint, or ``none`` for
the config's own initialisation (random, unless an ``init_cfg`` of the
config names a Pretrained checkpoint; drop it with ``--cfg-options
model.backbone.init_cfg=None``). Images come either from a folder (each
one resized to cover ``--img-size`` and centre-cropped to it) or from the
config's ``val_dataloader`` / ``test_dataloader`` with its own pipeline. The
model's own ``data_preprocessor`` normalises them, and ``extract_feat`` runs
them, so the analysis sees exactly what training and testing see.
"""
import argparse
import logging
import os
import os.path as osp
import re
from typing import Iterator, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import CheckpointLoader, Runner

from .capture import ForwardRecord, PECapture, find_pe_backbone
from .statistics import PESummary, summarize

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')
NO_CHECKPOINT = 'none'


def add_data_args(parser: argparse.ArgumentParser, num_images: int):
    """Arguments that choose the images and where results go."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--images', metavar='DIR',
        help='folder of images (resized to cover --img-size, centre-cropped)'
        '; default: the data set of the config, see --split')
    source.add_argument(
        '--split', choices=('val', 'test'), default='val',
        help="use the config's val_dataloader or test_dataloader "
        '(default: %(default)s)')
    parser.add_argument(
        '--num-images', type=int, default=num_images,
        help='images to use, the first ones in order (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument(
        '--img-size', type=int, nargs='+', metavar='SIZE',
        help='size (h [w]) for --images; default: the backbone img_size')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--seed', type=int, default=0,
        help='torch seed of the random initialisation (checkpoint none)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help='override config keys, e.g. model.backbone.pe_cfg.method=pvg')
    parser.add_argument(
        '--out-dir',
        help='folder for the PNG figures and the JSON (default: '
        'work_dirs/<config name>/<tool name>, beside what tools/train.py '
        'writes)')


def resolve_out_dir(args, tool: str, config: Optional[str] = None):
    """``args.out_dir`` or, without ``--out-dir``, the tool's folder in the
    config's work dir (``work_dirs/<tool>`` without a config)."""
    if args.out_dir is None:
        parts = ['work_dirs', tool]
        if config is not None:
            parts.insert(1, osp.splitext(osp.basename(config))[0])
        args.out_dir = osp.join(*parts)
    return args


def add_model_args(parser: argparse.ArgumentParser):
    parser.add_argument('config', help='OpenMMLab config file')
    parser.add_argument(
        'checkpoint',
        help=f"checkpoint file, or '{NO_CHECKPOINT}' for the config's own "
        'init (random unless its init_cfg names a Pretrained checkpoint)')


def load_model(config: str,
               checkpoint: Optional[str],
               cfg_options: Optional[dict] = None,
               device: str = 'cpu',
               seed: int = 0,
               whole_model: bool = False) -> Tuple[nn.Module, Config]:
    """Build the config's model in eval mode and load ``checkpoint``.

    ``checkpoint`` None or ``'none'``: the model's own ``init_weights``
    (which loads any Pretrained ``init_cfg``) under
    ``torch.manual_seed(seed)``. A checkpoint must hold every weight
    of the PE backbone; weights elsewhere (e.g. a head) may be missing.
    With ``whole_model`` (tools that run the whole model, any backbone) it
    must hold every weight of the model instead.
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    if checkpoint is None or checkpoint.lower() == NO_CHECKPOINT:
        # init_weights logs every parameter's init at INFO: keep it quiet.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    else:
        _load_weights(model, checkpoint, whole_model)
    model.to(device)
    model.eval()
    return model, cfg


def _load_weights(model: nn.Module, checkpoint: str, whole_model: bool):
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'Checkpoint {checkpoint!r} not found (use {NO_CHECKPOINT!r} '
            "for the config's own init).")
    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state_dict = loaded.get('state_dict', loaded)
    state_dict = {re.sub(r'^module\.', '', k): v
                  for k, v in state_dict.items()}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except (RuntimeError, ValueError) as error:  # shapes that differ
        raise ValueError(
            f'{checkpoint} does not fit the model of the config: {error}. '
            'Check that the config has the PE method and arch it was '
            'trained with.') from error
    if whole_model:
        prefix, part = '', 'model'
    else:
        backbone = find_pe_backbone(model)
        prefix = next(name for name, module in model.named_modules()
                      if module is backbone)
        prefix, part = (prefix + '.' if prefix else ''), 'backbone'
    wrong = [k for k in result.missing_keys + result.unexpected_keys
             if k.startswith(prefix)]
    if wrong:
        raise ValueError(
            f'{checkpoint} does not fit the {part} of the config (missing '
            f'or unexpected: {wrong[:6]}{" ..." if len(wrong) > 6 else ""}). '
            'Check that the config has the PE method and arch it was '
            'trained with.')


def _images_in(folder: str) -> List[str]:
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Image folder {folder!r} does not exist.')
    paths = sorted(
        osp.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) in '
                         f'{folder!r}.')
    return paths


def _cover_and_crop(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize so the image covers ``size`` (h, w), then centre-crop."""
    h, w = img.shape[:2]
    scale = max(size[0] / h, size[1] / w)
    new_h = max(size[0], round(h * scale))
    new_w = max(size[1], round(w * scale))
    img = mmcv.imresize(img, (new_w, new_h), interpolation='bicubic')
    top, left = (new_h - size[0]) // 2, (new_w - size[1]) // 2
    return img[top:top + size[0], left:left + size[1]]


def _folder_batches(folder: str, size: Tuple[int, int],
                    num_images: int, batch_size: int) -> Iterator[dict]:
    paths = _images_in(folder)[:num_images]
    for start in range(0, len(paths), batch_size):
        # BGR uint8 CHW, as OpenMMLab's LoadImageFromFile + PackInputs give.
        yield dict(inputs=[
            torch.from_numpy(np.ascontiguousarray(
                _cover_and_crop(mmcv.imread(p, 'color'), size).transpose(
                    2, 0, 1)))
            for p in paths[start:start + batch_size]
        ])


def _dataset_batches(cfg: Config, split: str, num_images: int,
                     batch_size: int) -> Iterator[dict]:
    key = f'{split}_dataloader'
    if cfg.get(key) is None:
        raise ValueError(f'The config has no {key}; pass --images DIR.')
    dataloader_cfg = cfg[key].copy()
    dataloader_cfg['batch_size'] = batch_size
    left = num_images
    for batch in Runner.build_dataloader(dataloader_cfg):
        yield dict(inputs=batch['inputs'][:left])
        left -= len(batch['inputs'])
        if left <= 0:
            return


def iter_batches(model: nn.Module,
                 cfg: Config,
                 images: Optional[str] = None,
                 split: str = 'val',
                 num_images: int = 32,
                 batch_size: int = 32,
                 img_size: Optional[Sequence[int]] = None
                 ) -> Iterator[Tuple[torch.Tensor, List[torch.Tensor]]]:
    """Yield ``(model inputs, raw uint8 CHW images)`` per batch."""
    if num_images < 1 or batch_size < 1:
        raise ValueError('--num-images and --batch-size must be >= 1.')
    if images is not None:
        if img_size is None:
            size = find_pe_backbone(model).img_size
        else:
            if len(img_size) not in (1, 2):
                raise ValueError('--img-size takes one or two numbers.')
            size = (img_size[0], img_size[-1])
        batches = _folder_batches(images, size, num_images, batch_size)
    else:
        batches = _dataset_batches(cfg, split, num_images, batch_size)
    for batch in batches:
        data = model.data_preprocessor(batch, False)
        yield data['inputs'], batch['inputs']


def capture_records(
    model: nn.Module,
    backbone: nn.Module,
    batches: Iterator[Tuple[torch.Tensor, List[torch.Tensor]]]
) -> Iterator[Tuple[ForwardRecord, List[torch.Tensor]]]:
    """Run ``model.extract_feat`` on each batch; yield (record, raw images)."""
    with PECapture(backbone) as capture:
        for inputs, raw in batches:
            with torch.no_grad():
                model.extract_feat(inputs)
            yield capture.pop(), raw


def rgb(image: torch.Tensor) -> np.ndarray:
    """A raw OpenMMLab image (BGR uint8 CHW) as RGB HWC for display."""
    image = image.cpu().numpy().transpose(1, 2, 0)
    return image[..., ::-1] if image.shape[-1] == 3 else image[..., 0]


def summarize_model(args: argparse.Namespace, config: str,
                    checkpoint: Optional[str]) -> PESummary:
    """Load a model as the command line says and average its passes."""
    model, cfg = load_model(config, checkpoint, args.cfg_options, args.device,
                            args.seed)
    backbone = find_pe_backbone(model)
    batches = iter_batches(model, cfg, args.images, args.split,
                           args.num_images, args.batch_size, args.img_size)
    return summarize(backbone, (
        record for record, _ in capture_records(model, backbone, batches)))
