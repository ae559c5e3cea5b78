"""Zero-shot training filters: take a split's unseen interactions out of training annotations.

What the standard protocol does (GEN-VLKT ``datasets/hico.py``, followed by HOICLIP, CLIP4HOI and
DA-HOI), precisely: for each training image it collects the ``(subject_id, object_id)`` of every
``hoi_annotation`` whose ``hoi_category_id - 1`` is in the split's unseen list, then removes every
row of those ``(subject_id, object_id)`` pairs, *including the rows of seen classes on the same
pair*; an image left without rows is removed from training; with ``--del_unseen`` the unseen
classes also leave the text classifier, and a remaining row whose (verb, object) is not among the
kept classes is skipped.

:func:`filter_zero_shot` applies the same pair rule to :class:`HOISample` records:

- a pair (human instance, object instance) is dropped, with all of its verbs, when any of its
  classes is unseen;
- for ``unseen_verb`` splits (UV, and ConsNet/EoID's UA) a pair is also dropped when any of its verbs
  is an unseen verb (a verb of an unseen class). On HICO-DET this drops exactly the same pairs,
  because those splits hold out every class of their verbs; it differs only for a vocabulary whose
  verb split holds out some classes of a verb, where every pair with that verb goes;
- ``unseen_object`` splits (UO) hold out every class of their objects, so the class rule removes
  every pair with an unseen object;

- a pair is also dropped when it is *the same physical pair* as a dropped one: same object label,
  and both its human box and its object box reach IoU ``>= same_pair_iou`` (default 0.7) with
  those of a pair dropped by the rules above. UPT-style files (``instances_*2015.json``) give every
  triplet its own, slightly different boxes, so one person doing two things with one object arrives
  as two one-verb pairs (HICO-DET test: 33,405 pairs for 33,405 triplets), and the exact-box pair
  rule would drop only the unseen triplet itself. GEN-VLKT's ``trainval_hico.json`` has these boxes
  merged (by the same 0.7 IoU), so with this rule both formats of the same data give the same
  training set. ``same_pair_iou=None`` turns it off. These pairs are counted separately in the report;

and it departs from GEN-VLKT on purpose in one point: images are kept even when no pair is left,
and every instance box stays, so the unannotated human-object combinations remain for EoID's
two-stage matching (images left without pairs are counted in the report).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hoi_mllm.boxes import box_iou
from hoi_mllm.data.sample import HOISample, SampleCounts, count_samples


@dataclass
class FilterReport:
    """Counts before and after a zero-shot filter.

    Attributes:
        split / kind: the split name and its kind (``unseen_combination``, ``unseen_verb``, ``unseen_object``).
        unseen_classes: classes the split holds out; ``unseen_verbs``: verbs dropped whole (verb splits).
        before / after: images, images with pairs, instances, pairs, triplets, classes present.
        dropped_pairs / dropped_triplets: what the filter removed (all rules together).
        dropped_seen_triplets: triplets of seen classes removed because their pair also had an unseen one.
        dropped_overlap_pairs / dropped_overlap_triplets: of those, the pairs (and their triplets, all of
            seen classes) removed only because they overlap a dropped pair at ``same_pair_iou``.
        same_pair_iou: the IoU of that rule (``None``: off).
        images_emptied: images that had pairs and have none left (kept, with their boxes).
        unseen_present_before / unseen_present_after: distinct unseen classes in the data (after: 0).
    """

    split: str
    kind: str
    unseen_classes: int
    unseen_verbs: int
    before: SampleCounts
    after: SampleCounts
    dropped_pairs: int = 0
    dropped_triplets: int = 0
    dropped_seen_triplets: int = 0
    dropped_overlap_pairs: int = 0
    dropped_overlap_triplets: int = 0
    same_pair_iou: float | None = None
    images_emptied: int = 0
    unseen_present_before: int = 0
    unseen_present_after: int = 0
    seen_classes: int = field(default=0)

    def as_dict(self) -> dict:
        out = {"split": self.split, "kind": self.kind, "unseen_classes": self.unseen_classes,
               "seen_classes": self.seen_classes, "unseen_verbs": self.unseen_verbs,
               "seen_present_before": len(self.before.classes) - self.unseen_present_before}
        out.update({f"{k}_before": v for k, v in self.before.as_dict().items()})
        out.update({f"{k}_after": v for k, v in self.after.as_dict().items()})
        out.update({"dropped_pairs": self.dropped_pairs, "dropped_triplets": self.dropped_triplets,
                    "dropped_seen_triplets": self.dropped_seen_triplets,
                    "dropped_overlap_pairs": self.dropped_overlap_pairs,
                    "dropped_overlap_triplets": self.dropped_overlap_triplets, "same_pair_iou": self.same_pair_iou,
                    "images_emptied": self.images_emptied,
                    "unseen_present_before": self.unseen_present_before,
                    "unseen_present_after": self.unseen_present_after})
        return out


def unseen_pair_mask(sample: HOISample, unseen_classes: frozenset[int], unseen_verbs: frozenset[int]) -> np.ndarray:
    """``[P]`` bool: pairs with an unseen class or an unseen verb among their labels."""
    return np.array([any(c in unseen_classes for c in cls) or any(v in unseen_verbs for v in verbs)
                     for cls, verbs in zip(sample.pair_classes, sample.pair_verbs)], dtype=bool)


def same_pair_mask(sample: HOISample, dropped: np.ndarray, iou: float) -> np.ndarray:
    """``[P]`` bool: kept pairs (``~dropped``) that are the same physical pair as a ``dropped [P]`` one.

    Same object label, and human boxes and object boxes (xyxy pixels) both at IoU ``>= iou``; a pair
    without an object (``pair_object == -1``) never matches.
    """
    out = np.zeros(sample.num_pairs, dtype=bool)
    kept = np.flatnonzero(~dropped & (sample.pair_object >= 0))
    gone = np.flatnonzero(dropped & (sample.pair_object >= 0))
    if not len(kept) or not len(gone):
        return out
    hb, ob, labels = sample.human_boxes, sample.object_boxes, sample.object_labels  # [P, 4], [P, 4], [P]
    near = ((box_iou(hb[kept], hb[gone]) >= iou) & (box_iou(ob[kept], ob[gone]) >= iou)
            & (labels[kept, None] == labels[None, gone]))  # [K, D]
    out[kept] = near.any(axis=1)
    return out


def drop_pairs(sample: HOISample, drop: np.ndarray) -> HOISample:
    """Copy of ``sample`` without the pairs where ``drop [P]`` is True; instances are kept."""
    keep = np.flatnonzero(~drop)
    return dataclasses.replace(
        sample, pair_human=sample.pair_human[keep], pair_object=sample.pair_object[keep],
        pair_verbs=[sample.pair_verbs[k] for k in keep], pair_classes=[sample.pair_classes[k] for k in keep],
        extra=dict(sample.extra))


def filter_zero_shot(samples: Sequence[HOISample], vocabulary, split: str,
                     same_pair_iou: float | None = 0.7) -> tuple[list[HOISample], FilterReport]:
    """Remove the unseen interactions of ``split`` from training samples (rule in the module docstring).

    Args:
        samples: annotated training images.
        vocabulary: :class:`~hoi_mllm.prompts.Vocabulary` or its name/path; it defines the split.
        split: a split name of the vocabulary (unknown names raise, listing the allowed ones).
        same_pair_iou: also drop a pair with the same object label whose human and object boxes both
            reach this IoU with a dropped pair (UPT's per-triplet boxes of one physical pair; see the
            module docstring); ``None`` drops only pairs that carry an unseen label themselves.

    Returns:
        ``(samples, report)``: every input image in order (unchanged ones are the same objects), with
        the offending pairs removed, and a :class:`FilterReport`.
    """
    from hoi_mllm.prompts import load_vocabulary

    if same_pair_iou is not None and not (isinstance(same_pair_iou, (int, float)) and 0 < same_pair_iou <= 1):
        raise ValueError(f"same_pair_iou={same_pair_iou!r}: must be in (0, 1] or None (off)")
    vocab = load_vocabulary(vocabulary)
    spec = vocab.split(split)
    unseen = frozenset(spec.unseen)
    verbs = frozenset(int(vocab.class_verbs[c]) for c in unseen) if spec.kind == "unseen_verb" else frozenset()
    before = count_samples(samples)
    out: list[HOISample] = []
    dropped_pairs = dropped_triplets = dropped_seen = overlap_pairs = overlap_triplets = emptied = 0
    for s in samples:
        drop = unseen_pair_mask(s, unseen, verbs)
        if not drop.any():
            out.append(s)
            continue
        for k in np.flatnonzero(drop):
            dropped_triplets += len(s.pair_verbs[k])
            dropped_seen += sum(c not in unseen and c >= 0 for c in s.pair_classes[k])
        if same_pair_iou is not None:
            near = same_pair_mask(s, drop, same_pair_iou)
            overlap = sum(len(s.pair_verbs[k]) for k in np.flatnonzero(near))
            overlap_pairs += int(near.sum())
            overlap_triplets += overlap
            dropped_triplets += overlap
            drop = drop | near
        dropped_pairs += int(drop.sum())
        emptied += bool(drop.all())
        out.append(drop_pairs(s, drop))
    after = count_samples(out)
    report = FilterReport(
        split=split, kind=spec.kind, unseen_classes=len(unseen), unseen_verbs=len(verbs), before=before, after=after,
        dropped_pairs=dropped_pairs, dropped_triplets=dropped_triplets, dropped_seen_triplets=dropped_seen,
        dropped_overlap_pairs=overlap_pairs, dropped_overlap_triplets=overlap_triplets, same_pair_iou=same_pair_iou,
        images_emptied=emptied, unseen_present_before=len(before.classes & unseen),
        unseen_present_after=len(after.classes & unseen), seen_classes=vocab.num_classes - len(unseen))
    return out, report
