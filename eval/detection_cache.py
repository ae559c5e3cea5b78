"""Resumable per-detector caches for cross-detector runs: detections and predictions, image by image.

A detector's detections are keyed by what determines them: :func:`detector_identity` (the adapter,
its options except ``device`` / ``batch_size``, the size and modification time of any file an
option names, the vocabulary, and a digest of the annotations handed to ``ground-truth`` /
``jitter``) hashed by :func:`identity_key`; and, per image, by the image file's size and
modification time (:func:`image_fingerprint`). A cache folder holds one detector key.

:class:`DetectionCache` keeps ``detections.jsonl``: a header line (the ``hoi-mllm/detections``
header plus ``key``), then one image entry a line in the ``file`` detector's entry format (plus
``image``, the fingerprint, and ``detector_ms``), appended and flushed image by image; a torn last
line is dropped on reopening. :meth:`DetectionCache.finish` writes ``detections.json``, the complete
``file``-format document, atomically (readable by ``--detector file:path=...``).
Predictions are :class:`~hoi_mllm.predictions.PredictionsWriter` files opened with
:func:`open_predictions`, which discards a file written for another key and the images whose
fingerprint changed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.file import FORMAT, VERSION, DetectionsFileError, parse_image_entry, write_detections_file
from hoi_mllm.predictions import PredictionsError, PredictionsWriter
from hoi_mllm.prompts.vocabulary import Vocabulary
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)

RESULT_NEUTRAL_OPTIONS = ("device", "batch_size")  # options that do not change the detections


def identity_key(identity: Mapping) -> str:
    """A stable hex key (sha256) of a JSON-able identity."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_stamp(path: str | Path) -> str:
    """``"<bytes>:<mtime_ns>"`` of a file: changes when the file is rewritten."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def image_fingerprint(sample: HOISample) -> str:
    """The fingerprint of a sample's image file (``"memory"`` for an image held in memory only)."""
    return file_stamp(sample.path) if sample.path.is_file() else "memory"


def samples_digest(samples: Iterable[HOISample]) -> str:
    """A digest of the annotated instances (file names, boxes, labels) of samples."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.file_name.encode("utf-8") + b"\0")
        h.update(np.ascontiguousarray(s.boxes, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(s.labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def detector_identity(name: str, options: Mapping, vocabulary: Vocabulary, annotations: str | None = None) -> dict:
    """What determines a detector's output: adapter name, options, files they name, vocabulary, annotations digest."""
    opts = {k: v for k, v in sorted(options.items()) if k not in RESULT_NEUTRAL_OPTIONS}
    files = {k: file_stamp(v) for k, v in opts.items() if isinstance(v, (str, Path)) and Path(v).is_file()}
    return {"detector": name, "options": {k: (v if isinstance(v, (int, float, bool, type(None))) else str(v))
                                          for k, v in opts.items()},
            "files": files, "vocabulary": vocabulary.name, "annotations": annotations}


