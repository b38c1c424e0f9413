"""Coloured squares, triangles and discs on noise, written as a COCO
instance-segmentation set (JSON with polygons and RLE masks + JPEGs) or an
ADE20K-style semantic set (JPEGs + PNG label maps, 0 = unlabelled)."""
import json
import os
import os.path as osp
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils

SHAPE_CLASSES = ('square', 'triangle', 'disc')
_COLOURS = ((220, 60, 60), (60, 200, 60), (60, 90, 230))  # BGR per class
DEFAULT_SHAPE_SIZE = (1 / 6, 1 / 3)  # of the shorter image side


def _check_shape_size(shape_size: Tuple[float, float]) -> None:
    low, high = shape_size
    if not 0 < low < high <= 1:
        raise ValueError(f'shape_size {tuple(shape_size)} must be fractions '
                         '0 < min < max <= 1 of the shorter image side.')


def _draw_image(rng: np.random.Generator, height: int, width: int,
                max_shapes: int, shape_size: Tuple[float, float]
                ) -> Tuple[np.ndarray, List[Tuple]]:
    """An image and its instances as (class_index, binary mask, polygon or
    None); discs have no polygon (they are stored as RLE). Shape sides are
    drawn from ``shape_size`` (fractions of the shorter side)."""
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    instances = []
    occupied = np.zeros((height, width), bool)
    for _ in range(max_shapes * 4):
        if len(instances) == max_shapes:
            break
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        side = min(height, width)
        size = int(rng.integers(int(side * shape_size[0]),
                                int(side * shape_size[1])))
        x0 = int(rng.integers(0, width - size))
        y0 = int(rng.integers(0, height - size))
        mask = np.zeros((height, width), np.uint8)
        polygon = None
        if cls == 0:
            polygon = [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size),
                       (x0, y0 + size)]
        elif cls == 1:
            polygon = [(x0 + size // 2, y0), (x0 + size, y0 + size),
                       (x0, y0 + size)]
        if polygon is not None:
            cv2.fillPoly(mask, [np.array(polygon, np.int32)], 1)
        else:
            cv2.circle(mask, (x0 + size // 2, y0 + size // 2), size // 2, 1,
                       -1)
        mask = mask.astype(bool)
        if (mask & occupied).any():
            continue
        occupied |= mask
        img[mask] = _COLOURS[cls]
        instances.append((cls, mask, polygon))
    return img, instances


def make_coco_shapes(root: str, splits=(('train', 8), ('val', 4)),
                     size: Tuple[int, int] = (128, 128), max_shapes: int = 3,
                     shape_size: Tuple[float, float] = DEFAULT_SHAPE_SIZE,
                     seed: int = 0, categories: Sequence[dict] = None,
                     ann_file_prefix: str = '') -> dict:
    """Write ``root/{split}/*.jpg`` and
    ``root/annotations/{ann_file_prefix}{split}.json``.

    Returns ``{split: ann_file}``. Squares and triangles are polygons,
    discs compressed RLE, as in COCO.

    Args:
        categories: The JSON's categories (``id``, ``name``); shape ``k`` is
            annotated as the ``k``-th. Default: one per shape class.
        ann_file_prefix: e.g. ``'instances_'`` for COCO's file names.
    """
    _check_shape_size(shape_size)
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    if categories is None:
        categories = [dict(id=i + 1, name=n)
                      for i, n in enumerate(SHAPE_CLASSES)]
    if len(categories) < len(SHAPE_CLASSES):
        raise ValueError(f'{len(categories)} categories for '
                         f'{len(SHAPE_CLASSES)} shape classes')
    ann_files = {}
    ann_id = 1
    for split, num_images in splits:
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, num_images + 1):
            img, instances = _draw_image(rng, *size, max_shapes, shape_size)
            file_name = f'{image_id:06d}.jpg'
            cv2.imwrite(osp.join(root, split, file_name), img)
            images.append(dict(id=image_id, file_name=file_name,
                               height=size[0], width=size[1]))
            for cls, mask, polygon in instances:
                rle = mask_utils.encode(
                    np.asfortranarray(mask.astype(np.uint8)))
                if polygon is not None:
                    segmentation = [[float(v) for p in polygon for v in p]]
                else:
                    segmentation = dict(size=rle['size'],
                                        counts=rle['counts'].decode())
                x, y, w, h = mask_utils.toBbox(rle).tolist()
                annotations.append(dict(
                    id=ann_id, image_id=image_id,
                    category_id=categories[cls]['id'],
                    segmentation=segmentation,
                    area=float(mask_utils.area(rle)), bbox=[x, y, w, h],
                    iscrowd=0))
                ann_id += 1
        ann_file = osp.join(root, 'annotations',
                            f'{ann_file_prefix}{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(info=dict(description='mmmpvg test shapes'),
                           licenses=[], images=images,
                           annotations=annotations, categories=categories),
                      f)
        ann_files[split] = ann_file
    return ann_files


def make_ade20k_shapes(root: str, splits=(('training', 8),
                                          ('validation', 4)),
                       size: Tuple[int, int] = (96, 128), max_shapes: int = 3,
                       shape_size: Tuple[float, float] = DEFAULT_SHAPE_SIZE,
                       seed: int = 0) -> None:
    """Write ``root/images/{split}/*.jpg`` and
    ``root/annotations/{split}/*.png``: 1 for the background, k + 2 for
    shape k, and 0 (ADE20K's "other", ignored with ``reduce_zero_label``)
    on a one-pixel image border."""
    _check_shape_size(shape_size)
    rng = np.random.default_rng(seed)
    for split, num_images in splits:
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for index in range(num_images):
            img, instances = _draw_image(rng, *size, max_shapes, shape_size)
            label = np.ones(size, np.uint8)
            for cls, mask, _ in instances:
                label[mask] = cls + 2
            label[[0, -1], :] = 0
            label[:, [0, -1]] = 0
            name = f'ADE_{split}_{index:08d}'
            cv2.imwrite(osp.join(root, 'images', split, name + '.jpg'), img)
            cv2.imwrite(osp.join(root, 'annotations', split, name + '.png'),
                        label)
