"""Training augmentation as DA-HOI's ``qwen_augmentation`` (``qwenvl/data/data_da_hoi.py``), boxes kept valid.

In DA-HOI's order, each switch of :class:`~hoi_mllm.finetune.config.AugmentConfig`:

1. ``flip``: horizontal flip with probability 0.5 (``x1' = W - x2``, ``x2' = W - x1``);
2. ``color_jitter``: brightness, contrast and saturation factors uniform in ``[1 - j, 1 + j]``
   (DA-HOI: ``ColorJitter(.4, .4, .4)``, no hue);
3. ``scales`` / ``crop``: with probability 0.5 the shorter side is resized to a random one of
   ``scales`` (the longer side at most 1333); otherwise (``crop`` on) the shorter side goes to 400,
   500 or 600, a random crop of 384..600 pixels a side is taken, and the multi-scale resize follows.

Deviation: the crop always contains every annotated box (its window is drawn among those that
do), so no annotated pair is cut or lost; DA-HOI's ``RandomSizeCrop`` may cut boxes and then drops
the pairs whose boxes vanish. Detector boxes are clipped to the window and dropped when less than
a pixel wide or high. Everything is drawn from the generator the caller passes, seeded by
``(train.seed, batch index, image index)``, so a resumed run sees the same augmentation.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from hoi_mllm.data.sample import HOISample
from hoi_mllm.records import Detections

MAX_SIZE = 1333  # DA-HOI: RandomResize(scales, max_size=1333)
PRE_CROP_SCALES = (400, 500, 600)  # DA-HOI: RandomResize([400, 500, 600]) before the crop
CROP_RANGE = (384, 600)  # DA-HOI: RandomSizeCrop(384, 600)


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """``[N, 4]`` xyxy boxes of an image ``width`` wide, mirrored left-right."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def resize_shorter(size: tuple[int, int], shorter: int, max_size: int | None = MAX_SIZE) -> tuple[int, int]:
    """``(width, height)`` with the shorter side ``shorter`` (the longer at most ``max_size``), aspect kept."""
    w, h = size
    short, long = min(w, h), max(w, h)
    new_short, new_long = shorter, max(1, int(round(shorter * long / short)))
    if max_size is not None and new_long > max_size:
        new_short, new_long = max(1, int(round(max_size * short / long))), max_size
    return (new_short, new_long) if w <= h else (new_long, new_short)


def crop_window(size: tuple[int, int], keep: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random ``(x0, y0, x1, y1)`` window, sides in :data:`CROP_RANGE` (at most the image), containing
    every box of ``keep [N, 4]`` (the window grows where they need more room)."""
    out = []
    for axis, full in enumerate(size):
        lo, hi = (keep[:, axis].min(), keep[:, axis + 2].max()) if len(keep) else (float(full), 0.0)
        need = int(np.ceil(max(hi - lo, 0.0)))
        side = int(rng.integers(min(CROP_RANGE[0], full), min(CROP_RANGE[1], full) + 1))
        side = min(max(side, need), full)
        first = max(0, int(np.ceil(hi)) - side) if len(keep) else 0
        last = min(int(np.floor(lo)), full - side) if len(keep) else full - side
        out.append(int(rng.integers(first, max(first, last) + 1)))
        out.append(side)
    x0, w, y0, h = out
    return x0, y0, x0 + w, y0 + h


def _affine(boxes: np.ndarray, offset: tuple[float, float], scale: tuple[float, float]) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    shift = np.array([offset[0], offset[1]] * 2, dtype=np.float32)
    return ((boxes - shift) * np.array([scale[0], scale[1]] * 2, dtype=np.float32)).astype(np.float32)


def augment(image: Image.Image, sample: HOISample, detections: Detections, config, rng: np.random.Generator
            ) -> tuple[Image.Image, HOISample, Detections]:
    """``(image, sample, detections)`` augmented as the module docstring says (``config``: ``AugmentConfig``)."""
    image = image.convert("RGB")
    boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4)
    # a detection-only image's dropped labels (the annotations oracle reads them by box) move with the image
    dropped = sample.extra.get("dropped_labels")
    own = len(boxes)
    if dropped is not None:
        boxes = np.concatenate([boxes, np.asarray(dropped.boxes, dtype=np.float32).reshape(-1, 4)])
    dets = np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4)
    keep = np.ones(len(dets), dtype=bool)
    if config.flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
        boxes, dets = flip_boxes(boxes, image.width), flip_boxes(dets, image.width)
    if config.color_jitter > 0:
        j = float(config.color_jitter)
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhance(image).enhance(float(rng.uniform(max(0.0, 1 - j), 1 + j)))
    scales = list(config.scales)
    if scales or config.crop:
        if config.crop and rng.random() >= 0.5:
            size = resize_shorter(image.size, int(rng.choice(PRE_CROP_SCALES)), None)
            sx, sy = size[0] / image.width, size[1] / image.height
            image = image.resize(size, Image.BILINEAR)
            boxes, dets = _affine(boxes, (0, 0), (sx, sy)), _affine(dets, (0, 0), (sx, sy))
            x0, y0, x1, y1 = crop_window(image.size, boxes, rng)
            image = image.crop((x0, y0, x1, y1))
            boxes, dets = _affine(boxes, (x0, y0), (1, 1)), _affine(dets, (x0, y0), (1, 1))
            dets = np.clip(dets, 0, [x1 - x0, y1 - y0] * 2)
            keep = ((dets[:, 2] - dets[:, 0]) >= 1) & ((dets[:, 3] - dets[:, 1]) >= 1)
        if scales:
            size = resize_shorter(image.size, int(rng.choice(scales)))
            sx, sy = size[0] / image.width, size[1] / image.height
            image = image.resize(size, Image.BILINEAR)
            boxes, dets = _affine(boxes, (0, 0), (sx, sy)), _affine(dets, (0, 0), (sx, sy))
    w, h = image.size
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    dets = np.clip(dets, 0, [w, h, w, h]).astype(np.float32)
    index = np.flatnonzero(keep)
    detections = Detections.create(dets[index], np.asarray(detections.scores)[index],
                                   np.asarray(detections.labels)[index], (w, h),
                                   detections.vocabulary)
    extra = sample.extra
    if dropped is not None:
        extra = {**extra, "dropped_labels": replace(dropped, boxes=boxes[own:], image_size=(w, h), image=None)}
    return image, replace(sample, boxes=boxes[:own], image_size=(w, h), image=None, extra=extra), detections
