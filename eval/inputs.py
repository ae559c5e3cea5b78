"""Predictions aligned to the ground truth: one flat array per field, validated once.

Every evaluator takes ground truth as ``list[HOISample]`` and predictions as a
:class:`~hoi_mllm.predictions.PredictionsFile` (or any iterable of
:class:`~hoi_mllm.records.HOITriplets`), in memory. :func:`flatten_predictions` looks each
predicted image up by file name, concatenates its triplets and checks them: another vocabulary,
an unknown file name, an image given twice, a non-finite box, a score outside [0, 1], an object
or verb id outside the vocabulary are errors that name the image and the triplet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from hoi_mllm.data.sample import HOISample
from hoi_mllm.predictions import PredictionsError, PredictionsFile
from hoi_mllm.prompts.vocabulary import ALIASES, Vocabulary
from hoi_mllm.records import HOITriplets

UNKNOWN_IMAGES = ("error", "ignore")


@dataclass
class FlatPredictions:
    """The triplets of many images as aligned arrays (``T`` triplets in all).

    Attributes:
        image: ``[T]`` int64 index of the triplet's image in the ground-truth list.
        position: ``[T]`` int64 index of the triplet among its image's triplets (file order).
        human_boxes, object_boxes: ``[T, 4]`` float64 xyxy pixels.
        objects, verbs: ``[T]`` int64 ids of the vocabulary.
        scores: ``[T]`` float64 in [0, 1].
    """

    image: np.ndarray
    position: np.ndarray
    human_boxes: np.ndarray
    object_boxes: np.ndarray
    objects: np.ndarray
    verbs: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def subset(self, keep: np.ndarray) -> "FlatPredictions":
        """The triplets where ``keep [T]`` (bool mask or index array) selects."""
        return FlatPredictions(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @classmethod
    def empty(cls) -> "FlatPredictions":
        z = np.zeros(0, dtype=np.int64)
        b = np.zeros((0, 4))
        return cls(z, z.copy(), b, b.copy(), z.copy(), z.copy(), np.zeros(0))


def check_unknown_images(unknown_images: str) -> None:
    if unknown_images not in UNKNOWN_IMAGES:
        raise ValueError(f"unknown_images={unknown_images!r}; allowed: {', '.join(UNKNOWN_IMAGES)}")


def check_options(unknown_images: str, iou_threshold: float) -> None:
    """Validate the options every evaluator config shares; raise ``ValueError`` naming the allowed values."""
    check_unknown_images(unknown_images)
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")


def canonical_vocabulary_name(name: str) -> str:
    key = str(name).lower()
    return ALIASES.get(key, key)


def check_vocabulary(predictions: PredictionsFile, vocabulary: Vocabulary) -> None:
    """Raise ``PredictionsError`` when a predictions file was made for another vocabulary."""
    got, want = canonical_vocabulary_name(predictions.vocabulary), canonical_vocabulary_name(vocabulary.name)
    if got != want:
        raise PredictionsError(
            f"the predictions are for vocabulary {predictions.vocabulary!r}, but this evaluation needs "
            f"{vocabulary.name!r} (object and verb ids would mean other things)"
        )


def image_index(samples: Sequence[HOISample]) -> dict[str, int]:
    """file name -> position in ``samples``; a file name listed twice is an error."""
    index: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.file_name in index:
            raise ValueError(f"the ground truth lists image {s.file_name!r} twice (#{index[s.file_name]} and #{i})")
        index[s.file_name] = i
    return index


def _as_numpy(triplets: HOITriplets) -> HOITriplets:
    arrays = (triplets.human_boxes, triplets.object_boxes, triplets.objects, triplets.verbs, triplets.scores)
    return triplets if all(isinstance(a, np.ndarray) for a in arrays) else triplets.numpy()


def _fail(names: list[str], flat_image: np.ndarray, flat_pos: np.ndarray, bad: np.ndarray, what: str) -> None:
    k = int(np.flatnonzero(bad)[0])
    raise PredictionsError(
        f"image {names[flat_image[k]]!r}: hoi #{int(flat_pos[k])} {what} "
        f"({int(bad.sum())} such triplet(s) in all)"
    )


def flatten_predictions(images: PredictionsFile | Iterable[HOITriplets], index: dict[str, int],
                        vocabulary: Vocabulary, *, unknown_images: str = "error",
                        done: set[int] | None = None, empty_object_boxes: bool = False,
                        progress: bool = False) -> tuple[FlatPredictions, list[str]]:
    """Align predicted images to the ground truth by file name and flatten their triplets.

    Args:
        images: a predictions file (its vocabulary is checked) or per-image triplets.
        index: file name -> ground-truth position (:func:`image_index`).
        vocabulary: the vocabulary the ids must index.
        unknown_images: ``"error"`` (a file name not in the ground truth is an error naming it) or
            ``"ignore"`` (skip such images; their names are returned).
        done: ground-truth positions already seen (updated in place): an image given twice is an error.
        empty_object_boxes: allow an all-NaN object box and object id -1 (a V-COCO prediction without
            a role object); otherwise object boxes must be finite and ids in range.
        progress: show a progress bar over images.
    Returns:
        ``(FlatPredictions, unknown_file_names)``.
    """
    check_unknown_images(unknown_images)
    if isinstance(images, PredictionsFile):
        check_vocabulary(images, vocabulary)
        images = images.images
    done = set() if done is None else done
    unknown: list[str] = []
    parts: list[tuple[int, HOITriplets]] = []
    for im in tqdm(images, desc="predictions", unit="image", disable=not progress, leave=False):
        i = index.get(im.file_name)
        if i is None:
            unknown.append(im.file_name)
            continue
        if i in done:
            raise PredictionsError(f"image {im.file_name!r} is predicted twice")
        done.add(i)
        parts.append((i, _as_numpy(im)))
    if unknown and unknown_images == "error":
        shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise PredictionsError(
            f"{len(unknown)} predicted image(s) are not in the ground truth: {shown} "
            f"(wrong annotation file? to skip them, ignore unknown images)"
        )
    if not parts:
        return FlatPredictions.empty(), unknown
    counts = np.array([len(t.scores) for _, t in parts], dtype=np.int64)
    flat = FlatPredictions(
        image=np.repeat(np.array([i for i, _ in parts], dtype=np.int64), counts),
        position=np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts),
        human_boxes=np.concatenate([np.asarray(t.human_boxes, dtype=np.float64).reshape(-1, 4) for _, t in parts]),
        object_boxes=np.concatenate([np.asarray(t.object_boxes, dtype=np.float64).reshape(-1, 4) for _, t in parts]),
        objects=np.concatenate([np.asarray(t.objects, dtype=np.int64).reshape(-1) for _, t in parts]),
        verbs=np.concatenate([np.asarray(t.verbs, dtype=np.int64).reshape(-1) for _, t in parts]),
        scores=np.concatenate([np.asarray(t.scores, dtype=np.float64).reshape(-1) for _, t in parts]),
    )
    _validate(flat, index, vocabulary, empty_object_boxes)
    return flat, unknown


def _validate(flat: FlatPredictions, index: dict[str, int], vocabulary: Vocabulary, empty_object_boxes: bool) -> None:
    names = list(index)  # dicts keep insertion order: names[i] is image i
    n = len(flat)
    for field_name in ("human_boxes", "object_boxes", "objects", "verbs", "scores"):
        if getattr(flat, field_name).shape[0] != n:
            raise PredictionsError(f"predicted triplets disagree in length: {field_name} has "
                                   f"{getattr(flat, field_name).shape[0]} rows for {n} scores")
    fail = lambda bad, what: _fail(names, flat.image, flat.position, bad, what)  # noqa: E731
    bad = ~np.isfinite(flat.human_boxes).all(1)
    if bad.any():
        fail(bad, "has a non-finite human_box")
    finite_o = np.isfinite(flat.object_boxes)
    bad = ~finite_o.all(1) & ~(empty_object_boxes & np.isnan(flat.object_boxes).all(1))
    if bad.any():
        fail(bad, "has a non-finite object_box" + (" (an absent role object is all zeros or all NaN)"
                                                     if empty_object_boxes else ""))
    bad = ~np.isfinite(flat.scores) | (flat.scores < 0) | (flat.scores > 1)
    if bad.any():
        fail(bad, f"has score {float(flat.scores[np.flatnonzero(bad)[0]])!r}; scores must be finite, in [0, 1]")
    lowest = -1 if empty_object_boxes else 0
    bad = (flat.objects < lowest) | (flat.objects >= vocabulary.num_objects)
    if bad.any():
        fail(bad, f"has object {int(flat.objects[np.flatnonzero(bad)[0]])}, outside the {vocabulary.name} "
                  f"vocabulary ({lowest}..{vocabulary.num_objects - 1}); predictions for another vocabulary?")
    bad = (flat.verbs < 0) | (flat.verbs >= vocabulary.num_verbs)
    if bad.any():
        fail(bad, f"has verb {int(flat.verbs[np.flatnonzero(bad)[0]])}, outside the {vocabulary.name} "
                  f"vocabulary (0..{vocabulary.num_verbs - 1}); predictions for another vocabulary?")


def ground_truth_predictions(samples: Sequence[HOISample], vocabulary: Vocabulary | str, score: float = 1.0) -> PredictionsFile:
    """The ground truth as a predictions file: one triplet per annotated (pair, verb), all scoring ``score``.

    An oracle that every protocol must score 100 on (a sanity check of an annotation file or an
    evaluator); a pair without an object gets an all-zero object box (V-COCO's "no role object").
    """
    name = vocabulary if isinstance(vocabulary, str) else vocabulary.name
    images = []
    for s in samples:
        pair, verbs, _classes = s.triplets()  # [t]
        boxes = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        has = s.pair_object[pair] >= 0
        obj_boxes = np.zeros((pair.shape[0], 4))
        obj_boxes[has] = boxes[s.pair_object[pair][has]]
        objects = np.where(has, np.asarray(s.labels)[np.maximum(s.pair_object[pair], 0)], -1) if pair.size else pair
        images.append(HOITriplets.create(boxes[s.pair_human[pair]], obj_boxes, objects, verbs,
                                         np.full(pair.shape[0], score), s.file_name, s.image_size))
    return PredictionsFile(name, images)
