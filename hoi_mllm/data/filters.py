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

and it departs from GEN-VLKT on purpose in one point: images are kept even when no pair is left,
and every instance box stays, so the unannotated human-object combinations remain for EoID's
two-stage matching (images left without pairs are counted in the report).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hoi_mllm.data.sample import HOISample, SampleCounts, count_samples


@dataclass
class FilterReport:
    """Counts before and after a zero-shot filter.

    Attributes:
        split / kind: the split name and its kind (``unseen_combination``, ``unseen_verb``, ``unseen_object``).
        unseen_classes: classes the split holds out; ``unseen_verbs``: verbs dropped whole (verb splits).
        before / after: images, images with pairs, instances, pairs, triplets, classes present.
        dropped_pairs / dropped_triplets: what the filter removed.
        dropped_seen_triplets: triplets of seen classes removed because their pair also had an unseen one.
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
                    "dropped_seen_triplets": self.dropped_seen_triplets, "images_emptied": self.images_emptied,
                    "unseen_present_before": self.unseen_present_before,
                    "unseen_present_after": self.unseen_present_after})
        return out


def unseen_pair_mask(sample: HOISample, unseen_classes: frozenset[int], unseen_verbs: frozenset[int]) -> np.ndarray:
    """``[P]`` bool: pairs with an unseen class or an unseen verb among their labels."""
    return np.array([any(c in unseen_classes for c in cls) or any(v in unseen_verbs for v in verbs)
                     for cls, verbs in zip(sample.pair_classes, sample.pair_verbs)], dtype=bool)


def drop_pairs(sample: HOISample, drop: np.ndarray) -> HOISample:
    """Copy of ``sample`` without the pairs where ``drop [P]`` is True; instances are kept."""
    keep = np.flatnonzero(~drop)
    return dataclasses.replace(
        sample, pair_human=sample.pair_human[keep], pair_object=sample.pair_object[keep],
        pair_verbs=[sample.pair_verbs[k] for k in keep], pair_classes=[sample.pair_classes[k] for k in keep],
        extra=dict(sample.extra))


def filter_zero_shot(samples: Sequence[HOISample], vocabulary, split: str) -> tuple[list[HOISample], FilterReport]:
    """Remove the unseen interactions of ``split`` from training samples (rule in the module docstring).

    Args:
        samples: annotated training images.
        vocabulary: :class:`~hoi_mllm.prompts.Vocabulary` or its name/path; it defines the split.
        split: a split name of the vocabulary (unknown names raise, listing the allowed ones).

    Returns:
        ``(samples, report)``: every input image in order (unchanged ones are the same objects), with
        the offending pairs removed, and a :class:`FilterReport`.
    """
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(vocabulary)
    spec = vocab.split(split)
    unseen = frozenset(spec.unseen)
    verbs = frozenset(int(vocab.class_verbs[c]) for c in unseen) if spec.kind == "unseen_verb" else frozenset()
    before = count_samples(samples)
    out: list[HOISample] = []
    dropped_pairs = dropped_triplets = dropped_seen = emptied = 0
    for s in samples:
        drop = unseen_pair_mask(s, unseen, verbs)
        if not drop.any():
            out.append(s)
            continue
        for k in np.flatnonzero(drop):
            dropped_triplets += len(s.pair_verbs[k])
            dropped_seen += sum(c not in unseen and c >= 0 for c in s.pair_classes[k])
        dropped_pairs += int(drop.sum())
        emptied += bool(drop.all())
        out.append(drop_pairs(s, drop))
    after = count_samples(out)
    report = FilterReport(
        split=split, kind=spec.kind, unseen_classes=len(unseen), unseen_verbs=len(verbs), before=before, after=after,
        dropped_pairs=dropped_pairs, dropped_triplets=dropped_triplets, dropped_seen_triplets=dropped_seen,
        images_emptied=emptied, unseen_present_before=len(before.classes & unseen),
        unseen_present_after=len(after.classes & unseen), seen_classes=vocab.num_classes - len(unseen))
    return out, report
