"""``ground-truth``: the annotated boxes of each image, score 1 (the oracle setting of HOI papers).

The detections of an image are its sample's distinct annotated instances (``HOISample.boxes`` and
``labels``), found by file name (see :class:`~hoi_mllm.detectors.base.FileIndex`). Build it from an
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
from hoi_mllm.detectors.base import Detector, DetectorOptions, FileIndex
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)

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
    """

    default_options = NO_FILTER

    def __init__(self, annotations: str | Path | Sequence[HOISample] | None = None, *,
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
        self.index = index_samples(samples, self.vocabulary, what)

    @classmethod
    def from_samples(cls, samples: Sequence[HOISample], vocabulary: str | Vocabulary = "hico-det",
                     options: DetectorOptions | None = None, **kwargs):
        """Build from samples already loaded (their labels are object ids of ``vocabulary``)."""
        return cls(list(samples), vocabulary=vocabulary, options=options, **kwargs)

    def sample_detections(self, sample: HOISample, image: Image.Image) -> Detections:
        """The detections of one matched sample: its instances, score 1."""
        n = len(sample.labels)
        return Detections.create(sample.boxes, np.ones(n), sample.labels, image.size, self.vocabulary.name)

    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        out = []
        for i, (image, name) in enumerate(zip(images, file_names)):
            _, sample = self.index.lookup(image, name, i)
            warn_size_mismatch(sample.file_name, sample.image_size, image.size)
            out.append(self.sample_detections(sample, image))
        return out
