"""A detector's own box recall against HOI ground truth: how much of a result the detector allows.

For every annotated image, three shares (all with IoU >= ``iou_threshold``, +1-pixel convention as
the HICO-DET and V-COCO evaluators):

- **humans**: ground-truth human instances (the distinct instances that are the human of an
  annotated pair) covered by a detection labelled person;
- **objects**: ground-truth object instances (the distinct instances that are the object of an
  annotated pair, persons included in human-human pairs) covered by a detection of their label;
- **pairs**: annotated pairs whose human *and* object are both covered (a pair without an object,
  V-COCO's role-less case, needs only its human). Pair proposal pairs every detected human with
  every other detection, so such a pair is proposed unless ``max_pairs`` cuts it.

Coverage is a recall, not a matching: one detection may cover several ground-truth boxes. Every
detection counts, whatever its score (the detector's own thresholds have already applied).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.matching import expand_by_key, segment_argmax
from hoi_mllm.records import Detections


@dataclass
class BoxRecall:
    """Box recall of one detector over a set of images (fractions; ``None`` where nothing to cover).

    Attributes:
        humans, objects, pairs: shares of ground-truth humans, objects and pairs covered.
        num_humans, num_objects, num_pairs: the denominators.
        covered_humans, covered_objects, covered_pairs: the numerators.
        images: images counted; detections: detections over them (every score).
    """

    humans: float | None
    objects: float | None
    pairs: float | None
    num_humans: int
    num_objects: int
    num_pairs: int
    covered_humans: int
    covered_objects: int
    covered_pairs: int
    images: int
    detections: int

    def to_dict(self) -> dict:
        """The numbers in percent (``None`` where undefined) and the counts."""
        pct = lambda x: None if x is None else 100.0 * x  # noqa: E731
        return {"humans": pct(self.humans), "objects": pct(self.objects), "pairs": pct(self.pairs),
                "num_humans": self.num_humans, "num_objects": self.num_objects, "num_pairs": self.num_pairs,
                "covered_humans": self.covered_humans, "covered_objects": self.covered_objects,
                "covered_pairs": self.covered_pairs, "images": self.images, "detections": self.detections}


def covered_boxes(gt_keys: np.ndarray, gt_boxes: np.ndarray, det_keys: np.ndarray, det_boxes: np.ndarray,
                  iou_threshold: float = 0.5, plus_one: bool = True) -> np.ndarray:
    """Which ground-truth boxes a detection of the same key covers.

    Args:
        gt_keys: ``[G]`` int64 keys (``image * num_objects + label``), any order.
        gt_boxes: ``[G, 4]`` xyxy pixels.
        det_keys: ``[D]`` int64 keys of the detections, any order.
        det_boxes: ``[D, 4]`` xyxy pixels.
    Returns:
        ``[G]`` bool: the best IoU with a same-key detection is >= ``iou_threshold``.
    """
    order = np.argsort(det_keys, kind="stable")
    cand = expand_by_key(gt_keys, det_keys[order])  # [E] ground truth x same-key detection
    iou = box_iou_aligned(gt_boxes[cand.query], det_boxes[order][cand.target], plus_one=plus_one)  # [E]
    best, _ = segment_argmax(iou, cand)  # [G], -inf where no detection shares the key
    return best >= iou_threshold


def _instances(samples: Sequence[HOISample], num_objects: int):
    """Distinct pair humans / pair objects of every image, and each pair's (human, object) instance rows."""
    keys, boxes, is_human, is_object = [], [], [], []
    pair_h, pair_o = [], []
    offset = 0
    for i, s in enumerate(samples):
        n = int(s.boxes.shape[0])
        keys.append(i * num_objects + np.asarray(s.labels, dtype=np.int64).reshape(-1))
        boxes.append(np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4))
        h, o = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        h[s.pair_human] = True
        o[s.pair_object[s.pair_object >= 0]] = True
        is_human.append(h)
        is_object.append(o)
        pair_h.append(offset + s.pair_human)
        pair_o.append(np.where(s.pair_object >= 0, offset + s.pair_object, -1))
        offset += n
    cat = lambda xs, shape=(0,), dtype=np.int64: np.concatenate(xs) if xs else np.zeros(shape, dtype=dtype)  # noqa: E731
    return (cat(keys), cat(boxes, (0, 4), np.float64), cat(is_human, dtype=bool), cat(is_object, dtype=bool),
            cat(pair_h), cat(pair_o))


def detector_box_recall(samples: Sequence[HOISample], detections: Mapping[str, Detections] | Sequence[Detections],
                        num_objects: int, human_object: int, iou_threshold: float = 0.5) -> BoxRecall:
    """Box recall of a detector's detections on annotated images (see the module docstring).

    Args:
        samples: the ground truth (labels are object ids of the detections' vocabulary).
        detections: file name -> :class:`Detections`, or one per sample in order (boxes ``[N, 4]``
            xyxy pixels, labels ``[N]`` object ids). An image without detections covers nothing.
        num_objects: objects in the vocabulary (the key stride); human_object: the person id.
    Returns:
        :class:`BoxRecall`.
    """
    if not isinstance(detections, Mapping):
        if len(detections) != len(samples):
            raise ValueError(f"{len(detections)} detections for {len(samples)} images: give one per image")
        detections = {s.file_name: d for s, d in zip(samples, detections)}
    gt_keys, gt_boxes, is_human, is_object, pair_h, pair_o = _instances(samples, num_objects)
    det_keys, det_boxes = [], []
    for i, s in enumerate(samples):
        d = detections.get(s.file_name)
        if d is None or len(d) == 0:
            continue
        d = d.numpy()
        det_keys.append(i * num_objects + np.asarray(d.labels, dtype=np.int64).reshape(-1))
        det_boxes.append(np.asarray(d.boxes, dtype=np.float64).reshape(-1, 4))
    det_k = np.concatenate(det_keys) if det_keys else np.zeros(0, dtype=np.int64)
    det_b = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
    covered = covered_boxes(gt_keys, gt_boxes, det_k, det_b, iou_threshold)  # [B] every instance
    humans = is_human & (gt_keys % num_objects == human_object)
    pair_ok = covered[pair_h] & np.where(pair_o >= 0, covered[np.maximum(pair_o, 0)], True)  # [P]

    def share(mask: np.ndarray) -> tuple[float | None, int, int]:
        n, k = int(mask.sum()), int((mask & covered).sum())
        return (k / n if n else None), n, k

    (rh, nh, kh), (ro, no, ko) = share(humans), share(is_object)
    n_pairs = int(pair_ok.shape[0])
    return BoxRecall(humans=rh, objects=ro, pairs=(float(pair_ok.mean()) if n_pairs else None),
                     num_humans=nh, num_objects=no, num_pairs=n_pairs, covered_humans=kh, covered_objects=ko,
                     covered_pairs=int(pair_ok.sum()), images=len(samples), detections=int(det_k.shape[0]))
