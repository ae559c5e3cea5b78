"""``file``: detections from a JSON file, for any external detector; and the writer of that file.

Format (what ``hoi-mllm detections`` writes, so its output can be read back)::

    {"format": "hoi-mllm/detections", "version": 1, "vocabulary": "hico-det",
     "images": [{"file_name": "HICO_test2015_00000001.jpg", "image_size": [640, 427],
                 "boxes": [[x1, y1, x2, y2], ...], "scores": [0.98, ...], "labels": [49, ...]},
                ...]}

- ``boxes``: xyxy in pixels of the original image (0-based, x2 >= x1, y2 >= y1, finite).
- ``scores``: one per box, in [0, 1].
- ``labels``: one per box, object ids of ``vocabulary`` (a built-in name such as ``hico-det`` or
  ``vcoco``, or a vocabulary file). Instead of ``labels``, ``label_names`` may give object names
  (``"person"``, ``"sports ball"``; COCO spellings are accepted); then the file's ``vocabulary`` may
  differ from the detector's, or be absent.
- ``image_size``: ``[width, height]``; optional (taken from the image when absent).
- ``file_name``: matched to the images by exact name, trailing path or unique base name.
Extra keys are allowed and ignored, except ``"complete": false`` (what ``hoi-mllm detections`` writes
when a run stopped part-way), which the ``file`` detector reports with a warning. An image that is not in the file is an error naming it; an
entry with no boxes is an image with nothing detected.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from hoi_mllm.detectors.base import Detector, DetectorOptions, FileIndex
from hoi_mllm.detectors.ground_truth import NO_FILTER, warn_size_mismatch
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.io import atomic_write_json, read_json
from hoi_mllm.prompts import Vocabulary, load_vocabulary
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)

FORMAT = "hoi-mllm/detections"
VERSION = 1


class DetectionsFileError(ValueError):
    """A detections file is malformed; the message names the file, the image and the field."""


def write_detections_file(path: str | Path, detections: Mapping[str, Detections] | Iterable[tuple[str, Detections]],
                          vocabulary: str, **meta) -> Path:
    """Write ``file_name -> Detections`` as a detections file, atomically; ``meta`` adds top-level keys."""
    items = detections.items() if isinstance(detections, Mapping) else detections
    images = [{"file_name": name, **d.to_dict()} for name, d in items]
    atomic_write_json(path, {"format": FORMAT, "version": VERSION, "vocabulary": vocabulary, **meta, "images": images})
    return Path(path)


def _numbers(entry: dict, key: str, where: str, shape_hint: str) -> np.ndarray:
    value = entry.get(key)
    if not isinstance(value, list):
        raise DetectionsFileError(f"{where}: '{key}' must be a list ({shape_hint}), got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DetectionsFileError(f"{where}: '{key}' must hold only numbers ({shape_hint})") from exc
    if not np.isfinite(arr).all():
        raise DetectionsFileError(f"{where}: '{key}' holds a non-finite value (NaN or infinity)")
    return arr


def parse_image_entry(entry, where: str, vocabulary: Vocabulary, numeric_labels_ok: bool) -> tuple[str, dict]:
    """Validate one image object; return ``(file_name, {"boxes", "scores", "labels", "image_size"})``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        raise DetectionsFileError(f"{where}: each image needs a 'file_name' string")
    name = entry["file_name"]
    where = f"{where} ({name!r})"
    boxes = _numbers(entry, "boxes", where, "[[x1, y1, x2, y2], ...]")
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionsFileError(f"{where}: 'boxes' must be a list of [x1, y1, x2, y2]")
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if bad.size:
        raise DetectionsFileError(f"{where}: box #{bad[0]} {boxes[bad[0]].tolist()} has x2 < x1 or y2 < y1 (xyxy expected)")
    scores = _numbers(entry, "scores", where, "one number in [0, 1] per box").reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise DetectionsFileError(f"{where}: {scores.shape[0]} scores for {boxes.shape[0]} boxes")
    bad = np.flatnonzero((scores < 0) | (scores > 1))
    if bad.size:
        raise DetectionsFileError(f"{where}: score #{bad[0]} is {scores[bad[0]]}; scores must be in [0, 1]")
    labels = _labels(entry, where, vocabulary, numeric_labels_ok)
    if labels.shape[0] != boxes.shape[0]:
        raise DetectionsFileError(f"{where}: {labels.shape[0]} labels for {boxes.shape[0]} boxes")
    size = entry.get("image_size")
    if size is not None:
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v) for v in size)):
            raise DetectionsFileError(f"{where}: 'image_size' must be [width, height] (positive numbers), got {size!r}")
        size = (int(size[0]), int(size[1]))
    return name, {"boxes": boxes, "scores": scores, "labels": labels, "image_size": size}


