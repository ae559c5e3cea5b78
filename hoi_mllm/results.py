"""What :class:`~hoi_mllm.pipeline.HOIPipeline` returns for an image: triplets with names.

``result.boxes`` (human and object boxes), ``result.verbs`` / ``result.objects`` (ids of the
vocabulary, as in a predictions file), ``result.verb_names`` / ``result.object_names``,
``result.phrases`` (``"ride bicycle"``), ``result.scores``; ``result.plot()`` draws them on the
image, ``result.to_json()`` is the image's entry of a predictions file (plus names),
``result.save(path)`` writes a picture (``.jpg``, ``.png``) or that JSON (``.json``), atomically.
Every attribute of the underlying :class:`~hoi_mllm.records.HOITriplets` (``human_boxes``,
``object_boxes``, ``file_name``, ...) reads through.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hoi_mllm.records import HOITriplets

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class HOIResult:
    """The HOI triplets of one image, best first, with the vocabulary to name them and the image to draw on."""

    def __init__(self, triplets: HOITriplets, vocabulary, image=None):
        self.triplets = triplets.numpy()
        self.vocabulary = vocabulary
        self.image = image

    def __getattr__(self, name: str):
        if name in ("triplets", "vocabulary", "image"):  # not yet set (during unpickling)
            raise AttributeError(name)
        return getattr(self.triplets, name)

    def __len__(self) -> int:
        return len(self.triplets)

    def __repr__(self) -> str:
        top = ", ".join(f"{p} {s:.2f}" for p, s in zip(self.phrases[:3], self.scores[:3]))
        return f"HOIResult({self.file_name!r}, {len(self)} triplets{': ' + top if top else ''})"

    @property
    def boxes(self) -> np.ndarray:
        """``[T, 2, 4]``: per triplet the human box and the object box (xyxy pixels of the image shown)."""
        return np.stack([self.triplets.human_boxes, self.triplets.object_boxes], axis=1).reshape(-1, 2, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.asarray(self.triplets.scores)

    @property
    def verb_names(self) -> list[str]:
        from hoi_mllm.visualize import verb_label

        return [verb_label(self.vocabulary, int(v)) for v in self.triplets.verbs]

    @property
    def object_names(self) -> list[str]:
        return [self.vocabulary.object_name(int(o)) for o in self.triplets.objects]

    @property
    def phrases(self) -> list[str]:
        """The verb-object phrase of each triplet (the vocabulary's own phrase when it has one)."""
        out = []
        for v, o in zip(self.triplets.verbs.tolist(), self.triplets.objects.tolist()):
            c = self.vocabulary.class_of(int(v), int(o))
            out.append(self.vocabulary.phrase(c) if c is not None else f"{self.vocabulary.verb_name(v)} "
                       f"{self.vocabulary.object_name(o)}")
        return out

    def to_json(self) -> dict:
        """The predictions-file entry of this image, each triplet with its ``phrase`` added."""
        doc = self.triplets.to_json()
        for hoi, phrase in zip(doc["hois"], self.phrases):
            hoi["phrase"] = phrase
        doc["vocabulary"] = self.vocabulary.name
        return doc

    def plot(self, top_k: int | None = 10, image=None):
        """A copy of the image with the ``top_k`` best triplets drawn (a PIL image)."""
        from hoi_mllm.visualize import draw_triplets

        image = image if image is not None else self.image
        if image is None:
            raise ValueError("this result holds no image: pass image=... to plot()")
        return draw_triplets(image, self.triplets, self.vocabulary, top_k=top_k)

    def save(self, path: str | Path, top_k: int | None = 10) -> Path:
        """Write the picture (``.jpg``, ``.png``, ...) or the JSON (``.json``) atomically; returns the path."""
        from hoi_mllm.io import atomic_path, atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            atomic_write_text(path, json.dumps(self.to_json(), allow_nan=False))
        elif suffix in PICTURE_SUFFIXES:
            with atomic_path(path) as tmp:
                self.plot(top_k).save(tmp, format="JPEG" if suffix in (".jpg", ".jpeg") else suffix[1:].upper())
        else:
            raise ValueError(f"cannot save a result as {path.name!r}; allowed suffixes: .json, "
                             + ", ".join(PICTURE_SUFFIXES))
        return path
