"""Box geometry as small batched functions. Boxes are ``[..., 4]`` xyxy in pixels.

``plus_one=True`` uses the convention of the HICO-DET MATLAB evaluation: a box spans
``x2 - x1 + 1`` pixels, so two boxes touching at one pixel column still overlap.
Every function works on torch tensors; ``box_area``, ``box_iou``, ``box_iou_aligned`` and
``invalid_box_mask`` also accept numpy arrays, and then never import torch (the evaluators run
without it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


def _lib(x):
    if isinstance(x, np.ndarray):
        return np
    import torch

    return torch


def box_area(boxes, plus_one: bool = False):
    """``[N, 4]`` -> ``[N]`` areas (zero for degenerate boxes)."""
    lib, e = _lib(boxes), (1.0 if plus_one else 0.0)
    w = lib.clip(boxes[..., 2] - boxes[..., 0] + e, 0, None)
    h = lib.clip(boxes[..., 3] - boxes[..., 1] + e, 0, None)
    return w * h


def box_iou(a, b, plus_one: bool = False):
    """Pairwise IoU: ``a [N, 4]``, ``b [M, 4]`` -> ``[N, M]``."""
    lib, e = _lib(a), (1.0 if plus_one else 0.0)
    lt_x = lib.maximum(a[:, None, 0], b[None, :, 0])
    lt_y = lib.maximum(a[:, None, 1], b[None, :, 1])
    rb_x = lib.minimum(a[:, None, 2], b[None, :, 2])
    rb_y = lib.minimum(a[:, None, 3], b[None, :, 3])
    inter = lib.clip(rb_x - lt_x + e, 0, None) * lib.clip(rb_y - lt_y + e, 0, None)
    union = box_area(a, plus_one)[:, None] + box_area(b, plus_one)[None, :] - inter
    return inter / lib.clip(union, 1e-12, None)


def box_iou_aligned(a, b, plus_one: bool = False):
    """Element-wise IoU of aligned boxes: ``a [N, 4]``, ``b [N, 4]`` -> ``[N]``."""
    lib, e = _lib(a), (1.0 if plus_one else 0.0)
    w = lib.clip(lib.minimum(a[..., 2], b[..., 2]) - lib.maximum(a[..., 0], b[..., 0]) + e, 0, None)
    h = lib.clip(lib.minimum(a[..., 3], b[..., 3]) - lib.maximum(a[..., 1], b[..., 1]) + e, 0, None)
    inter = w * h
    union = box_area(a, plus_one) + box_area(b, plus_one) - inter
    return inter / lib.clip(union, 1e-12, None)


def union_box(a: Tensor, b: Tensor) -> Tensor:
    """Smallest box enclosing each aligned pair: ``[N, 4]``, ``[N, 4]`` -> ``[N, 4]``."""
    import torch

    return torch.cat([torch.minimum(a[..., :2], b[..., :2]), torch.maximum(a[..., 2:], b[..., 2:])], dim=-1)


def intersection_box(a: Tensor, b: Tensor) -> Tensor:
    """Intersection of aligned pairs (may be empty: x2 < x1): ``[N, 4]``."""
    import torch

    return torch.cat([torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])], dim=-1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``[N, 4]`` boxes to an image of ``size = (width, height)``."""
    w, h = size
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, w)
    out[..., 1::2] = out[..., 1::2].clamp(0, h)
    return out


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019): ``[N, 4]``, ``[M, 4]`` -> ``[N, M]`` in [-1, 1]."""
    import torch

    iou = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    inter_union = box_area(a)[:, None] + box_area(b)[None, :]
    # union = areas - inter = areas - iou * union  =>  union = areas / (1 + iou)
    union = inter_union / (1 + iou)
    return iou - (hull - union) / hull.clamp(min=1e-12)


def normalise_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixels -> [0, 1] coordinates of an image of ``size = (width, height)``."""
    w, h = size
    return boxes / boxes.new_tensor([w, h, w, h])


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    import torch

    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def invalid_box_mask(boxes, size: tuple[int, int] | None = None):
    """``[N]`` True where a box has a non-finite value, x2 < x1 or y2 < y1, or leaves the image."""
    lib = _lib(boxes)
    bad = ~lib.isfinite(boxes).all(-1)
    bad = bad | (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if size is not None:
        w, h = size
        bad = bad | (boxes[..., 0] < 0) | (boxes[..., 1] < 0) | (boxes[..., 2] > w) | (boxes[..., 3] > h)
    return bad


def merge_instances(boxes: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Class-wise NMS over annotated boxes, all scores equal (DA-HOI ``merge_gt``): the duplicate rows
    of one physical instance that UPT-format HICO-DET files hold become one. The training targets,
    the trainer's ground-truth-box evaluation and the ``ground-truth`` detector all use it.

    Rows are visited in order; a row not yet merged is kept and absorbs every later row of its label
    whose IoU with it exceeds ``iou`` (torchvision ``batched_nms``: "IoU > threshold").

    Args:
        boxes: ``[B, 4]`` xyxy pixels. labels: ``[B]`` object ids.
    Returns:
        ``[B]`` int64: for each row the kept row it was merged into (itself when kept).
    """
    labels = np.asarray(labels).reshape(-1)
    b = int(labels.shape[0])
    rep = np.arange(b, dtype=np.int64)
    if b < 2:
        return rep
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ious = box_iou(boxes, boxes)
    same = labels[:, None] == labels[None, :]
    done = np.zeros(b, dtype=bool)
    for i in range(b):
        if done[i]:
            continue
        absorbed = same[i] & (ious[i] > iou) & ~done
        absorbed[:i + 1] = False
        rep[absorbed] = i
        done[absorbed] = True
        done[i] = True
    return rep
