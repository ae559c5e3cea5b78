"""The predictions file: what every detector+recogniser run writes and every evaluator reads.

JSON::

    {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det",
     "images": [{"file_name": "HICO_test2015_00000001.jpg",
                 "hois": [{"human_box": [x1, y1, x2, y2], "object_box": [x1, y1, x2, y2],
                           "object": 8, "verb": 87, "score": 0.93}, ...]}, ...]}

Boxes are xyxy pixels of the original image (0-based); ``object`` and ``verb`` index the named
vocabulary; ``score`` is in [0, 1]. Extra keys are allowed anywhere and kept.

JSON Lines (``.jsonl``) streams the same content: the first line is the header (the object above
without ``images``), then one image object per line. A reader accepts both, by extension or by
content. :class:`PredictionsWriter` appends to a ``.jsonl`` file image by image, so a long run
that stops keeps what it finished and can skip those images when it is run again.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoi_mllm.io import atomic_path, atomic_write_text
from hoi_mllm.records import HOITriplets

log = logging.getLogger(__name__)

FORMAT = "hoi-mllm/predictions"
VERSION = 1


class PredictionsError(ValueError):
    """A predictions file is malformed; the message names the file, image and entry."""


@dataclass
class PredictionsFile:
    """All images of one predictions file."""

    vocabulary: str
    images: list[HOITriplets]
    meta: dict = field(default_factory=dict)

    def header(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "vocabulary": self.vocabulary, **self.meta}

    def by_file_name(self) -> dict[str, HOITriplets]:
        return {im.file_name: im for im in self.images}

    def __len__(self) -> int:
        return len(self.images)


def write_predictions(path: str | Path, predictions: PredictionsFile) -> Path:
    """Write a predictions file atomically (``.jsonl`` -> JSON Lines, else JSON)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        lines = [json.dumps(predictions.header())] + [json.dumps(im.to_json(), allow_nan=False) for im in predictions.images]
        atomic_write_text(path, "\n".join(lines) + "\n")
    else:
        doc = {**predictions.header(), "images": [im.to_json() for im in predictions.images]}
        atomic_write_text(path, json.dumps(doc, allow_nan=False, separators=(",", ":")))
    return path


def _check_header(doc: dict, origin: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PredictionsError(f"{origin}: 'format' is {got!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise PredictionsError(f"{origin}: version {doc.get('version')!r} not supported (supported: {VERSION})")
    if not isinstance(doc.get("vocabulary"), str):
        raise PredictionsError(f"{origin}: missing 'vocabulary' (a name such as 'hico-det' or 'vcoco')")


def _indices(values: list, name: str, where: str) -> np.ndarray:
    """``[N]`` int64 class indices from JSON numbers; a fraction or a boolean is an error, not truncated."""
    raw = np.array(values)
    if raw.dtype.kind in "iu" or not len(values):
        return raw.astype(np.int64).reshape(-1)
    if raw.dtype.kind == "f" and np.isfinite(raw).all() and (raw == np.round(raw)).all():
        return raw.astype(np.int64)  # 8.0 from a writer that emits floats
    bad = next((k for k, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, float))
                or not math.isfinite(v) or v != int(v)), 0)
    raise PredictionsError(f"{where}: hoi #{bad} has {name} {values[bad]!r}; it must be an integer index "
                           f"into the vocabulary's {name}s")


