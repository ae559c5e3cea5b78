"""Average precision: the accumulate and summarise steps shared by HICO-DET and V-COCO.

Two AP rules, each exactly as its official code computes it:

- :func:`ap_11point` — ho-rcnn ``evaluation/VOCevaldet_bboxpair.m`` (HICO-DET): for each recall
  threshold ``t`` of MATLAB's ``0:0.1:1`` take the highest precision among the points with
  ``recall >= t`` (0 if none) and average the 11 values. MATLAB builds ``0:0.1:1`` symmetrically
  (first half ``0 + k*0.1``, second half ``1 - k*0.1``), so its fourth value is
  ``3*0.1 = 0.30000000000000004``, not ``0.3``: a recall of exactly 3/10 does not reach it.
  :data:`MATLAB_RECALL_THRESHOLDS` holds those 11 doubles.
- ``"da-hoi-11-point"`` — DA-HOI ``qwenvl/eval/hico_eval.py`` ``voc_ap``: the same 11-point rule over
  ``np.arange(0., 1.1, 0.1)``, whose 4th, 7th and 8th values are ``0.30000000000000004``,
  ``0.6000000000000001`` and ``0.7000000000000001`` (:data:`ARANGE_RECALL_THRESHOLDS`), so a recall of
  exactly 0.6 or 0.7 reaches the MATLAB threshold but not this one.
- :func:`ap_voc` — ``vsrl_eval.py`` ``voc_ap`` (V-COCO): the area under the precision envelope
  with sentinels ``(0, 0)`` and ``(1, 0)``, summed where recall changes (VOC 2010+ "all points").

:func:`accumulate` turns per-detection true-positive flags into per-class precision/recall curves
and AP in one sort, with the tie order documented there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# MATLAB's 0:0.1:1 (colon operator: a + k*d for the first half, b - (n-k)*d for the second, the
# middle (a+b)/2), i.e. k/10 for every k except 3, which is 3*0.1 = 0.30000000000000004.
MATLAB_RECALL_THRESHOLDS = np.array(
    [k * 0.1 for k in range(5)] + [0.5] + [1.0 - (10 - k) * 0.1 for k in range(6, 11)], dtype=np.float64
)

# numpy's arange(0., 1.1, 0.1) as DA-HOI's evaluator iterates it: k * 0.1 for every k
ARANGE_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def _suffix_max(x: np.ndarray) -> np.ndarray:
    """``[N]`` -> ``[N]``: ``out[i] = max(x[i:])``."""
    return np.maximum.accumulate(x[::-1])[::-1]


def ap_11point(rec: np.ndarray, prec: np.ndarray, thresholds: np.ndarray = MATLAB_RECALL_THRESHOLDS) -> float:
    """11-point interpolated AP of one precision/recall curve (ho-rcnn's rule, see module doc).

    Args:
        rec, prec: ``[N]`` recall and precision after each detection in score order (recall
            non-decreasing, as a cumulative curve is). NaN recall (a class without ground truth)
            reaches no threshold, so such a class gets AP 0, as in the official code.
    Returns:
        AP in [0, 1].
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if rec.size == 0:
        return 0.0
    if np.isnan(rec).any():
        return 0.0
    if np.any(np.diff(rec) < 0):  # not a cumulative curve: take each threshold's mask as written
        vals = [prec[rec >= t].max() if np.any(rec >= t) else 0.0 for t in thresholds]
    else:
        first = np.searchsorted(rec, thresholds, side="left")  # [11] first point with rec >= t
        vals = np.append(_suffix_max(prec), 0.0)[first].tolist()  # 0 where no point reaches t
    ap = 0.0
    for p in vals:  # the official code adds p/11 term by term; so do we, for the same rounding
        ap += p / len(thresholds)
    return float(ap)


def ap_voc(rec: np.ndarray, prec: np.ndarray) -> float:
    """All-point VOC AP of one curve (``vsrl_eval.voc_ap``): area under the precision envelope.

    Args:
        rec, prec: ``[N]`` recall and precision after each detection in score order.
    Returns:
        AP in [0, 1] (0 for an empty curve).
    """
    mrec = np.concatenate(([0.0], np.asarray(rec, dtype=np.float64), [1.0]))  # [N + 2]
    mpre = np.concatenate(([0.0], np.asarray(prec, dtype=np.float64), [0.0]))  # [N + 2]
    mpre = _suffix_max(mpre)  # precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


AP_RULES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "11-point": ap_11point,
    "da-hoi-11-point": lambda rec, prec: ap_11point(rec, prec, ARANGE_RECALL_THRESHOLDS),
    "voc": ap_voc,
}


