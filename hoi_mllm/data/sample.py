"""The common annotation record every dataset loader returns, whatever the file format.

An :class:`HOISample` holds one image's annotation as distinct *instances* (boxes with object
labels; persons carry the vocabulary's ``human_object`` label) and annotated *pairs* between them,
each with its set of verbs (multi-label) and HOI classes. Keeping instances separate from pairs is
what two-stage matching needs: the human-object combinations that carry no annotation are the
pairs of instances that no annotated pair names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np


@dataclass
class HOISample:
    """One annotated image.

    Attributes:
        file_name: image file name, relative to the dataset's image root.
        image_size: ``(width, height)`` in pixels, or ``None`` when the file does not say.
        boxes: ``[B, 4]`` float32 xyxy pixels of the distinct annotated instances.
        labels: ``[B]`` int64 object ids (the vocabulary's ``human_object`` for persons).
        pair_human: ``[P]`` int64 row of ``boxes`` that is the human of each annotated pair.
        pair_object: ``[P]`` int64 row of ``boxes`` that is the object; ``-1`` where the pair has no
            object (V-COCO actions whose role object is absent).
        pair_verbs: ``P`` sorted tuples of verb ids (a pair can have several verbs).
        pair_classes: ``P`` tuples of HOI class ids aligned with ``pair_verbs`` (``-1`` where the
            (verb, object) combination is not a class of the vocabulary, e.g. a role-less V-COCO action).
        image_root: folder the file name is relative to, if known.
        image_id: position (or id) of the image in its source file.
        extra: format-specific facts (e.g. ``coco_image_id`` for V-COCO).
        image: the decoded PIL RGB image when a dataset loaded it (``HOIDataset``), else ``None``.
    """

    file_name: str
    image_size: tuple[int, int] | None
    boxes: np.ndarray
    labels: np.ndarray
    pair_human: np.ndarray
    pair_object: np.ndarray
    pair_verbs: list[tuple[int, ...]]
    pair_classes: list[tuple[int, ...]]
    image_root: Path | None = None
    image_id: int | None = None
    extra: dict = field(default_factory=dict)
    image: Any = field(default=None, repr=False, compare=False)

    # ---------------------------------------------------------------- derived views
    @property
    def num_pairs(self) -> int:
        return int(self.pair_human.shape[0])

    @property
    def num_triplets(self) -> int:
        return sum(len(v) for v in self.pair_verbs)

    @property
    def path(self) -> Path:
        return (self.image_root / self.file_name) if self.image_root is not None else Path(self.file_name)

    @property
    def human_boxes(self) -> np.ndarray:
        """``[P, 4]`` human box of each pair."""
        return self.boxes[self.pair_human]

    @property
    def object_boxes(self) -> np.ndarray:
        """``[P, 4]`` object box of each pair (NaN where the pair has no object)."""
        out = np.full((self.num_pairs, 4), np.nan, dtype=np.float32)
        has = self.pair_object >= 0
        out[has] = self.boxes[self.pair_object[has]]
        return out

    @property
    def object_labels(self) -> np.ndarray:
        """``[P]`` object id of each pair (-1 where the pair has no object)."""
        out = np.full(self.num_pairs, -1, dtype=np.int64)
        has = self.pair_object >= 0
        out[has] = self.labels[self.pair_object[has]]
        return out

    def verb_matrix(self, num_verbs: int) -> np.ndarray:
        """``[P, num_verbs]`` float32 multi-hot verb targets."""
        out = np.zeros((self.num_pairs, num_verbs), dtype=np.float32)
        for i, verbs in enumerate(self.pair_verbs):
            out[i, list(verbs)] = 1.0
        return out

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flatten pairs to triplets: ``(pair_index [T], verb [T], hoi_class [T])``."""
        idx = [i for i, v in enumerate(self.pair_verbs) for _ in v]
        verbs = [x for v in self.pair_verbs for x in v]
        classes = [x for c in self.pair_classes for x in c]
        return (np.asarray(idx, dtype=np.int64), np.asarray(verbs, dtype=np.int64), np.asarray(classes, dtype=np.int64))

    def load_image(self):
        """Open the image as RGB; a missing file raises ``FileNotFoundError`` naming its path, one PIL cannot read
        ``OSError``."""
        from hoi_mllm.image_file import open_file

        path = self.path
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path} (file_name {self.file_name!r})")
        with open_file(path) as im:
            im.load()
            rgb = im.convert("RGB")
        rgb.filename = str(path)  # keep the name for file-keyed detectors
        return rgb


@dataclass
class SampleCounts:
    """Counts over a list of samples: what ``hoi-mllm data stats`` and the load/filter reports print.

    Attributes:
        images: number of samples.
        images_with_pairs: samples with at least one annotated pair.
        instances: distinct annotated instances (boxes) over all samples.
        pairs: annotated human-object pairs (a pair may carry several verbs).
        triplets: (pair, verb) labels, i.e. the sum of the verbs of every pair.
        classes: distinct HOI class ids that occur (``-1``, a combination outside the vocabulary, excluded).
    """

    images: int = 0
    images_with_pairs: int = 0
    instances: int = 0
    pairs: int = 0
    triplets: int = 0
    classes: frozenset[int] = frozenset()

    def as_dict(self) -> dict:
        return {"images": self.images, "images_with_pairs": self.images_with_pairs,
                "images_without_pairs": self.images - self.images_with_pairs, "instances": self.instances,
                "pairs": self.pairs, "triplets": self.triplets, "classes_seen": len(self.classes)}


def count_samples(samples: Iterable[HOISample]) -> SampleCounts:
    """Images, images with pairs, instances, pairs, triplets and the set of classes present."""
    n = with_pairs = instances = pairs = triplets = 0
    classes: set[int] = set()
    for s in samples:
        n += 1
        with_pairs += s.num_pairs > 0
        instances += int(s.boxes.shape[0])
        pairs += s.num_pairs
        triplets += s.num_triplets
        for c in s.pair_classes:
            classes.update(c)
    classes.discard(-1)
    return SampleCounts(n, with_pairs, instances, pairs, triplets, frozenset(classes))