def parse_image(entry: dict, origin: str, position: int, validate: bool = True) -> HOITriplets:
    """One image object of a predictions file -> :class:`HOITriplets`, validating every entry."""
    where = f"{origin}: image #{position}"
    if not isinstance(entry, dict) or "file_name" not in entry:
        raise PredictionsError(f"{where}: each image needs 'file_name' and 'hois'")
    where = f"{where} ({entry['file_name']!r})"
    hois = entry.get("hois")
    if not isinstance(hois, list):
        raise PredictionsError(f"{where}: 'hois' must be a list")
    try:
        hb = np.array([h["human_box"] for h in hois], dtype=np.float64).reshape(-1, 4)
        ob = np.array([h["object_box"] for h in hois], dtype=np.float64).reshape(-1, 4)
        objs = _indices([h["object"] for h in hois], "object", where)
        verbs = _indices([h["verb"] for h in hois], "verb", where)
        scores = np.array([h["score"] for h in hois], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictionsError(
            f"{where}: every hoi needs human_box [4 numbers], object_box [4 numbers], object, verb, score ({exc!r})"
        ) from exc
    if validate and len(hois):
        for name, arr in (("human_box", hb), ("object_box", ob)):
            bad = ~np.isfinite(arr).all(1)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise PredictionsError(f"{where}: hoi #{k} has a non-finite {name} {hois[k][name]}")
        bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise PredictionsError(f"{where}: hoi #{k} has score {hois[k]['score']!r}; scores must be finite, in [0, 1]")
    extra = {k: v for k, v in entry.items() if k not in ("file_name", "hois", "size")}
    return HOITriplets(hb, ob, objs, verbs, scores, str(entry["file_name"]),
                       tuple(entry["size"]) if entry.get("size") else None, extra)


def read_predictions(path: str | Path, validate: bool = True) -> PredictionsFile:
    """Read a JSON or JSON Lines predictions file.

    An empty JSON Lines file (or one with only a header) gives no images. A truncated last line
    of a JSON Lines file (an interrupted writer) is ignored; a malformed line elsewhere is an error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file not found: {path}")
    text = path.read_text()
    origin = str(path)
    if not text.strip():
        raise PredictionsError(f"{origin}: the file is empty (expected a {FORMAT} JSON or JSON Lines file)")
    if path.suffix == ".jsonl":
        return _read_jsonl(text, origin, validate)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON documents, one a line: JSON Lines under another name
            return _read_jsonl(text, origin, validate)
        raise PredictionsError(f"{origin}: not valid JSON ({exc})") from exc
    _check_header(doc, origin)
    images = doc.get("images")
    if not isinstance(images, list):
        raise PredictionsError(f"{origin}: 'images' must be a list of {{file_name, hois}} objects")
    parsed = [parse_image(e, origin, i, validate) for i, e in enumerate(images)]
    meta = {k: v for k, v in doc.items() if k not in ("format", "version", "vocabulary", "images")}
    return PredictionsFile(doc["vocabulary"], parsed, meta)


def _read_jsonl(text: str, origin: str, validate: bool) -> PredictionsFile:
    lines = text.splitlines()
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise PredictionsError(f"{origin}: line 1 (the header) is not valid JSON ({exc})") from exc
    _check_header(header, origin)
    images: list[HOITriplets] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # a writer stopped mid-line: the rest of the file is intact
                log.warning("%s: ignoring its last line %d, cut short (an interrupted writer)", origin, n)
                break
            raise PredictionsError(f"{origin}: line {n} is not valid JSON ({exc})") from exc
        images.append(parse_image(entry, f"{origin}:{n}", len(images), validate))
    meta = {k: v for k, v in header.items() if k not in ("format", "version", "vocabulary")}
    return PredictionsFile(header["vocabulary"], images, meta)


class PredictionsWriter:
    """Append images to a JSON Lines predictions file, one flushed line per image; resumable.

    >>> with PredictionsWriter("out/predictions.jsonl", "hico-det") as w:   # doctest: +SKIP
    ...     for image in images:
    ...         if image.name not in w.done: w.write(recognise(image))

    On opening an existing file for the same vocabulary, the images already written are kept
    (``done`` holds their file names) and a truncated last line is dropped. ``finish(json_path)``
    also writes the complete file as one JSON document, atomically.
    """

    def __init__(self, path: str | Path, vocabulary: str, meta: dict | None = None, resume: bool = True):
        self.path = Path(path)
        self.vocabulary = vocabulary
        self.meta = dict(meta or {})
        self.images: list[HOITriplets] = []
        if resume and self.path.exists() and self.path.stat().st_size > 0:
            existing = read_predictions(self.path)
            if existing.vocabulary != vocabulary:
                raise PredictionsError(
                    f"{self.path} holds predictions for vocabulary {existing.vocabulary!r}, not {vocabulary!r}; "
                    "use another output folder or remove the file"
                )
            self.images = existing.images
        # rewrite cleanly (drops a torn last line), then append
        with atomic_path(self.path) as tmp:
            with open(tmp, "w") as f:
                f.write(json.dumps({"format": FORMAT, "version": VERSION, "vocabulary": vocabulary, **self.meta}) + "\n")
                for im in self.images:
                    f.write(json.dumps(im.to_json(), allow_nan=False) + "\n")
        self._file = open(self.path, "a")

    @property
    def done(self) -> set[str]:
        return {im.file_name for im in self.images}

    def write(self, image: HOITriplets) -> None:
        self._file.write(json.dumps(image.to_json(), allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.images.append(image)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def finish(self, json_path: str | Path | None = None) -> PredictionsFile:
        self.close()
        result = PredictionsFile(self.vocabulary, list(self.images), self.meta)
        if json_path is not None:
            write_predictions(json_path, result)
        return result

    def __enter__(self) -> "PredictionsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