@dataclass
class Accumulated:
    """Per-class results of :func:`accumulate`.

    Attributes:
        ap: ``[C]`` float64 AP in [0, 1]; NaN where the class has no ground truth (``npos == 0``).
        recall: ``[C]`` float64 final recall (true positives / ground truths); NaN where ``npos == 0``.
        num_detections: ``[C]`` int64 detections of each class that were ranked.
        num_tp: ``[C]`` int64 true positives of each class.
        curves: class -> ``(recall [N], precision [N])`` after each ranked detection, if kept.
    """

    ap: np.ndarray
    recall: np.ndarray
    num_detections: np.ndarray
    num_tp: np.ndarray
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def ranking_order(classes: np.ndarray, score: np.ndarray, image: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``[T]`` permutation: by class, then score descending, then image index, then position.

    Ties in score are broken by the image's index in the ground-truth list and then by the
    detection's position among its image's predictions: the order in which ho-rcnn concatenates
    detections before its (stable) MATLAB ``sort``.
    """
    tie = image.astype(np.int64) * (int(position.max()) + 1 if position.size else 1) + position  # (image, position)
    cls = classes.astype(np.int16) if classes.size and 0 <= classes.min() and classes.max() < 2 ** 15 else classes
    return np.lexsort((tie, -score, cls))  # an int16 key sorts by radix: the fewer and smaller the keys, the faster


def accumulate(classes: np.ndarray, tp: np.ndarray, score: np.ndarray, image: np.ndarray,
               position: np.ndarray, npos: np.ndarray, rule: str = "11-point",
               keep_curves: bool = False, order: np.ndarray | None = None) -> Accumulated:
    """Precision/recall per class from per-detection true-positive flags, and AP by ``rule``.

    Args:
        classes: ``[T]`` int64 class of each detection, in ``0..C-1``.
        tp: ``[T]`` bool true positive (else false positive).
        score: ``[T]`` float detection scores.
        image, position: ``[T]`` int64 tie-breakers (see :func:`ranking_order`).
        npos: ``[C]`` number of ground-truth instances of each class.
        rule: ``"11-point"`` (HICO-DET), ``"da-hoi-11-point"`` (DA-HOI's evaluator) or ``"voc"`` (V-COCO).
        keep_curves: also return every class's curve (for plots).
        order: the :func:`ranking_order` of these detections, or of the subset to rank (a filtered
            ranking keeps its order, so several subsets can share one sort); ``None``: computed here.
    Returns:
        :class:`Accumulated`.
    """
    if rule not in AP_RULES:
        raise ValueError(f"unknown AP rule {rule!r}; allowed: {', '.join(AP_RULES)}")
    ap_fn = AP_RULES[rule]
    npos = np.asarray(npos, dtype=np.int64)
    num_classes = npos.shape[0]
    if order is None:
        order = ranking_order(classes, score, image, position)
    cls_sorted = classes[order]
    tp_sorted = tp[order].astype(np.float64)
    bounds = np.searchsorted(cls_sorted, np.arange(num_classes + 1))  # [C + 1] segment starts
    ap = np.full(num_classes, np.nan)
    recall = np.full(num_classes, np.nan)
    num_tp = np.zeros(num_classes, dtype=np.int64)
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(num_classes):
        ctp = np.cumsum(tp_sorted[bounds[c]:bounds[c + 1]])  # [N_c]
        num_tp[c] = int(ctp[-1]) if ctp.size else 0
        if npos[c] == 0:
            continue
        rec = ctp / float(npos[c])
        prec = ctp / np.arange(1, ctp.size + 1, dtype=np.float64)  # tp / (tp + fp)
        ap[c] = ap_fn(rec, prec)
        recall[c] = rec[-1] if rec.size else 0.0
        if keep_curves:
            curves[c] = (rec, prec)
    return Accumulated(ap, recall, np.diff(bounds).astype(np.int64), num_tp, curves)
