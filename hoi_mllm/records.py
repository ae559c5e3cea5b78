"""Typed records that cross the boundaries: detections, human-object pairs, HOI triplets.

A detector hands over :class:`Detections` (boxes xyxy in pixels, scores, labels in a vocabulary's
object ids) and nothing else. Pair proposal turns them into :class:`Pairs`. The recogniser returns
:class:`HOITriplets` per image, which the predictions file (``hoi_mllm.predictions``) stores.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

Array = Any  # torch.Tensor or numpy.ndarray


def _is_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (none can exist before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch():
    """torch, imported on first use: reading and evaluating predictions never needs it."""
    import torch

    return torch


def _take(x: Array, index) -> Array:
    if isinstance(x, np.ndarray):
        if _is_tensor(index):
            index = index.cpu().numpy()
        out = x[index]
        return out[None] if np.ndim(out) < np.ndim(x) else out
    if isinstance(index, np.ndarray):
        index = _torch().from_numpy(index)
    if isinstance(index, int):
        index = slice(index, index + 1 if index != -1 else None)
    return x[index]


def _convert(x: Array, fn: str, *args) -> Array:
    if fn == "numpy":
        return x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x)
    if isinstance(x, np.ndarray):
        x = _torch().from_numpy(x)
    return getattr(x, fn)(*args)


class _ArrayRecord:
    """Shared behaviour: ``len``, indexing (int, slice, bool mask, index array), ``.cpu()``, ``.numpy()``, ``.to()``."""

    _array_fields: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(getattr(self, self._array_fields[0]).shape[0])

    def __getitem__(self, index):
        return replace(self, **{f: _take(getattr(self, f), index) for f in self._array_fields})

    def _map(self, fn: str, *args):
        return replace(self, **{f: _convert(getattr(self, f), fn, *args) for f in self._array_fields})

    def cpu(self):
        return self._map("cpu")

    def numpy(self):
        return self._map("numpy")

    def to(self, device):
        return self._map("to", device)


@dataclass
class Detections(_ArrayRecord):
    """Detections of one image.

    Attributes:
        boxes: ``[N, 4]`` float32, xyxy in pixels of the original image.
        scores: ``[N]`` float32 in [0, 1].
        labels: ``[N]`` int64 object ids of ``vocabulary``.
        image_size: ``(width, height)`` in pixels.
        vocabulary: name of the vocabulary the labels index (e.g. ``"hico-det"``), if known.
    """

    boxes: Array
    scores: Array
    labels: Array
    image_size: tuple[int, int]
    vocabulary: str | None = None
    _array_fields = ("boxes", "scores", "labels")

    def __post_init__(self):
        n = self.boxes.shape[0]
        if tuple(self.boxes.shape) != (n, 4):
            raise ValueError(f"Detections.boxes must be [N, 4], got {tuple(self.boxes.shape)}")
        if self.scores.shape[0] != n or self.labels.shape[0] != n:
            raise ValueError(
                f"Detections fields disagree in length: boxes {n}, scores {self.scores.shape[0]}, "
                f"labels {self.labels.shape[0]}"
            )
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @classmethod
    def create(cls, boxes, scores, labels, image_size, vocabulary: str | None = None) -> "Detections":
        """Build from lists or arrays, converting to float32 / int64 torch tensors."""
        torch = _torch()
        boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        return cls(
            boxes=boxes_t,
            scores=torch.as_tensor(np.asarray(scores, dtype=np.float32).reshape(-1)),
            labels=torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            image_size=tuple(image_size),
            vocabulary=vocabulary,
        )

    @classmethod
    def empty(cls, image_size, vocabulary: str | None = None) -> "Detections":
        return cls.create(np.zeros((0, 4)), [], [], image_size, vocabulary)

    @classmethod
    def cat(cls, items: Sequence["Detections"]) -> "Detections":
        if not items:
            raise ValueError("Detections.cat needs at least one Detections")
        first, torch = items[0], _torch()
        return replace(first, **{f: torch.cat([torch.as_tensor(getattr(d, f)) for d in items]) for f in cls._array_fields})

    def to_dict(self) -> dict:
        d = self.numpy()
        return {
            "image_size": list(self.image_size),
            "boxes": np.round(d.boxes.astype(np.float64), 2).tolist(),
            "scores": np.round(d.scores.astype(np.float64), 5).tolist(),
            "labels": d.labels.astype(int).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict, vocabulary: str | None = None) -> "Detections":
        return cls.create(data["boxes"], data["scores"], data["labels"], data["image_size"], vocabulary)


@dataclass
class Pairs(_ArrayRecord):
    """Human-object pairs of one image, indices into a :class:`Detections`.

    Attributes:
        human_index: ``[P]`` int64 rows of the detections that are the humans.
        object_index: ``[P]`` int64 rows that are the objects (a human for human-human pairs).
        human_boxes, object_boxes: ``[P, 4]`` float32 xyxy pixels.
        human_scores, object_scores: ``[P]`` float32 detector scores.
        object_labels: ``[P]`` int64 object ids.
        image_size: ``(width, height)``.
    """

    human_index: Array
    object_index: Array
    human_boxes: Array
    object_boxes: Array
    human_scores: Array
    object_scores: Array
    object_labels: Array
    image_size: tuple[int, int]
    _array_fields = ("human_index", "object_index", "human_boxes", "object_boxes", "human_scores",
                     "object_scores", "object_labels")

    @classmethod
    def from_detections(cls, dets: Detections, human_index, object_index) -> "Pairs":
        torch = _torch()
        h = torch.as_tensor(np.asarray(human_index, dtype=np.int64))
        o = torch.as_tensor(np.asarray(object_index, dtype=np.int64))
        boxes, scores, labels = (torch.as_tensor(x) for x in (dets.boxes, dets.scores, dets.labels))
        return cls(h, o, boxes[h], boxes[o], scores[h], scores[o], labels[o], dets.image_size)

    @classmethod
    def empty(cls, image_size) -> "Pairs":
        torch = _torch()
        z = torch.zeros(0, dtype=torch.int64)
        b = torch.zeros(0, 4)
        s = torch.zeros(0)
        return cls(z, z.clone(), b, b.clone(), s, s.clone(), z.clone(), tuple(image_size))


@dataclass
class HOITriplets(_ArrayRecord):
    """HOI triplets of one image: the prediction record the predictions file stores.

    Attributes:
        human_boxes, object_boxes: ``[T, 4]`` float xyxy pixels of the original image.
        objects: ``[T]`` int object ids, verbs: ``[T]`` int verb ids (of ``vocabulary``).
        scores: ``[T]`` float triplet scores in [0, 1].
        file_name: the image's file name (relative to the dataset's image root when known).
        image_size: ``(width, height)`` or ``None``.
        extra: extra per-image keys kept in the predictions file (e.g. timing).
    """

    human_boxes: Array
    object_boxes: Array
    objects: Array
    verbs: Array
    scores: Array
    file_name: str = ""
    image_size: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)
    _array_fields = ("human_boxes", "object_boxes", "objects", "verbs", "scores")

    @classmethod
    def create(cls, human_boxes, object_boxes, objects, verbs, scores, file_name: str = "",
               image_size=None, **extra) -> "HOITriplets":
        return cls(
            np.asarray(human_boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(object_boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(objects, dtype=np.int64).reshape(-1),
            np.asarray(verbs, dtype=np.int64).reshape(-1),
            np.asarray(scores, dtype=np.float64).reshape(-1),
            file_name, tuple(image_size) if image_size is not None else None, dict(extra),
        )

    @classmethod
    def empty(cls, file_name: str = "", image_size=None) -> "HOITriplets":
        return cls.create(np.zeros((0, 4)), np.zeros((0, 4)), [], [], [], file_name, image_size)

    def sorted(self) -> "HOITriplets":
        """Triplets by descending score (stable)."""
        order = np.argsort(-_convert(self.scores, "numpy"), kind="stable")
        return self[order]

    def top_k(self, k: int | None) -> "HOITriplets":
        s = self.sorted()
        return s if k is None or len(s) <= k else s[np.arange(k)]

    def to_json(self) -> dict:
        d = self.numpy()
        hb = np.round(d.human_boxes.astype(np.float64), 2).tolist()
        ob = np.round(d.object_boxes.astype(np.float64), 2).tolist()
        sc = np.round(d.scores.astype(np.float64), 6).tolist()
        hois = [
            {"human_box": h, "object_box": o, "object": int(obj), "verb": int(v), "score": s}
            for h, o, obj, v, s in zip(hb, ob, d.objects.tolist(), d.verbs.tolist(), sc)
        ]
        out = {"file_name": self.file_name, "hois": hois}
        if self.image_size is not None:
            out["size"] = list(self.image_size)
        out.update(self.extra)
        return out
