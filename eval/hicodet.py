"""HICO-DET mAP exactly as the official evaluation computes it (ho-rcnn ``evaluation/``).

Rules, from ``eval_one.m`` and ``VOCevaldet_bboxpair.m``:

- **Per class**, the detections of that class (its object and verb) over all test images, sorted
  by score descending; ties keep the order in which the official code concatenates them: by the
  image's position in the ground-truth list, then by the triplet's position in its image.
- Each detection is compared with the ground-truth pairs *of the same class in its image*; it takes
  the one with the highest ``min(IoU_human, IoU_object)`` (the first on ties), IoU with the
  +1-pixel convention (a box spans ``x2 - x1 + 1`` pixels). True positive if that value is >= 0.5
  and that ground truth is not taken yet; otherwise false positive — a duplicate is a false
  positive, and the detection does not fall back to its second-best ground truth.
- **AP** is 11-point interpolated (``ap += max(prec(rec >= t)) / 11`` for ``t = 0:0.1:1``), see
  :mod:`hoi_mllm.eval.ap`. No truncation of detections: every predicted triplet counts.
- **Default** setting: every test image counts for every class. **Known-Object**: for each class,
  only detections in images whose ground truth contains the class's object count (the official
  code uses HICO's image-level labels for "contains"; the annotation files here carry only the
  box-level pairs, so "contains" means "has an annotated pair with that object").
- **Classes without a test instance**: the official code computes ``rec = tp / 0`` (NaN), which
  reaches no recall threshold, so their AP is 0 and they stay in every mean (``missing_classes=
  "zero"``, the default). ``missing_classes="skip"`` leaves them out of the means instead, for
  datasets (a synthetic world, a subset) where many classes are absent. Their recall is NaN either
  way. (The HICO-DET test set has an instance of every one of its 600 classes.)
- **Means**: Full over all classes, Rare / Non-rare over the vocabulary's rare classes and the
  rest; for a zero-shot split, Unseen / Seen over its unseen classes and the rest.

**DA-HOI's protocol** (``protocol="da-hoi"``, DA-HOI ``qwenvl/eval/hico_eval.py`` ``HICOEvaluator``,
the footing of its published 44.58): the no-interaction classes are dropped and so are the images
whose ground truth holds only no-interaction pairs (their predictions are not counted); each image
keeps its 100 highest-scoring triplets (``max_hois``, ties in file order); IoU is continuous (no +1:
``intersect / (S1 + S2 - intersect + 1e-12)``, 0 for boxes that only touch); AP is the 11-point rule
over ``np.arange(0., 1.1, 0.1)``; the means are over the classes with ground truth that remain (520
on the test set for Full; Rare, Non-rare, Unseen and Seen likewise without no-interaction), and
there is no Known-Object setting. Its results carry the setting ``da_hoi`` and the protocol name
``da-hoi`` in every table and JSON, never ``default``.

Both settings come from one matching: a detection in an image without the class's object can
never hit a ground truth of that class, so Known-Object only drops rows before ranking.
Predicted (object, verb) combinations that are not a class are ignored and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.ap import accumulate, ranking_order
from hoi_mllm.eval.inputs import FlatPredictions, check_options, flatten_predictions, image_index
from hoi_mllm.eval.matching import expand_by_key, first_in_group, segment_argmax
from hoi_mllm.eval.recall import DEFAULT_KS, UnseenPairRecall, recall_ignored_verbs
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.predictions_reader import PredictionColumns
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import HOITriplets

SETTINGS = ("default", "known_object")
PROTOCOLS = ("official", "da-hoi")
DA_HOI_SETTING = "da_hoi"
DA_HOI_MAX_PER_IMAGE = 100  # hico_eval.py HICOEvaluator.max_hois
SETTING_ALIASES = {"default": ("default",), "known_object": ("known_object",), "known-object": ("known_object",),
                   "ko": ("known_object",), "both": SETTINGS}
MISSING_CLASSES = ("zero", "skip")


def parse_settings(name: str | Sequence[str]) -> tuple[str, ...]:
    """``"default" | "known-object" | "both"`` (or a list of them) -> canonical setting names."""
    names = [name] if isinstance(name, str) else list(name)
    out: list[str] = []
    for n in names:
        if n not in SETTING_ALIASES:
            raise ValueError(f"unknown setting {n!r}; allowed: default, known-object, both")
        out += [s for s in SETTING_ALIASES[n] if s not in out]
    return tuple(out)


@dataclass(frozen=True)
class HICODetConfig:
    """Options of the HICO-DET evaluation (the defaults are the official protocol).

    Attributes:
        split: zero-shot split of the vocabulary (e.g. ``rare_first``, ``unseen_verb``); adds
            Unseen / Seen means and U-R@K. ``None``: no split.
        protocol: ``official`` (ho-rcnn's MATLAB code) or ``da-hoi`` (DA-HOI's ``hico_eval.py``, see
            the module doc; comparable with DA-HOI's published numbers, not with the official ones).
        settings: ``default``, ``known-object``, or both (``"both"`` is accepted); ``None``: both for the
            official protocol, the single ``da_hoi`` setting for DA-HOI's (which has no Known-Object).
        iou_threshold: ``min(IoU_h, IoU_o)`` needed for a true positive.
        unknown_images: predicted file names absent from the ground truth: ``error`` or ``ignore``.
        missing_classes: classes without a ground-truth instance: ``zero`` (AP 0, in every mean, as
            the official code) or ``skip`` (left out of the means).
        recall_ks: the K of U-R@K (only with a split).
        recall_count_no_interaction: let triplets of the no-interaction verb rank pairs for U-R@K
            (default: they do not; see :mod:`hoi_mllm.eval.recall`).
        keep_curves: keep every class's precision/recall curve in the result (for plots).
        progress: show a progress bar while reading predictions.
    """

    split: str | None = None
    protocol: str = "official"
    settings: tuple[str, ...] | str | None = None
    iou_threshold: float = 0.5
    unknown_images: str = "error"
    missing_classes: str = "zero"
    recall_ks: tuple[int, ...] = DEFAULT_KS
    recall_count_no_interaction: bool = False
    keep_curves: bool = False
    progress: bool = False

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}; allowed: {', '.join(PROTOCOLS)}")
        if self.protocol == "da-hoi":
            if self.settings not in (None, "default", ("default",), (DA_HOI_SETTING,)):
                raise ValueError(f"settings={self.settings!r}: DA-HOI's protocol has one setting (its own "
                                 "Default over the classes without no-interaction); Known-Object is official only")
            object.__setattr__(self, "settings", (DA_HOI_SETTING,))
        else:
            object.__setattr__(self, "settings", parse_settings(SETTINGS if self.settings is None else self.settings))
        check_options(self.unknown_images, self.iou_threshold)
        if self.missing_classes not in MISSING_CLASSES:
            raise ValueError(f"missing_classes={self.missing_classes!r}; allowed: {', '.join(MISSING_CLASSES)}")


@dataclass
class HICOGroundTruth:
    """Ground-truth triplets of all images, sorted by ``(image, class)`` (``G`` triplets).

    Attributes:
        keys: ``[G]`` int64 ``image * num_classes + class``, ascending (stable: pair order kept).
        human_boxes, object_boxes: ``[G, 4]`` float64 xyxy pixels.
        npos: ``[C]`` int64 ground-truth triplets of each class.
        has_object: ``[N, O]`` bool, image ``n`` has an annotated pair with object ``o``.
        skipped: ground-truth triplets whose (object, verb) is not a class of the vocabulary.
    """

    keys: np.ndarray
    human_boxes: np.ndarray
    object_boxes: np.ndarray
    npos: np.ndarray
    has_object: np.ndarray
    skipped: int = 0


def hicodet_ground_truth(samples: Sequence[HOISample], vocabulary: Vocabulary) -> HICOGroundTruth:
    """Flatten ``samples`` into :class:`HICOGroundTruth` (pairs without an object are skipped)."""
    num_classes = vocabulary.num_classes
    img: list[int] = []
    cls: list[int] = []
    rows_h: list[int] = []
    rows_o: list[int] = []
    boxes: list[np.ndarray] = []
    offset = skipped = 0
    for i, s in enumerate(samples):
        for h, o, classes in zip(s.pair_human.tolist(), s.pair_object.tolist(), s.pair_classes):
            for c in classes:
                if c < 0 or o < 0:
                    skipped += 1
                    continue
                img.append(i)
                cls.append(c)
                rows_h.append(h + offset)
                rows_o.append(o + offset)
        boxes.append(s.boxes)
        offset += len(s.boxes)
    all_boxes = np.concatenate(boxes).astype(np.float64).reshape(-1, 4) if boxes else np.zeros((0, 4))
    img_a = np.asarray(img, dtype=np.int64)
    cls_a = np.asarray(cls, dtype=np.int64)
    if cls_a.size and (cls_a.max() >= num_classes):
        raise ValueError(f"the ground truth names class {int(cls_a.max())}, outside the {vocabulary.name} "
                         f"vocabulary (0..{num_classes - 1}); annotations of another dataset?")
    keys = img_a * num_classes + cls_a
    order = np.argsort(keys, kind="stable")
    has_object = np.zeros((len(samples), vocabulary.num_objects), dtype=bool)
    has_object[img_a, vocabulary.class_objects[cls_a]] = True
    return HICOGroundTruth(
        keys=keys[order],
        human_boxes=all_boxes[np.asarray(rows_h, dtype=np.int64)[order]],
        object_boxes=all_boxes[np.asarray(rows_o, dtype=np.int64)[order]],
        npos=np.bincount(cls_a, minlength=num_classes).astype(np.int64),
        has_object=has_object,
        skipped=skipped,
    )


def iou_da_hoi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N]`` IoU of aligned ``[N, 4]`` boxes as DA-HOI's ``HICOEvaluator.compute_IOU``: no +1 pixel,
    0 where the boxes do not overlap with positive area, ``1e-12`` added to the union."""
    left, right = np.maximum(a[:, 1], b[:, 1]), np.minimum(a[:, 3], b[:, 3])
    top, bottom = np.maximum(a[:, 0], b[:, 0]), np.minimum(a[:, 2], b[:, 2])
    inter = (right - left) * (bottom - top)
    areas = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.where((left >= right) | (top >= bottom), 0.0, inter / (areas - inter + 1e-12))


def iou_official(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N]`` IoU of aligned boxes with the +1-pixel convention of the MATLAB code."""
    return box_iou_aligned(a, b, plus_one=True)


def top_per_image(flat: FlatPredictions, k: int) -> np.ndarray:
    """``[T]`` bool: the ``k`` highest-scoring triplets of each image (ties: earlier in the file first)."""
    order = np.lexsort((flat.position, -flat.scores, flat.image))  # by image, score descending, position
    img = flat.image[order]
    start = np.searchsorted(img, img, side="left")  # first row of each row's image in ``order``
    keep = np.zeros(len(flat), dtype=bool)
    keep[order[np.arange(len(flat)) - start < k]] = True
    return keep


def match_hicodet(flat: FlatPredictions, classes: np.ndarray, gt: HICOGroundTruth, num_classes: int,
                  iou_threshold: float = 0.5, iou=iou_official) -> np.ndarray:
    """True-positive flags of detections, each matched within its image and class.

    Args:
        flat: ``T`` detections (boxes xyxy pixels).
        classes: ``[T]`` int64 class of each detection (valid ids only).
        gt: the ground truth.
        num_classes: ``C`` of the vocabulary (the key stride of ``gt.keys``).
        iou_threshold: minimum ``min(IoU_h, IoU_o)``.
        iou: aligned IoU function (:func:`iou_official`, +1 pixel; :func:`iou_da_hoi`).
    Returns:
        ``[T]`` bool: True positive under the official greedy rule (see module doc).
    """
    cand = expand_by_key(flat.image * num_classes + classes, gt.keys)  # [E] detection x same-class GT
    ov = np.minimum(iou(flat.human_boxes[cand.query], gt.human_boxes[cand.target]),
                    iou(flat.object_boxes[cand.query], gt.object_boxes[cand.target]))  # [E]
    best, row = segment_argmax(ov, cand)  # [T]
    hit = np.flatnonzero(best >= iou_threshold)
    tp = np.zeros(len(flat), dtype=bool)
    target = cand.target[row[hit]]  # the ground truth each hitting detection takes
    tp[hit[first_in_group(target, flat.scores[hit], flat.position[hit])]] = True
    return tp


@dataclass
class SettingResult:
    """One setting's numbers (fractions in [0, 1]).

    Attributes:
        setting: ``default``, ``known_object`` or ``da_hoi`` (DA-HOI's protocol).
        ap: ``[C]`` AP per class (0 for classes without ground truth under ``missing_classes="zero"``,
            else NaN). recall: ``[C]`` final recall per class (NaN without ground truth).
        npos: ``[C]`` ground-truth triplets per class. num_detections, num_tp: ``[C]`` ranked
            detections and true positives per class.
        summary: ``full``, ``rare``, ``non_rare`` and, with a split, ``unseen``, ``seen`` (mean AP;
            ``None`` where the group is empty).
        curves: class -> ``(recall [N], precision [N])`` when kept.
    """

    setting: str
    ap: np.ndarray
    recall: np.ndarray
    npos: np.ndarray
    num_detections: np.ndarray
    num_tp: np.ndarray
    summary: dict[str, float | None]
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class HICODetResult:
    """The result of a HICO-DET evaluation; ``to_dict()`` gives the JSON report (percent)."""

    vocabulary: Vocabulary
    split: str | None
    settings: dict[str, SettingResult]
    unseen_recall: dict[int, float] | None
    counts: dict[str, int]
    config: HICODetConfig

    def to_dict(self) -> dict:
        from hoi_mllm.eval.tables import hicodet_report

        return hicodet_report(self)


def summarise(ap: np.ndarray, npos: np.ndarray, vocabulary: Vocabulary, split: str | None,
              missing_classes: str = "zero", include: np.ndarray | None = None) -> dict[str, float | None]:
    """Mean AP over class groups: ``full``, ``rare``, ``non_rare`` (+ ``unseen``, ``seen`` for a split).

    ``include``: ``[C]`` bool, the classes any mean may use (DA-HOI's protocol: no no-interaction).
    """
    all_classes = np.arange(vocabulary.num_classes)
    groups = {"full": all_classes, "rare": sorted(vocabulary.rare), "non_rare": sorted(vocabulary.non_rare)}
    if split:
        groups["unseen"] = sorted(vocabulary.unseen_classes(split))
        groups["seen"] = sorted(vocabulary.seen_classes(split))
    out: dict[str, float | None] = {}
    for name, members in groups.items():
        members = np.asarray(members, dtype=np.int64)
        if include is not None:
            members = members[include[members]]
        if missing_classes == "skip":
            members = members[npos[members] > 0]
        out[name] = float(np.mean(ap[members])) if members.size else None
    return out


class HICODetEvaluator:
    """HICO-DET mAP in three steps: ``update()`` matches, ``compute()`` accumulates and summarises.

    >>> ev = HICODetEvaluator(samples, "hico-det", HICODetConfig(split="rare_first"))  # doctest: +SKIP
    >>> ev.update(read_predictions("predictions.jsonl"))                                # doctest: +SKIP
    >>> ev.compute().settings["default"].summary["full"]                                # doctest: +SKIP

    Args:
        samples: the ground truth, one :class:`HOISample` per test image (images without pairs
            count too: their detections are false positives in the Default setting).
        vocabulary: the vocabulary the ground truth and the predictions index (name, path or object).
        config: :class:`HICODetConfig`.
    """

    def __init__(self, samples: Sequence[HOISample], vocabulary: str | Vocabulary = "hico-det",
                 config: HICODetConfig | None = None):
        self.vocabulary = load_vocabulary(vocabulary)
        self.config = config or HICODetConfig()
        if self.config.split:
            self.vocabulary.split(self.config.split)  # an unknown split fails here, naming the allowed ones
        self.num_images = len(samples)
        self.index = image_index(samples)
        self.gt = hicodet_ground_truth(samples, self.vocabulary)
        self.da_hoi = self.config.protocol == "da-hoi"
        # DA-HOI's protocol: images whose ground truth holds only no-interaction pairs are left out
        no_int = self.vocabulary.no_interaction_verb
        self.keep_image = np.array([not (self.da_hoi and no_int is not None and s.num_pairs > 0
                                         and all(v == no_int for verbs in s.pair_verbs for v in verbs))
                                    for s in samples], dtype=bool)
        self.recall = (UnseenPairRecall(samples, self.vocabulary.unseen_classes(self.config.split),
                                        self.config.recall_ks, self.config.iou_threshold,
                                        ignore_verbs=recall_ignored_verbs(self.vocabulary,
                                                                          self.config.recall_count_no_interaction))
                       if self.config.split else None)
        self.reset()

    def reset(self) -> None:
        self._done: set[int] = set()
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._counts = {"triplets": 0, "ignored_not_a_class": 0, "unknown_images_ignored": 0}
        if self.da_hoi:
            self._counts.update(dropped_beyond_top_per_image=0, dropped_in_no_interaction_only_images=0)
        if self.recall is not None:
            self.recall.reset()

    def update(self, predictions: PredictionColumns | PredictionsFile | Iterable[HOITriplets]) -> None:
        """Match the triplets of some images (each image once over all updates)."""
        flat, unknown = flatten_predictions(predictions, self.index, self.vocabulary,
                                            unknown_images=self.config.unknown_images, done=self._done,
                                            progress=self.config.progress)
        self._counts["unknown_images_ignored"] += len(unknown)
        self._counts["triplets"] += len(flat)
        if self.recall is not None:
            self.recall.update(flat)
        if self.da_hoi:
            top = top_per_image(flat, DA_HOI_MAX_PER_IMAGE)
            kept_image = self.keep_image[flat.image]
            self._counts["dropped_beyond_top_per_image"] += int((~top).sum())
            self._counts["dropped_in_no_interaction_only_images"] += int((top & ~kept_image).sum())
            flat = flat.subset(top & kept_image)
        classes = self.vocabulary.class_table[flat.objects, flat.verbs]  # [T], -1: not a class
        valid = classes >= 0
        if not valid.all():
            self._counts["ignored_not_a_class"] += int((~valid).sum())
            flat, classes = flat.subset(valid), classes[valid]
        tp = match_hicodet(flat, classes, self.gt, self.vocabulary.num_classes, self.config.iou_threshold,
                           iou_da_hoi if self.da_hoi else iou_official)
        self._parts.append((classes, tp, flat.scores, flat.image, flat.position))

    def included_classes(self) -> np.ndarray | None:
        """``[C]`` bool, the classes DA-HOI's protocol averages (with ground truth, not no-interaction); else ``None``."""
        if not self.da_hoi:
            return None
        return (self.gt.npos > 0) & (self.vocabulary.class_verbs != (-1 if self.vocabulary.no_interaction_verb is None
                                                                    else self.vocabulary.no_interaction_verb))

    def compute(self) -> HICODetResult:
        """Rank, accumulate and summarise every requested setting."""
        cfg, vocab, gt = self.config, self.vocabulary, self.gt
        parts = self._parts or [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0),
                                 np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]
        classes, tp, scores, image, position = (np.concatenate(x) for x in zip(*parts))
        order = ranking_order(classes, scores, image, position)  # one sort; each setting ranks a subset of it
        include = self.included_classes()
        results: dict[str, SettingResult] = {}
        for setting in cfg.settings:
            if setting == "known_object":
                ranked = order[gt.has_object[image[order], vocab.class_objects[classes[order]]]]
            else:
                ranked = order
            acc = accumulate(classes, tp, scores, image, position, gt.npos,
                             rule="da-hoi-11-point" if self.da_hoi else "11-point", keep_curves=cfg.keep_curves,
                             order=ranked)
            if include is not None:
                ap = np.where(include, acc.ap, np.nan)
                summary = summarise(ap, gt.npos, vocab, cfg.split, "skip", include)
            else:
                ap = np.where(gt.npos == 0, 0.0, acc.ap) if cfg.missing_classes == "zero" else acc.ap
                summary = summarise(ap, gt.npos, vocab, cfg.split, cfg.missing_classes)
            results[setting] = SettingResult(setting, ap, acc.recall, gt.npos, acc.num_detections, acc.num_tp,
                                             summary, acc.curves)
        counts = {"images": self.num_images, "predicted_images": len(self._done),
                  "ground_truth_triplets": int(gt.npos.sum()),
                  "classes_without_ground_truth": int((gt.npos == 0).sum()),
                  "ground_truth_skipped_not_a_class": gt.skipped, **self._counts}
        if include is not None:
            counts.update(classes_averaged=int(include.sum()), images_left_out=int((~self.keep_image).sum()))
        return HICODetResult(vocab, cfg.split, results,
                             self.recall.compute() if self.recall is not None else None, counts, cfg)


def evaluate_hicodet(samples: Sequence[HOISample], predictions: PredictionColumns | PredictionsFile | Iterable[HOITriplets],
                     vocabulary: str | Vocabulary = "hico-det", config: HICODetConfig | None = None,
                     **options) -> HICODetResult:
    """One-call HICO-DET evaluation of in-memory predictions (``options`` are config fields)."""
    if options:
        from dataclasses import replace

        config = replace(config or HICODetConfig(), **options)
    ev = HICODetEvaluator(samples, vocabulary, config)
    ev.update(predictions)
    return ev.compute()
