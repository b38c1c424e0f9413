"""Drawings of small images that stay legible.

The OpenMMLab visualizers draw labels, scores and outlines at fixed pixel
sizes, so on a 64-pixel image a label is cut off at the border and the
outlines cover the objects. :func:`enlarge` scales an image up by an integer
factor (nearest neighbour, so pixels stay visible as such) together with
the boxes, masks and label maps of its data sample, before drawing.
"""
import math

import numpy as np
import torch
from mmengine.structures import BaseDataElement, InstanceData, PixelData

__all__ = ['DEFAULT_MIN_SIZE', 'add_drawing_args', 'upscale_factor', 'enlarge']

# The shorter side small images are enlarged to: a visualizer's 13-pixel
# label fits beside an object of a quarter of the image.
DEFAULT_MIN_SIZE = 256


def add_drawing_args(parser):
    """``--min-size`` and ``--score-thr`` of the drawing tools."""
    parser.add_argument(
        '--min-size', type=int, default=DEFAULT_MIN_SIZE,
        help='enlarge images whose shorter side is below this by the '
        'smallest integer factor that reaches it (default: %(default)s; '
        '0: never)')
    parser.add_argument(
        '--score-thr', type=float, default=0.3,
        help='detections below this score are not drawn (mmdet only)')
    return parser


def upscale_factor(height: int, width: int, min_size: int) -> int:
    """The smallest integer factor that brings the shorter side to
    ``min_size`` (1 if it is there already, or ``min_size`` is 0)."""
    if min_size <= 0:
        return 1
    return max(1, math.ceil(min_size / min(height, width)))


def _nearest(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., factor H, factor W), dtype kept."""
    return tensor.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def _enlarged(field, factor: int):
    if isinstance(field, PixelData):
        return PixelData(**{key: _nearest(value, factor)
                            for key, value in field.items()})
    enlarged = field.clone()
    if 'bboxes' in field:
        boxes = field.bboxes
        enlarged.bboxes = boxes * factor if isinstance(boxes, torch.Tensor) \
            else boxes.clone().rescale_((factor, factor))
    if 'masks' in field:
        masks = field.masks
        # mmdet's predictions are tensors, its annotations Bitmap- or
        # PolygonMasks (with their own rescale).
        enlarged.masks = _nearest(masks, factor) if isinstance(
            masks, torch.Tensor) else masks.rescale(factor)
    return enlarged


def enlarge(image: np.ndarray, sample: BaseDataElement, factor: int):
    """``image`` (H, W, C) and a copy of ``sample`` whose instances (boxes,
    masks) and pixel maps are ``factor`` times larger."""
    if factor == 1:
        return image, sample
    sample = sample.clone()
    for key in sample.keys():
        field = sample.get(key)
        if isinstance(field, (InstanceData, PixelData)):
            sample.set_field(_enlarged(field, factor), key)
    return image.repeat(factor, axis=0).repeat(factor, axis=1), sample
