"""Samples as a torch ``Dataset`` and as a Hugging Face ``datasets.Dataset`` (images decoded lazily)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from hoi_mllm.data.sample import HOISample


class HOIDataset(Dataset):
    """A torch dataset over :class:`HOISample` records.

    ``dataset[i]`` is a copy of sample ``i`` whose ``image`` is the PIL RGB image (opened on access;
    a missing file raises ``FileNotFoundError`` with its full path), or ``None`` with
    ``load_images=False``. ``transform``, if given, maps that sample to whatever the caller trains on.
    Use :func:`collate_samples` as the ``DataLoader``'s ``collate_fn`` (samples hold ragged arrays).
    """

    def __init__(self, samples: Sequence[HOISample], load_images: bool = True,
                 transform: Callable[[HOISample], object] | None = None, vocabulary=None):
        self.samples = list(samples)
        self.load_images = load_images
        self.transform = transform
        self.vocabulary = vocabulary

    @classmethod
    def from_file(cls, path: str | Path, vocabulary=None, image_root: str | Path | None = None,
                  split: str | None = None, repair_boxes: bool = False, **kwargs) -> "HOIDataset":
        """Load an annotation file (see :func:`hoi_mllm.data.read_annotations`); with ``split``, apply the
        zero-shot training filter of that split (:func:`hoi_mllm.data.filter_zero_shot`)."""
        from hoi_mllm.data import filter_zero_shot, read_annotations, resolve_vocabulary

        samples, report = read_annotations(path, vocabulary, image_root, repair_boxes)
        vocab = resolve_vocabulary(path, report.format, vocabulary)
        if split:
            samples, _ = filter_zero_shot(samples, vocab, split)
        return cls(samples, vocabulary=vocab, **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        if self.load_images:
            sample = dataclasses.replace(sample, image=sample.load_image())
        return self.transform(sample) if self.transform is not None else sample


def collate_samples(batch: list) -> list:
    """``DataLoader`` collate function that keeps a batch as the list of its samples."""
    return list(batch)


def hf_features():
    """The ``datasets.Features`` of :func:`to_hf_dataset` (boxes xyxy pixels, ids 0-based)."""
    from datasets import Features, Image, List, Value

    return Features({
        "image": Image(decode=True),
        "file_name": Value("string"),
        "image_id": Value("int64"),
        "width": Value("int32"),   # -1 when the file gives no size
        "height": Value("int32"),
        "boxes": List(List(Value("float32"), length=4)),  # [B, 4]
        "labels": List(Value("int64")),                   # [B]
        "pair_human": List(Value("int64")),               # [P]
        "pair_object": List(Value("int64")),              # [P], -1: no object
        "pair_verbs": List(List(Value("int64"))),         # P lists of verb ids
        "pair_classes": List(List(Value("int64"))),       # P lists of class ids (-1: not a class)
    })


def to_hf_dataset(samples: Sequence[HOISample] | HOIDataset):
    """A Hugging Face ``datasets.Dataset`` with one row per sample.

    Column ``image`` is an ``Image(decode=True)`` feature built from the image paths: nothing is read
    when the dataset is built; an image is opened and decoded when its row is accessed. The other
    columns hold the annotation (see :func:`hf_features`).
    """
    from datasets import Dataset

    if isinstance(samples, HOIDataset):
        samples = samples.samples
    cols: dict[str, list] = {k: [] for k in hf_features()}
    for s in samples:
        w, h = s.image_size if s.image_size is not None else (-1, -1)
        cols["image"].append({"path": str(s.path), "bytes": None})
        cols["file_name"].append(s.file_name)
        cols["image_id"].append(-1 if s.image_id is None else int(s.image_id))
        cols["width"].append(int(w))
        cols["height"].append(int(h))
        cols["boxes"].append(np.asarray(s.boxes, dtype=np.float32).reshape(-1, 4).tolist())
        cols["labels"].append(s.labels.tolist())
        cols["pair_human"].append(s.pair_human.tolist())
        cols["pair_object"].append(s.pair_object.tolist())
        cols["pair_verbs"].append([list(v) for v in s.pair_verbs])
        cols["pair_classes"].append([list(c) for c in s.pair_classes])
    return Dataset.from_dict(cols, features=hf_features())