def _labels(entry: dict, where: str, vocabulary: Vocabulary, numeric_ok: bool) -> np.ndarray:
    if "labels" in entry and numeric_ok:
        raw = entry["labels"]
        if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise DetectionsFileError(f"{where}: 'labels' must be a list of integer object ids of {vocabulary.name}")
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
        bad = np.flatnonzero((labels < 0) | (labels >= vocabulary.num_objects))
        if bad.size:
            raise DetectionsFileError(f"{where}: label #{bad[0]} is {labels[bad[0]]}, outside the "
                                      f"{vocabulary.name} objects (0..{vocabulary.num_objects - 1})")
        return labels
    names = entry.get("label_names")
    if names is None:
        need = "'label_names'" if "labels" in entry else "'labels' (object ids) or 'label_names'"
        raise DetectionsFileError(f"{where}: missing {need}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DetectionsFileError(f"{where}: 'label_names' must be a list of object names")
    out = []
    for k, n in enumerate(names):
        idx = vocabulary.object_index_or_none(n)
        if idx is None:
            try:
                vocabulary.object_index(n)
            except ValueError as exc:
                raise DetectionsFileError(f"{where}: label_names #{k}: {exc}") from None
        out.append(idx)
    return np.asarray(out, dtype=np.int64).reshape(-1)


def read_detections_file(path: str | Path, vocabulary: str | Vocabulary = "hico-det") -> tuple[dict[str, dict], dict]:
    """Read and validate a detections file.

    Returns:
        ``(entries, header)``: ``file_name -> {"boxes" [N, 4], "scores" [N], "labels" [N], "image_size"}``
        (numpy; labels are object ids of ``vocabulary``) and the top-level keys other than ``images``.
    Raises:
        FileNotFoundError: no such file. DetectionsFileError: malformed, naming file, image and field.
    """
    vocab = load_vocabulary(vocabulary)
    origin = str(path)
    try:
        doc = read_json(path, what="detections file")
    except ValueError as exc:
        raise DetectionsFileError(str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DetectionsFileError(f"{origin}: 'format' is {got!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise DetectionsFileError(f"{origin}: version {doc.get('version')!r} not supported (supported: {VERSION})")
    file_vocab = doc.get("vocabulary")
    if file_vocab is not None and not isinstance(file_vocab, str):
        raise DetectionsFileError(f"{origin}: 'vocabulary' must be a name such as 'hico-det', got {file_vocab!r}")
    numeric_ok = file_vocab == vocab.name
    if not numeric_ok and file_vocab is not None:
        try:  # an alias ("hicodet") or a vocabulary file of the same name
            numeric_ok = load_vocabulary(file_vocab).name == vocab.name
        except (ValueError, OSError):
            numeric_ok = False
    images = doc.get("images")
    if not isinstance(images, list):
        raise DetectionsFileError(f"{origin}: 'images' must be a list of image objects")
    entries: dict[str, dict] = {}
    for i, entry in enumerate(images):
        where = f"{origin}: image #{i}"
        if not numeric_ok and isinstance(entry, dict) and "labels" in entry and "label_names" not in entry:
            raise DetectionsFileError(f"{where}: 'labels' are ids of vocabulary {file_vocab!r}, but the detector's "
                                      f"vocabulary is {vocab.name!r}; give 'label_names' instead")
        name, parsed = parse_image_entry(entry, where, vocab, numeric_ok)
        if name in entries:
            raise DetectionsFileError(f"{where}: file_name {name!r} appears twice")
        entries[name] = parsed
    return entries, {k: v for k, v in doc.items() if k != "images"}


@register_detector("file", "detections-file")
class FileDetector(Detector):
    """Detections read from a detections file (see the module docstring for the format).

    Args:
        path: the detections JSON file.
    """

    default_options = NO_FILTER

    def __init__(self, path: str | Path | None = None, *, vocabulary: str | Vocabulary = "hico-det",
                 options: DetectorOptions | None = None):
        super().__init__(vocabulary, options)
        if path is None:
            raise ValueError("the file detector needs path=DETECTIONS.json (format hoi-mllm/detections)")
        entries, self.header = read_detections_file(path, self.vocabulary)
        self.path = Path(path)
        if self.header.get("complete") is False:
            log.warning("%s is marked incomplete (its run stopped part-way): images it lacks will be skipped", path)
        self.index = FileIndex(entries, f"detections file {path}")

    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        out = []
        for i, (image, name) in enumerate(zip(images, file_names)):
            key, e = self.index.lookup(image, name, i)
            warn_size_mismatch(key, e["image_size"], image.size)
            out.append(Detections.create(e["boxes"], e["scores"], e["labels"], image.size, self.vocabulary.name))
        return out
