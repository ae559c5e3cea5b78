"""``jitter``: ground truth perturbed like an imperfect detector, to study how recognition degrades.

Per image, with a random stream seeded by ``(seed, file name)`` (so the result does not depend on
call order or batching):

1. box noise: each coordinate moves by ``N(0, box_noise)`` times the box's width (x) or height (y);
   boxes are clipped to the image and kept at least one pixel wide and high;
2. dropped boxes: each annotated box is missed with probability ``drop_rate``;
3. score noise: a kept box scores ``1 - |N(0, score_noise)|`` (clipped to [0, 1]);
4. spurious boxes: ``Poisson(spurious_rate)`` boxes at random places (side 5-50% of the image),
   labelled person with probability ``spurious_human_fraction``, else a uniformly random object,
   scoring ``U(0, spurious_max_score)``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.base import DetectorOptions
from hoi_mllm.detectors.ground_truth import MERGE_IOU, GroundTruthDetector
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import Detections


def image_rng(seed: int, file_name: str) -> np.random.Generator:
    """A random stream that depends only on ``(seed, file_name)`` (not on Python's salted ``hash``)."""
    digest = int.from_bytes(hashlib.sha256(file_name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def jitter_boxes(boxes: np.ndarray, labels: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator, *,
                 box_noise: float, drop_rate: float, score_noise: float, spurious_rate: float,
                 spurious_human_fraction: float, spurious_max_score: float, num_objects: int,
                 human_object: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturb one image's ground truth (see the module docstring); draws in a fixed order.

    Args:
        boxes: ``[N, 4]`` xyxy pixels; labels: ``[N]`` object ids; image_size: ``(width, height)``.
    Returns:
        ``(boxes [M, 4] float32, scores [M] float32, labels [M] int64)``: kept boxes, then spurious ones.
    """
    w, h = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = boxes.shape[0]
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)  # [N, 4] (w, h, w, h)
    noise = rng.normal(size=(n, 4))  # [N, 4]
    keep = rng.random(n) >= drop_rate  # [N]
    scores = np.clip(1.0 - np.abs(rng.normal(size=n)) * score_noise, 0.0, 1.0)  # [N]
    moved = _clip_min_size(boxes + noise * box_noise * np.maximum(wh, 1.0), w, h)
    m = int(rng.poisson(spurious_rate)) if spurious_rate > 0 else 0
    centre = rng.random((m, 2)) * [w, h]  # [M, 2]
    side = rng.uniform(0.05, 0.5, size=(m, 2)) * [w, h]  # [M, 2]
    spurious = _clip_min_size(np.concatenate([centre - side / 2, centre + side / 2], axis=1), w, h)
    human = rng.random(m) < spurious_human_fraction
    spurious_labels = np.where(human, human_object, rng.integers(0, num_objects, size=m))
    spurious_scores = rng.random(m) * spurious_max_score
    return (np.concatenate([moved[keep], spurious]).astype(np.float32),
            np.concatenate([scores[keep], spurious_scores]).astype(np.float32),
            np.concatenate([np.asarray(labels, dtype=np.int64).reshape(-1)[keep], spurious_labels]).astype(np.int64))


def _clip_min_size(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Clip ``[N, 4]`` boxes to the image keeping them at least one pixel wide and high (images >= 1 px)."""
    out = boxes.copy()
    out[:, 0] = np.clip(out[:, 0], 0, max(w - 1, 0))
    out[:, 1] = np.clip(out[:, 1], 0, max(h - 1, 0))
    out[:, 2] = np.clip(np.maximum(out[:, 2], out[:, 0] + 1), 0, w)
    out[:, 3] = np.clip(np.maximum(out[:, 3], out[:, 1] + 1), 0, h)
    return out


@register_detector("jitter", "perturbed-ground-truth")
class JitterDetector(GroundTruthDetector):
    """Ground truth with seeded box noise, dropped and spurious boxes and score noise.

    Args:
        annotations: annotation file or list of :class:`HOISample` (as ``ground-truth``; so is ``vocabulary``).
        seed: random seed; with the file name it fixes each image's perturbation.
        box_noise: standard deviation of each coordinate's shift, relative to the box's width/height.
        drop_rate: probability that an annotated box is missed (0..1).
        score_noise: standard deviation of the score drop of kept boxes.
        spurious_rate: mean number of spurious boxes per image (Poisson).
        spurious_human_fraction: share of spurious boxes labelled person (0..1).
        spurious_max_score: spurious boxes score uniformly in [0, this).
        merge_iou: as the ``ground-truth`` detector: duplicate annotated rows merged before jittering.
    """

    def __init__(self, annotations: str | Path | Sequence[HOISample] | None = None, *, seed: int = 0,
                 box_noise: float = 0.1, drop_rate: float = 0.1, score_noise: float = 0.1, spurious_rate: float = 1.0,
                 spurious_human_fraction: float = 0.5, spurious_max_score: float = 0.8,
                 merge_iou: float | None = MERGE_IOU,
                 vocabulary: str | Vocabulary | None = "hico-det", options: DetectorOptions | None = None):
        super().__init__(annotations, merge_iou=merge_iou, vocabulary=vocabulary, options=options)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"jitter option seed={seed!r}: must be an integer >= 0")
        params = {"box_noise": box_noise, "score_noise": score_noise, "spurious_rate": spurious_rate}
        unit = {"drop_rate": drop_rate, "spurious_human_fraction": spurious_human_fraction,
                "spurious_max_score": spurious_max_score}
        for name, value in {**params, **unit}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"jitter option {name}={value!r}: must be a number >= 0")
            if name in unit and value > 1:
                raise ValueError(f"jitter option {name}={value!r}: must be in [0, 1]")
        self.seed = seed
        self.params = {k: float(v) for k, v in {**params, **unit}.items()}

    def sample_detections(self, sample: HOISample, image: Image.Image) -> Detections:
        rng = image_rng(self.seed, sample.file_name)
        merged = super().sample_detections(sample, image)  # one box per physical instance, as a detector sees it
        boxes, scores, labels = jitter_boxes(
            merged.boxes, merged.labels, image.size, rng, num_objects=self.vocabulary.num_objects,
            human_object=self.vocabulary.human_object, **self.params)
        return Detections.create(boxes, scores, labels, image.size, self.vocabulary.name)