class DetectionCache:
    """Detections of one detector key, appended image by image to ``folder/detections.jsonl``.

    A :class:`~hoi_mllm.jsonl_log.JsonlLog` (torn last line dropped, resumable).

    Args:
        folder: the detector's cache folder.
        key: its :func:`identity_key`; a file written for another key is discarded.
        vocabulary: labels are object ids of it.
        header: extra header keys (e.g. the spec).
        path: the log file (default ``folder/detections.jsonl``; a process of a sharded run keeps its own).
        writable: False: read the log only (one another process owns).
        known: entries held in another log (e.g. the main log, read by a shard): :meth:`get` finds
            them, they are never written here.
    """

    def __init__(self, folder: str | Path, key: str, vocabulary: Vocabulary, header: Mapping | None = None, *,
                 path: str | Path | None = None, writable: bool = True, known: Mapping | None = None):
        from hoi_mllm.jsonl_log import JsonlLog

        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / "detections.jsonl"
        self.vocabulary = vocabulary
        self.header = {"format": FORMAT, "version": VERSION, "vocabulary": vocabulary.name, **(header or {}), "key": key}

        def accept(old: dict) -> bool:
            if old.get("key") != key or old.get("vocabulary") != vocabulary.name:
                log.info("%s was written for another detector key; recomputing", self.path)
                return False
            return True

        def parse(raw: dict, where: str):
            try:
                name, entry = parse_image_entry(raw, where, vocabulary, True)
            except DetectionsFileError as exc:
                raise ValueError(str(exc)) from exc
            entry["image"], entry["detector_ms"] = raw.get("image"), raw.get("detector_ms")
            return name, {"file_name": name, **entry}

        self._log = JsonlLog(self.path, self.header, parse, self._line, accept=accept, writable=writable)
        self.own = self._log.entries  # file name -> parsed entry + "image", "detector_ms" (this log's)
        self.entries = {**(known or {}), **self.own} if known else self.own  # what get() finds

    @staticmethod
    def _line(e: dict) -> dict:
        d = Detections.create(e["boxes"], e["scores"], e["labels"], e["image_size"])
        return {"file_name": e["file_name"], **d.to_dict(), "image": e["image"], "detector_ms": e["detector_ms"]}

    def get(self, name: str, fingerprint: str) -> Detections | None:
        """The cached detections of an image, or ``None`` when absent or computed on another image file."""
        e = self.entries.get(name)
        if e is None or e["image"] != fingerprint:
            return None
        return Detections.create(e["boxes"], e["scores"], e["labels"], e["image_size"], self.vocabulary.name)

    def detector_ms(self, name: str) -> float | None:
        e = self.entries.get(name)
        return None if e is None else e["detector_ms"]

    def put(self, name: str, dets: Detections, fingerprint: str, detector_ms: float | None = None) -> None:
        """Append one image's detections (flushed and synced before returning).

        What is kept is what the file holds (boxes rounded to 0.01 px, scores to 1e-5), so a run that
        computes detections and a run that reads them back use the same numbers.
        """
        d = dets.numpy()
        ms = None if detector_ms is None else round(float(detector_ms), 3)
        line = self._line({"file_name": name, "boxes": d.boxes, "scores": d.scores, "labels": d.labels,
                           "image_size": dets.image_size, "image": fingerprint, "detector_ms": ms})
        entry = {"file_name": name, "boxes": np.asarray(line["boxes"], dtype=np.float64).reshape(-1, 4),
                 "scores": np.asarray(line["scores"], dtype=np.float64), "labels": np.asarray(line["labels"]),
                 "image_size": tuple(line["image_size"]), "image": fingerprint, "detector_ms": ms}
        self._log.append(name, entry)
        if self.entries is not self.own:
            self.entries[name] = entry

    def absorb(self, other: "DetectionCache") -> int:
        """Append every entry of ``other``'s own log (a shard: newer work, superseding); returns how many."""
        for name, entry in other.own.items():
            self._log.append(name, entry)
        return len(other.own)

    def close(self) -> None:
        self._log.close()

    def finish(self, path: str | Path | None = None) -> Path:
        """Close and write ``detections.json`` (the ``file`` format, every image cached; or ``path``), atomically."""
        self.close()
        items = ((n, Detections.create(e["boxes"], e["scores"], e["labels"], e["image_size"]))
                 for n, e in self.entries.items())
        meta = {k: v for k, v in self.header.items() if k not in ("format", "version", "vocabulary")}
        return write_detections_file(path or self.folder / "detections.json", items, self.vocabulary.name, **meta)

    def __enter__(self) -> "DetectionCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_predictions(path: str | Path, vocabulary: str, meta: Mapping[str, str],
                     fingerprints: Mapping[str, str], writable: bool = True) -> PredictionsWriter:
    """A resumable :class:`PredictionsWriter` that keeps only what is still valid.

    Args:
        meta: header keys that identify the run (e.g. detector and scorer keys); a file whose header
            differs, or that cannot be read, is started afresh.
        fingerprints: file name -> current image fingerprint; images predicted on another version of
            the image file are dropped (images not listed are kept).
        writable: False: read only (a log another process owns; an unusable one reads as empty).
    """
    def accept(old: dict) -> bool:
        return all(old.get(k) == v for k, v in meta.items())

    def keep(im) -> bool:
        return fingerprints.get(im.file_name, im.extra.get("image")) == im.extra.get("image")

    try:
        return PredictionsWriter(path, vocabulary, meta=dict(meta), accept=accept, keep=keep, writable=writable)
    except PredictionsError as exc:  # unreadable, or another vocabulary: this cache file is started again
        log.warning("%s is unusable (%s); starting it again", path, exc)
        return PredictionsWriter(path, vocabulary, meta=dict(meta), resume=False, writable=writable)
