"""Baseline verb scorers that stand in for the recogniser on the same boxes, to isolate what it adds.

Each baseline has the recogniser's inference interface (``vocabulary`` and
``recognise(image, pairs) -> RecognitionOutput``), so :meth:`HOIPipeline.recognise_detections`
runs it unchanged: the same pairs, the same candidates (the vocabulary's prior classes of each
pair's object, :func:`~hoi_mllm.models.matching.candidate_lists`), the same post-processing
(``verb x human score x object score``; no interactiveness head, so that factor is 1) and the same
evaluation. Neither looks at the image.

- ``random``: a uniform random verb score in [0, 1) per candidate class. Seeded: the stream of a
  pair set depends only on ``(seed, the pairs' boxes and labels, the image size)``, so scores do
  not depend on call order and a resumed run gives the same numbers.
- ``prior``: the prior alone. For a candidate class (object ``o``, verb ``v``), the share of the
  *training* pairs with object ``o`` that are annotated with ``v`` (``n(o, v) / n(o)``, in [0, 1];
  a pair with several verbs counts for each). For a zero-shot split the training annotations are
  first filtered exactly as fine-tuning filters them (:func:`~hoi_mllm.data.filters.filter_zero_shot`),
  and the split's unseen classes are then set to zero, so no unseen label ever enters the prior.
  With ``smoothing = a > 0`` every candidate class of ``o`` gets ``(n(o, v) + a) / (n(o) + a K_o)``
  (``K_o`` the object's candidate classes), unseen ones ``a / (n(o) + a K_o)``: equal for all of an
  object's unseen classes, so it still carries no unseen label. With the default ``a = 0`` unseen
  classes score 0: their triplets rank last and are still evaluated (their AP is that of an
  unordered list, i.e. chance level).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.jitter import image_rng
from hoi_mllm.models.matching import PAD_LOGIT, RecognitionOutput, candidate_lists, pad_candidates
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import Pairs

BASELINES = ("random", "prior")


def pair_candidates(vocabulary: Vocabulary, pairs: Pairs) -> torch.Tensor:
    """``[P, C]`` int64 candidate classes of each pair (its object's prior classes by verb id), ``-1`` padded."""
    objects = torch.as_tensor(pairs.object_labels).long().reshape(-1).tolist()
    return pad_candidates(candidate_lists(vocabulary, objects))


def scores_to_output(candidates: torch.Tensor, scores: torch.Tensor) -> RecognitionOutput:
    """Candidate scores ``[P, C]`` in [0, 1] -> :class:`RecognitionOutput` (logit of the score, no interactiveness)."""
    valid = candidates >= 0
    scores = scores.float() * valid
    logits = torch.logit(scores.clamp(1e-6, 1 - 1e-6)).masked_fill(~valid, PAD_LOGIT)
    return RecognitionOutput(candidates, logits, scores, None)


class RandomBaseline:
    """Uniform random verb scores per candidate class (see the module docstring).

    Args:
        vocabulary: the vocabulary (name, path or object) of the pairs' object labels.
        seed: the baseline's seed.
    """

    name = "random"

    def __init__(self, vocabulary: str | Vocabulary, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"random baseline seed={seed!r}: must be an integer >= 0")
        self.vocabulary = load_vocabulary(vocabulary)
        self.seed = seed

    def identity(self) -> dict:
        """What determines this baseline's scores (for cache keys)."""
        return {"baseline": self.name, "seed": self.seed, "vocabulary": self.vocabulary.name}

    def recognise(self, image, pairs: Pairs) -> RecognitionOutput:
        """Scores of one image's pairs: ``candidates [P, C]``, ``verb_scores [P, C]`` uniform in [0, 1)."""
        candidates = pair_candidates(self.vocabulary, pairs)  # [P, C]
        digest = hashlib.sha256()
        for field in (pairs.human_boxes, pairs.object_boxes, pairs.object_labels):
            digest.update(np.ascontiguousarray(torch.as_tensor(field).cpu().numpy()).tobytes())
        digest.update(repr(tuple(pairs.image_size)).encode())
        rng = image_rng(self.seed, digest.hexdigest())
        scores = torch.from_numpy(rng.random(tuple(candidates.shape)))  # [P, C]
        return scores_to_output(candidates, scores)


def verb_object_prior(samples: Sequence[HOISample], vocabulary: str | Vocabulary, split: str | None = None,
                      smoothing: float = 0.0) -> np.ndarray:
    """The prior of every class from training annotations (see the module docstring).

    Args:
        samples: training annotations (labels, verbs and classes of ``vocabulary``).
        split: a zero-shot split: its unseen pairs are filtered out first and its unseen classes zeroed.
        smoothing: additive smoothing ``a >= 0`` over each object's candidate classes.
    Returns:
        ``[C]`` float64 in [0, 1]: ``n(o, v) / n(o)`` of class ``(o, v)``; 0 for an object never seen
        in a training pair (with ``a > 0``: ``1 / K_o``).
    """
    from hoi_mllm.data.filters import filter_zero_shot

    vocab = load_vocabulary(vocabulary)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not smoothing >= 0:
        raise ValueError(f"prior smoothing={smoothing!r}: must be a number >= 0")
    unseen = np.asarray(sorted(vocab.unseen_classes(split)), dtype=np.int64)  # an unknown split raises here
    if split:
        samples, _ = filter_zero_shot(samples, vocab, split)
    class_count = np.zeros(vocab.num_classes, dtype=np.float64)
    object_count = np.zeros(vocab.num_objects, dtype=np.float64)
    for s in samples:
        objects = s.object_labels  # [P], -1 where the pair has no object
        np.add.at(object_count, objects[objects >= 0], 1.0)
        for obj, verbs in zip(objects.tolist(), s.pair_verbs):
            for v in verbs if obj >= 0 else ():
                c = vocab.class_table[obj, v]
                if c >= 0:
                    class_count[c] += 1.0
    class_count[unseen] = 0.0  # belt and braces: filtered data has none, unfiltered data leaks none
    per_object = np.bincount(vocab.class_objects, minlength=vocab.num_objects).astype(np.float64)  # K_o
    denom = (object_count + smoothing * per_object)[vocab.class_objects]  # [C]
    return np.divide(class_count + smoothing, denom, out=np.zeros(vocab.num_classes), where=denom > 0)


class PriorBaseline:
    """The prior alone: each candidate class scores its training frequency given the object.

    Args:
        vocabulary: the vocabulary (name, path or object).
        prior: ``[C]`` class scores in [0, 1] (from :func:`verb_object_prior`).
        split: the zero-shot split the prior was built for (recorded; ``None`` for none).
        smoothing: the smoothing it was built with (recorded).
    """

    name = "prior"

    def __init__(self, vocabulary: str | Vocabulary, prior: np.ndarray, split: str | None = None,
                 smoothing: float = 0.0):
        self.vocabulary = load_vocabulary(vocabulary)
        prior = np.asarray(prior, dtype=np.float64).reshape(-1)
        if prior.shape[0] != self.vocabulary.num_classes:
            raise ValueError(f"prior has {prior.shape[0]} entries; the {self.vocabulary.name} vocabulary has "
                             f"{self.vocabulary.num_classes} classes")
        if not np.isfinite(prior).all() or (prior < 0).any() or (prior > 1).any():
            raise ValueError("prior scores must be finite and in [0, 1]")
        self.prior = prior
        self.split = split
        self.smoothing = float(smoothing)

    @classmethod
    def from_samples(cls, samples: Sequence[HOISample], vocabulary: str | Vocabulary, split: str | None = None,
                     smoothing: float = 0.0) -> "PriorBaseline":
        """Build from training annotations (filtered for ``split``; see :func:`verb_object_prior`)."""
        return cls(vocabulary, verb_object_prior(samples, vocabulary, split, smoothing), split, smoothing)

    def identity(self) -> dict:
        """What determines this baseline's scores (for cache keys)."""
        digest = hashlib.sha256(np.round(self.prior, 12).tobytes()).hexdigest()[:16]
        return {"baseline": self.name, "split": self.split, "smoothing": self.smoothing,
                "vocabulary": self.vocabulary.name, "prior_sha256": digest}

    def recognise(self, image, pairs: Pairs) -> RecognitionOutput:
        """Scores of one image's pairs: ``verb_scores [P, C]`` = the prior of each candidate class."""
        candidates = pair_candidates(self.vocabulary, pairs)  # [P, C]
        table = torch.from_numpy(self.prior)
        scores = torch.where(candidates >= 0, table[candidates.clamp(min=0)], torch.zeros(()))  # [P, C]
        return scores_to_output(candidates, scores)


def build_baselines(names: Sequence[str], vocabulary: str | Vocabulary,
                    train_samples: Sequence[HOISample] | None = None, split: str | None = None, seed: int = 0,
                    smoothing: float = 0.0) -> dict[str, RandomBaseline | PriorBaseline]:
    """Baselines by name (``random``, ``prior``), in the given order.

    Raises:
        ValueError: an unknown or repeated name (naming the allowed ones), or ``prior`` without
        training annotations.
    """
    out: dict[str, RandomBaseline | PriorBaseline] = {}
    for name in names:
        key = str(name).strip().lower()
        if key not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
        if key in out:
            raise ValueError(f"baseline {name!r} is listed twice")
        if key == "random":
            out[key] = RandomBaseline(vocabulary, seed)
        else:
            if train_samples is None:
                raise ValueError("the prior baseline needs training annotations (the verb frequency per object "
                                 "is counted on them): pass train_samples / --train-annotations")
            out[key] = PriorBaseline.from_samples(train_samples, vocabulary, split, smoothing)
    return out
