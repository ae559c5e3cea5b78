"""``ground-truth``: the annotated boxes of each image, score 1 (the oracle setting of HOI papers).

The detections of an image are its sample's annotated instances (``HOISample.boxes`` and
``labels``), with the duplicate rows of one physical box merged (``merge_iou``, default 0.5: class-wise
NMS as DA-HOI's ``merge_gt``; UPT-format HICO-DET files give every verb of a pair its own, slightly
different boxes, and unmerged they would pair into duplicate predictions that the evaluator counts
as false positives; ``merge_iou=none`` keeps every row), found by file name (see :class:`~hoi_mllm.detectors.base.FileIndex`). Build it from an
annotation file in any format the dataset loaders read (``annotations=PATH``) or from samples
already loaded (:meth:`GroundTruthDetector.from_samples`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.base import _NONE_WORDS as NONE_WORDS
from hoi_mllm.detectors.base import Detector, DetectorOptions, FileIndex
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)

MERGE_IOU = 0.5  # DA-HOI merge_gt


def instance_detections(sample: HOISample, image_size, vocabulary_name: str | None = None,
                        merge_iou: float | None = MERGE_IOU) -> Detections:
    """The annotated instances of a sample as detections (score 1), duplicates merged at ``merge_iou``
    (:func:`hoi_mllm.boxes.merge_instances`; ``None``: every instance)."""
    from hoi_mllm.boxes import merge_instances

    boxes, labels = np.asarray(sample.boxes).reshape(-1, 4), np.asarray(sample.labels).reshape(-1)
    if merge_iou is not None and len(labels) > 1:
        keep = np.flatnonzero(merge_instances(boxes, labels, merge_iou) == np.arange(len(labels)))
        boxes, labels = boxes[keep], labels[keep]
    return Detections.create(boxes, np.ones(len(labels)), labels, image_size, vocabulary_name)


def check_merge_iou(value, what: str) -> float | None:
    """``merge_iou`` as a number in (0, 1] or ``None``; else an error naming the allowed values."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{what} option merge_iou={value!r}: must be a number in (0, 1], or none to keep "
                         "every annotated row")
    return float(value)


NO_FILTER = {"score_threshold": 0.0, "nms_iou": None, "max_humans": None, "max_objects": None}


def index_samples(samples: Sequence[HOISample], vocabulary: Vocabulary, what: str) -> FileIndex[HOISample]:
    """A :class:`FileIndex` over samples, checking their labels are objects of ``vocabulary``."""
    for s in samples:
        if not isinstance(s, HOISample):
            raise ValueError(f"{what}: expected HOISample records, got {type(s).__name__}")
        labels = np.asarray(s.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= vocabulary.num_objects):
            raise ValueError(f"{what}: image {s.file_name!r} has object labels outside {vocabulary.name} "
                             f"(0..{vocabulary.num_objects - 1}); load it with the matching vocabulary")
    return FileIndex([(s.file_name, s) for s in samples], what)


def warn_size_mismatch(file_name: str, expected, actual: tuple[int, int]) -> None:
    if expected is not None and tuple(expected) != tuple(actual):
        log.warning("%s: image is %dx%d but its entry says %dx%d; boxes are kept in the entry's pixels",
                    file_name, actual[0], actual[1], expected[0], expected[1])


@register_detector("ground-truth", "gt", "oracle")
class GroundTruthDetector(Detector):
    """Annotated boxes as detections.

    Args:
        annotations: an annotation file (any format of ``hoi_mllm.data.load_annotations``) or a list
            of :class:`HOISample`.
        vocabulary: the labels' vocabulary; ``None``: the annotation file's, as the data loaders
            resolve it (a ``vocabulary.json`` beside the file, as the synthetic world has, else the
            format's built-in one), or ``hico-det`` for a list of samples.
        merge_iou: duplicate rows of one instance (same label, IoU above this) become one box, as
            DA-HOI's ``merge_gt`` does; ``None`` keeps every annotated row.
    """

    default_options = NO_FILTER

    def __init__(self, annotations: str | Path | Sequence[HOISample] | None = None, *,
                 merge_iou: float | None = MERGE_IOU,
                 vocabulary: str | Vocabulary | None = "hico-det", options: DetectorOptions | None = None):
        if annotations is None:
            raise ValueError(f"the {self.name or 'ground-truth'} detector needs annotations=PATH "
                             "(an annotation file of HICO-DET, V-COCO or the synthetic world)")
        if isinstance(annotations, (str, Path)):
            from hoi_mllm.data import read_annotations, resolve_vocabulary

            what = f"annotation file {annotations}"
            samples, report = read_annotations(annotations, vocabulary=vocabulary)
            vocabulary = resolve_vocabulary(annotations, report.format, vocabulary)
        else:
            what, samples = "the given annotations", list(annotations)
        super().__init__(vocabulary, options)
        self.merge_iou = check_merge_iou(merge_iou, self.name or "ground-truth")
        self.index = index_samples(samples, self.vocabulary, what)

    @classmethod
    def from_samples(cls, samples: Sequence[HOISample], vocabulary: str | Vocabulary = "hico-det",
                     options: DetectorOptions | None = None, **kwargs):
        """Build from samples already loaded (their labels are object ids of ``vocabulary``)."""
        return cls(list(samples), vocabulary=vocabulary, options=options, **kwargs)

    def sample_detections(self, sample: HOISample, image: Image.Image) -> Detections:
        """The detections of one matched sample: its instances (duplicates merged), score 1."""
        return instance_detections(sample, image.size, self.vocabulary.name, self.merge_iou)

    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        out = []
        for i, (image, name) in enumerate(zip(images, file_names)):
            _, sample = self.index.lookup(image, name, i)
            warn_size_mismatch(sample.file_name, sample.image_size, image.size)
            out.append(self.sample_detections(sample, image))
        return out
