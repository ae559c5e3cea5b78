"""Predictions aligned to the ground truth: one flat array per field, validated once.

Every evaluator takes ground truth as ``list[HOISample]`` and predictions as
:class:`~hoi_mllm.predictions_reader.PredictionColumns` (what the CLI reads: the columns are used
as they are, no per-image copy), a :class:`~hoi_mllm.predictions.PredictionsFile`, or any iterable
of :class:`~hoi_mllm.records.HOITriplets`, in memory. :func:`flatten_predictions` looks each
predicted image up by file name, flattens its triplets and checks them: another vocabulary, an
unknown file name, an image given twice, a non-finite or reversed box (``x2 < x1``), an empty
object box where the dataset has none (HICO-DET), a score outside [0, 1], an object or verb id
outside the vocabulary are errors that name the image and the triplet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from hoi_mllm.data.sample import HOISample
from hoi_mllm.predictions import PredictionsError, PredictionsFile
from hoi_mllm.predictions_reader import PredictionColumns, triplet_problem
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


def check_vocabulary(predictions: PredictionsFile | PredictionColumns, vocabulary: Vocabulary) -> None:
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


def _unknown_error(unknown: list[str]) -> PredictionsError:
    shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    return PredictionsError(f"{len(unknown)} predicted image(s) are not in the ground truth: {shown} "
                            f"(wrong annotation file? to skip them, ignore unknown images)")


def _flatten_columns(cols: PredictionColumns, index: dict[str, int], unknown_images: str,
                     done: set[int]) -> tuple[FlatPredictions, list[str]]:
    """The columns of a predictions file aligned to the ground truth, without a per-image copy."""
    pos = np.fromiter((index.get(n, -1) for n in cols.file_names), np.int64, len(cols))  # [N] ground-truth image
    known = pos >= 0
    unknown = [n for n, k in zip(cols.file_names, known) if not k]
    if unknown and unknown_images == "error":
        raise _unknown_error(unknown)
    seen = np.sort(pos[known])
    twice = seen[1:][seen[1:] == seen[:-1]]
    again = [int(i) for i in seen if int(i) in done] if done else []
    if twice.size or again:
        names = list(index)
        raise PredictionsError(f"image {names[int(twice[0]) if twice.size else again[0]]!r} is predicted twice")
    done.update(seen.tolist())
    counts = cols.counts
    starts = cols.offsets[:-1]
    if known.all():
        rows = slice(None)
        image = np.repeat(pos, counts)
        position = np.arange(cols.num_triplets, dtype=np.int64) - np.repeat(starts, counts)
    else:
        rows = np.repeat(known, counts)
        image = np.repeat(pos[known], counts[known])
        position = (np.arange(cols.num_triplets, dtype=np.int64) - np.repeat(starts, counts))[rows]
    flat = FlatPredictions(image, position, cols.human_boxes[rows], cols.object_boxes[rows], cols.objects[rows],
                           cols.verbs[rows], cols.scores[rows])
    return flat, unknown


def flatten_predictions(images: PredictionColumns | PredictionsFile | Iterable[HOITriplets], index: dict[str, int],
                        vocabulary: Vocabulary, *, unknown_images: str = "error",
                        done: set[int] | None = None, empty_object_boxes: bool = False,
                        progress: bool = False) -> tuple[FlatPredictions, list[str]]:
    """Align predicted images to the ground truth by file name and flatten their triplets.

    Args:
        images: the columns of a predictions file, a predictions file (the vocabulary of either is
            checked) or per-image triplets.
        index: file name -> ground-truth position (:func:`image_index`).
        vocabulary: the vocabulary the ids must index.
        unknown_images: ``"error"`` (a file name not in the ground truth is an error naming it) or
            ``"ignore"`` (skip such images; their names are returned).
        done: ground-truth positions already seen (updated in place): an image given twice is an error.
        empty_object_boxes: allow an empty object box (all NaN, i.e. ``null`` in a file, or all
            zeros) and object id -1: a V-COCO prediction without a role object. Otherwise (HICO-DET)
            an empty object box is an error.
        progress: show a progress bar over images.
    Returns:
        ``(FlatPredictions, unknown_file_names)``.
    """
    check_unknown_images(unknown_images)
    done = set() if done is None else done
    if isinstance(images, PredictionColumns):
        check_vocabulary(images, vocabulary)
        flat, unknown = _flatten_columns(images, index, unknown_images, done)
        _validate(flat, index, vocabulary, empty_object_boxes)
        return flat, unknown
    if isinstance(images, PredictionsFile):
        check_vocabulary(images, vocabulary)
        images = images.images
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
        raise _unknown_error(unknown)
    if not parts:
        return FlatPredictions.empty(), unknown
    counts = np.array([len(t.scores) for _, t in parts], dtype=np.int64)
    column = lambda name, shape: np.concatenate(  # noqa: E731
        [np.asarray(getattr(t, name)).reshape(shape) for _, t in parts]).astype(
        np.int64 if name in ("objects", "verbs") else np.float64, copy=False)
    flat = FlatPredictions(
        image=np.repeat(np.array([i for i, _ in parts], dtype=np.int64), counts),
        position=np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts),
        human_boxes=column("human_boxes", (-1, 4)), object_boxes=column("object_boxes", (-1, 4)),
        objects=column("objects", (-1,)), verbs=column("verbs", (-1,)), scores=column("scores", (-1,)),
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
    problem = triplet_problem(flat.human_boxes, flat.object_boxes, flat.scores, empty_object_boxes)
    if problem is not None:
        fail(*problem)
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
    evaluator). A pair without an object gets an all-zero object box (V-COCO's "no role object"), and
    so does every role-less case: a person doing an action (``Vocabulary.verb_action_ids``) with no
    object for one of its roles, e.g. listed for ``eat obj`` only, gets an ``eat instr`` triplet
    with an empty role box.
    """
    from hoi_mllm.prompts.vocabulary import load_vocabulary

    vocab = load_vocabulary(vocabulary)
    verb_action, _ = vocab.verb_action_ids
    roles_of = {int(a): np.flatnonzero(verb_action == a).tolist() for a in np.unique(verb_action)}
    images = []
    for s in samples:
        pair, verbs, _classes = s.triplets()  # [t]
        boxes = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        has = s.pair_object[pair] >= 0
        obj_boxes = np.zeros((pair.shape[0], 4))
        obj_boxes[has] = boxes[s.pair_object[pair][has]]
        objects = np.where(has, np.asarray(s.labels)[np.maximum(s.pair_object[pair], 0)], -1) if pair.size else pair
        humans = s.pair_human[pair]
        listed = set(zip(humans.tolist(), verbs.tolist()))
        missing = sorted({(h, r) for h, v in listed for r in roles_of[int(verb_action[v])] if (h, r) not in listed})
        hb = np.concatenate([boxes[humans], boxes[[h for h, _ in missing]].reshape(-1, 4)])
        images.append(HOITriplets.create(hb, np.concatenate([obj_boxes, np.zeros((len(missing), 4))]),
                                         np.r_[objects, np.full(len(missing), -1)], np.r_[verbs, [r for _, r in missing]],
                                         np.full(hb.shape[0], score), s.file_name, s.image_size))
    return PredictionsFile(vocab.name, images)
