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
from hoi_mllm.eval.ap import accumulate
from hoi_mllm.eval.inputs import FlatPredictions, check_options, flatten_predictions, image_index
from hoi_mllm.eval.matching import expand_by_key, first_in_group, segment_argmax
from hoi_mllm.eval.recall import DEFAULT_KS, UnseenPairRecall, recall_ignored_verbs
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import HOITriplets

SETTINGS = ("default", "known_object")
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
        settings: ``default``, ``known-object``, or both (``"both"`` is accepted).
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
    settings: tuple[str, ...] | str = SETTINGS
    iou_threshold: float = 0.5
    unknown_images: str = "error"
    missing_classes: str = "zero"
    recall_ks: tuple[int, ...] = DEFAULT_KS
    recall_count_no_interaction: bool = False
    keep_curves: bool = False
    progress: bool = False

    def __post_init__(self):
        object.__setattr__(self, "settings", parse_settings(self.settings))
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
    img, cls, hb, ob = [], [], [], []
    skipped = 0
    for i, s in enumerate(samples):
        pair, _verbs, classes = s.triplets()  # [t] each
        ok = (classes >= 0) & (s.pair_object[pair] >= 0) if pair.size else np.zeros(0, dtype=bool)
        skipped += int((~ok).sum())
        pair, classes = pair[ok], classes[ok]
        img.append(np.full(pair.shape[0], i, dtype=np.int64))
        cls.append(classes)
        hb.append(np.asarray(s.boxes, dtype=np.float64)[s.pair_human[pair]].reshape(-1, 4))
        ob.append(np.asarray(s.boxes, dtype=np.float64)[s.pair_object[pair]].reshape(-1, 4))
    img_a = np.concatenate(img) if img else np.zeros(0, dtype=np.int64)
    cls_a = np.concatenate(cls).astype(np.int64) if cls else np.zeros(0, dtype=np.int64)
    if cls_a.size and (cls_a.max() >= num_classes):
        raise ValueError(f"the ground truth names class {int(cls_a.max())}, outside the {vocabulary.name} "
                         f"vocabulary (0..{num_classes - 1}); annotations of another dataset?")
    keys = img_a * num_classes + cls_a
    order = np.argsort(keys, kind="stable")
    has_object = np.zeros((len(samples), vocabulary.num_objects), dtype=bool)
    has_object[img_a, vocabulary.class_objects[cls_a]] = True
    return HICOGroundTruth(
        keys=keys[order],
        human_boxes=(np.concatenate(hb) if hb else np.zeros((0, 4)))[order],
        object_boxes=(np.concatenate(ob) if ob else np.zeros((0, 4)))[order],
        npos=np.bincount(cls_a, minlength=num_classes).astype(np.int64),
        has_object=has_object,
        skipped=skipped,
    )


def match_hicodet(flat: FlatPredictions, classes: np.ndarray, gt: HICOGroundTruth, num_classes: int,
                  iou_threshold: float = 0.5) -> np.ndarray:
    """True-positive flags of detections, each matched within its image and class.

    Args:
        flat: ``T`` detections (boxes xyxy pixels).
        classes: ``[T]`` int64 class of each detection (valid ids only).
        gt: the ground truth.
        num_classes: ``C`` of the vocabulary (the key stride of ``gt.keys``).
        iou_threshold: minimum ``min(IoU_h, IoU_o)`` (+1-pixel IoU).
    Returns:
        ``[T]`` bool: True positive under the official greedy rule (see module doc).
    """
    cand = expand_by_key(flat.image * num_classes + classes, gt.keys)  # [E] detection x same-class GT
    ov = np.minimum(
        box_iou_aligned(flat.human_boxes[cand.query], gt.human_boxes[cand.target], plus_one=True),
        box_iou_aligned(flat.object_boxes[cand.query], gt.object_boxes[cand.target], plus_one=True),
    )  # [E]
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
        setting: ``default`` or ``known_object``.
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
              missing_classes: str = "zero") -> dict[str, float | None]:
    """Mean AP over class groups: ``full``, ``rare``, ``non_rare`` (+ ``unseen``, ``seen`` for a split)."""
    all_classes = np.arange(vocabulary.num_classes)
    groups = {"full": all_classes, "rare": sorted(vocabulary.rare), "non_rare": sorted(vocabulary.non_rare)}
    if split:
        groups["unseen"] = sorted(vocabulary.unseen_classes(split))
        groups["seen"] = sorted(vocabulary.seen_classes(split))
    out: dict[str, float | None] = {}
    for name, members in groups.items():
        members = np.asarray(members, dtype=np.int64)
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
        if self.recall is not None:
            self.recall.reset()

    def update(self, predictions: PredictionsFile | Iterable[HOITriplets]) -> None:
        """Match the triplets of some images (each image once over all updates)."""
        flat, unknown = flatten_predictions(predictions, self.index, self.vocabulary,
                                            unknown_images=self.config.unknown_images, done=self._done,
                                            progress=self.config.progress)
        self._counts["unknown_images_ignored"] += len(unknown)
        self._counts["triplets"] += len(flat)
        if self.recall is not None:
            self.recall.update(flat)
        classes = self.vocabulary.class_table[flat.objects, flat.verbs]  # [T], -1: not a class
        valid = classes >= 0
        self._counts["ignored_not_a_class"] += int((~valid).sum())
        flat, classes = flat.subset(valid), classes[valid]
        tp = match_hicodet(flat, classes, self.gt, self.vocabulary.num_classes, self.config.iou_threshold)
        self._parts.append((classes, tp, flat.scores, flat.image, flat.position))

    def compute(self) -> HICODetResult:
        """Rank, accumulate and summarise every requested setting."""
        cfg, vocab, gt = self.config, self.vocabulary, self.gt
        parts = self._parts or [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0),
                                 np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]
        classes, tp, scores, image, position = (np.concatenate(x) for x in zip(*parts))
        results: dict[str, SettingResult] = {}
        for setting in cfg.settings:
            keep = (gt.has_object[image, vocab.class_objects[classes]] if setting == "known_object"
                    else np.ones(classes.shape[0], dtype=bool))
            acc = accumulate(classes[keep], tp[keep], scores[keep], image[keep], position[keep], gt.npos,
                             rule="11-point", keep_curves=cfg.keep_curves)
            ap = np.where(gt.npos == 0, 0.0, acc.ap) if cfg.missing_classes == "zero" else acc.ap
            results[setting] = SettingResult(setting, ap, acc.recall, gt.npos, acc.num_detections, acc.num_tp,
                                             summarise(ap, gt.npos, vocab, cfg.split, cfg.missing_classes),
                                             acc.curves)
        counts = {"images": self.num_images, "predicted_images": len(self._done),
                  "ground_truth_triplets": int(gt.npos.sum()),
                  "classes_without_ground_truth": int((gt.npos == 0).sum()),
                  "ground_truth_skipped_not_a_class": gt.skipped, **self._counts}
        return HICODetResult(vocab, cfg.split, results,
                             self.recall.compute() if self.recall is not None else None, counts, cfg)


def evaluate_hicodet(samples: Sequence[HOISample], predictions: PredictionsFile | Iterable[HOITriplets],
                     vocabulary: str | Vocabulary = "hico-det", config: HICODetConfig | None = None,
                     **options) -> HICODetResult:
    """One-call HICO-DET evaluation of in-memory predictions (``options`` are config fields)."""
    if options:
        from dataclasses import replace

        config = replace(config or HICODetConfig(), **options)
    ev = HICODetEvaluator(samples, vocabulary, config)
    ev.update(predictions)
    return ev.compute()
