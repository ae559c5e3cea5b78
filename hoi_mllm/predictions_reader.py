"""Reading predictions files: JSON or JSON Lines -> one array per field, validated once.

The format is described in :mod:`hoi_mllm.predictions` (which also holds the writer). This module
is the reading side only. A test-set file holds about a million triplets, so the reader never
builds a Python dict per triplet: msgspec decodes each image's ``hois`` into small typed structs
(floats, ints, a 4-tuple per box) that become columns of :class:`PredictionColumns` right away.
An image whose ``hois`` do not fit those types exactly (a missing key, a box of 3 numbers, ``8.0``
for an index, ``NaN``) is decoded again generically, so the message names the image and the hoi
and says what is wrong, and lenient cases (integral floats as indices) are still accepted.

``object_box`` may be ``null``: "no role object" (V-COCO); it is read as a row of NaN, and an all
zero box means the same to the V-COCO evaluator. HICO-DET refuses both (see :mod:`hoi_mllm.eval.inputs`).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Optional

import msgspec
import numpy as np

from hoi_mllm.predictions import FORMAT, VERSION, PredictionsError, PredictionsFile

log = logging.getLogger("hoi_mllm.predictions")

Box = tuple[float, float, float, float]
_NAN_BOX = (math.nan,) * 4
_HOI_KEYS = ("human_box", "object_box", "object", "verb", "score")


class _Hoi(msgspec.Struct, gc=False):
    human_box: Box
    object_box: Optional[Box]
    object: int
    verb: int
    score: float


_IMAGE = msgspec.json.Decoder(dict[str, msgspec.Raw])
_HOIS = msgspec.json.Decoder(list[_Hoi])
_DOC = msgspec.json.Decoder(dict[str, msgspec.Raw])
_IMAGES = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()


@dataclass
class PredictionColumns:
    """All triplets of a predictions file as aligned arrays (``N`` images, ``T`` triplets).

    Attributes:
        vocabulary: the vocabulary name of the header. meta: the header's other keys.
        file_names: ``N`` image file names, in file order. sizes: ``N`` ``(width, height)`` or ``None``.
        extras: ``N`` dicts of each image's other keys (kept, e.g. timing).
        offsets: ``[N + 1]`` int64: image ``i`` holds triplets ``offsets[i]:offsets[i + 1]``.
        human_boxes, object_boxes: ``[T, 4]`` float64 xyxy pixels; an object box given as ``null``
            is a row of NaN.
        objects, verbs: ``[T]`` int64 vocabulary ids. scores: ``[T]`` float64.
        validated: whether boxes and scores were checked (:func:`triplet_problem`).
    """

    vocabulary: str
    meta: dict
    file_names: list[str]
    sizes: list
    extras: list[dict]
    offsets: np.ndarray
    human_boxes: np.ndarray
    object_boxes: np.ndarray
    objects: np.ndarray
    verbs: np.ndarray
    scores: np.ndarray
    validated: bool = False

    def __len__(self) -> int:
        return len(self.file_names)

    @property
    def num_triplets(self) -> int:
        return int(self.offsets[-1])

    @property
    def counts(self) -> np.ndarray:
        """``[N]`` triplets per image."""
        return np.diff(self.offsets)

    def to_file(self) -> PredictionsFile:
        """The same content as a :class:`PredictionsFile` (each image's arrays are views of the columns)."""
        from hoi_mllm.records import HOITriplets

        o = self.offsets
        images = [HOITriplets(self.human_boxes[o[i]:o[i + 1]], self.object_boxes[o[i]:o[i + 1]],
                              self.objects[o[i]:o[i + 1]], self.verbs[o[i]:o[i + 1]], self.scores[o[i]:o[i + 1]],
                              name, self.sizes[i], self.extras[i])
                  for i, name in enumerate(self.file_names)]
        return PredictionsFile(self.vocabulary, images, dict(self.meta))


@dataclass
class _Builder:
    """Columns collected image by image."""

    names: list[str] = field(default_factory=list)
    sizes: list = field(default_factory=list)
    extras: list[dict] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # each image's place in the file, for messages

    def add(self, where: str, name: str, size, extra: dict, columns: tuple[np.ndarray, ...]) -> None:
        self.where.append(where)
        self.names.append(name)
        self.sizes.append(size)
        self.extras.append(extra)
        self.counts.append(int(columns[-1].shape[0]))
        self.parts.append(columns)

    def finish(self, header: dict, validate: bool) -> PredictionColumns:
        """The columns; with ``validate``, the first bad triplet is an error naming its image."""
        offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        shapes = ((0, 4), (0, 4), (0,), (0,), (0,))
        dtypes = (np.float64, np.float64, np.int64, np.int64, np.float64)
        cols = [np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(shapes[k], dtypes[k])
                for k in range(5)]
        meta = {k: v for k, v in header.items() if k not in ("format", "version", "vocabulary", "images")}
        out = PredictionColumns(header["vocabulary"], meta, self.names, self.sizes, self.extras, offsets,
                                *cols, validated=validate)
        if validate:
            problem = triplet_problem(out.human_boxes, out.object_boxes, out.scores)
            if problem is not None:
                bad, what = problem
                t = int(np.flatnonzero(bad)[0])
                i = int(np.searchsorted(offsets, t, side="right")) - 1
                raise PredictionsError(f"{self.where[i]} ({self.names[i]!r}): hoi #{t - offsets[i]} {what}")
        return out


def check_header(doc, origin: str) -> None:
    """Raise :class:`PredictionsError` unless ``doc`` is a header of this format and version."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PredictionsError(f"{origin}: 'format' is {got!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise PredictionsError(f"{origin}: version {doc.get('version')!r} not supported (supported: {VERSION})")
    if not isinstance(doc.get("vocabulary"), str):
        raise PredictionsError(f"{origin}: missing 'vocabulary' (a name such as 'hico-det' or 'vcoco')")


def triplet_problem(human_boxes: np.ndarray, object_boxes: np.ndarray, scores: np.ndarray,
                    empty_object_boxes: bool = True) -> tuple[np.ndarray, str] | None:
    """The first rule that some triplets break, as ``(bad [T] bool, what)``; ``None`` if all are fine.

    Rules: boxes are 4 finite numbers with ``x1 <= x2`` and ``y1 <= y2``; an object box may instead
    be empty (all NaN, i.e. ``null`` in the file, or all zeros) when ``empty_object_boxes``;
    scores are finite and in [0, 1].
    """
    bad = ~np.isfinite(human_boxes).all(1)
    if bad.any():
        return bad, "has a non-finite human_box"
    bad = (human_boxes[:, 2] < human_boxes[:, 0]) | (human_boxes[:, 3] < human_boxes[:, 1])
    if bad.any():
        return bad, "has a reversed human_box (x2 < x1 or y2 < y1; boxes are [x1, y1, x2, y2])"
    nan_rows = np.isnan(object_boxes).all(1)
    empty = nan_rows | (object_boxes == 0).all(1)
    if not empty_object_boxes:
        if empty.any():
            return empty, ("has an empty object_box (null, all zeros or all NaN: 'no role object'), "
                           "which only V-COCO knows; every HICO-DET triplet has an object box")
    bad = ~np.isfinite(object_boxes).all(1) & ~nan_rows
    if bad.any():
        return bad, "has a non-finite object_box" + (" (an absent role object is null, all zeros or all NaN)"
                                                     if empty_object_boxes else "")
    bad = (object_boxes[:, 2] < object_boxes[:, 0]) | (object_boxes[:, 3] < object_boxes[:, 1])
    if bad.any():
        return bad, "has a reversed object_box (x2 < x1 or y2 < y1; boxes are [x1, y1, x2, y2])"
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        return bad, f"has score {float(scores[np.flatnonzero(bad)[0]])!r}; scores must be finite, in [0, 1]"
    return None


def _fast_columns(hois: list[_Hoi]) -> tuple[np.ndarray, ...]:
    n = len(hois)
    hb = np.fromiter(chain.from_iterable(map(attrgetter("human_box"), hois)), np.float64, 4 * n).reshape(n, 4)
    ob = np.fromiter(chain.from_iterable(h.object_box or _NAN_BOX for h in hois), np.float64, 4 * n).reshape(n, 4)
    objs = np.fromiter(map(attrgetter("object"), hois), np.int64, n)
    verbs = np.fromiter(map(attrgetter("verb"), hois), np.int64, n)
    scores = np.fromiter(map(attrgetter("score"), hois), np.float64, n)
    return hb, ob, objs, verbs, scores


def _indices(values: list, name: str, where: str) -> np.ndarray:
    """``[N]`` int64 indices from JSON numbers; a fraction or a boolean is an error, not truncated."""
    bad = next((k for k, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, float))
                or not math.isfinite(v) or v != int(v)), None)
    if bad is not None:
        raise PredictionsError(f"{where}: hoi #{bad} has {name} {values[bad]!r}; it must be an integer index "
                               f"into the vocabulary's {name}s")
    return np.array([int(v) for v in values], dtype=np.int64).reshape(-1)


def _box(value, name: str, k: int, where: str, nullable: bool) -> tuple:
    if value is None and nullable:
        return _NAN_BOX
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
        allowed = "4 numbers [x1, y1, x2, y2]" + (", or null for no role object" if nullable else "")
        raise PredictionsError(f"{where}: hoi #{k} has {name} {value!r}; it must be {allowed}")
    return tuple(float(x) for x in value)


def _generic_columns(hois, where: str) -> tuple[np.ndarray, ...]:
    """Columns of hois that the fast decoder refused: every entry checked, the first fault named."""
    if not isinstance(hois, list):
        raise PredictionsError(f"{where}: 'hois' must be a list")
    for k, h in enumerate(hois):
        if not isinstance(h, dict):
            raise PredictionsError(f"{where}: hoi #{k} is {type(h).__name__}, expected an object with "
                                   f"{', '.join(_HOI_KEYS)}")
        missing = [key for key in _HOI_KEYS if key not in h]
        if missing:
            raise PredictionsError(f"{where}: hoi #{k} lacks {', '.join(missing)}; every hoi needs human_box "
                                   "[4 numbers], object_box [4 numbers or null], object, verb, score")
        if isinstance(h["score"], bool) or not isinstance(h["score"], (int, float)):
            raise PredictionsError(f"{where}: hoi #{k} has score {h['score']!r}; it must be a number in [0, 1]")
    n = len(hois)
    hb = np.array([_box(h["human_box"], "human_box", k, where, False) for k, h in enumerate(hois)],
                  dtype=np.float64).reshape(n, 4)
    ob = np.array([_box(h["object_box"], "object_box", k, where, True) for k, h in enumerate(hois)],
                  dtype=np.float64).reshape(n, 4)
    objs = _indices([h["object"] for h in hois], "object", where)
    verbs = _indices([h["verb"] for h in hois], "verb", where)
    scores = np.array([float(h["score"]) for h in hois], dtype=np.float64)
    return hb, ob, objs, verbs, scores


def _value(v):
    """A value of a decoded object: msgspec left it raw (fast path) or json decoded it already (slow path)."""
    return _ANY.decode(v) if isinstance(v, msgspec.Raw) else v


def _image(raw, out: _Builder, where: str) -> None:
    """Decode one image object (raw JSON, or a dict already decoded) and add it to ``out``.

    Raises ``json.JSONDecodeError`` if ``raw`` is not JSON at all.
    """
    if isinstance(raw, dict):
        entry = raw
    else:
        try:
            entry = _IMAGE.decode(raw)
        except msgspec.DecodeError:  # not an object, or JSON that msgspec refuses (NaN): decoded generically
            entry = json.loads(bytes(raw))
    if not isinstance(entry, dict) or "file_name" not in entry or "hois" not in entry:
        raise PredictionsError(f"{where}: each image needs 'file_name' and 'hois'")
    name = _value(entry["file_name"])
    place, where = where, f"{where} ({name!r})"
    hois = entry["hois"]
    try:
        if not isinstance(hois, msgspec.Raw):
            raise msgspec.DecodeError
        columns = _fast_columns(_HOIS.decode(hois))
    except msgspec.DecodeError:  # ValidationError is a DecodeError: the generic reader names the fault
        columns = _generic_columns(json.loads(bytes(hois)) if isinstance(hois, msgspec.Raw) else hois, where)
    size = _value(entry["size"]) if "size" in entry else None
    extra = {k: _value(v) for k, v in entry.items() if k not in ("file_name", "hois", "size")}
    out.add(place, str(name), tuple(size) if size else None, extra, columns)


def parse_image(raw: dict, where: str, vocabulary: str, validate: bool = True):
    """One image object (already decoded) as a :class:`~hoi_mllm.records.HOITriplets`; ``PredictionsError`` when bad."""
    out = _Builder()
    _image(raw, out, where)
    return out.finish({"vocabulary": vocabulary}, validate).to_file().images[0]


def _is_json_lines(data: bytes) -> bool:
    """Several JSON documents, one a line: the first line is a document of its own and more follows."""
    first, _, rest = data.lstrip().partition(b"\n")
    if not rest.strip():
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def _read_json(data: bytes, origin: str, validate: bool) -> PredictionColumns | None:
    """A whole-document JSON file; ``None`` when it is JSON Lines under another name."""
    try:
        doc = _DOC.decode(data)
    except msgspec.ValidationError:  # valid JSON, but not an object
        doc = _ANY.decode(data)
    except msgspec.DecodeError as exc:
        if _is_json_lines(data):
            return None
        try:
            doc = json.loads(data)  # JSON that msgspec refuses (NaN literals): decoded generically
        except json.JSONDecodeError as err:
            raise PredictionsError(f"{origin}: not valid JSON ({err})") from exc
    if not isinstance(doc, dict):
        check_header(doc, origin)
    header = {k: _value(v) for k, v in doc.items() if k != "images"}
    check_header(header, origin)
    images = doc.get("images")
    if isinstance(images, msgspec.Raw):
        try:
            images = _IMAGES.decode(images)
        except msgspec.DecodeError:
            images = None
    if not isinstance(images, list):
        raise PredictionsError(f"{origin}: 'images' must be a list of {{file_name, hois}} objects")
    out = _Builder()
    for i, raw in enumerate(images):
        _image(raw, out, f"{origin}: image #{i}")
    return out.finish(header, validate)


def _read_jsonl(data: bytes, origin: str, validate: bool) -> PredictionColumns:
    lines = data.rstrip().split(b"\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise PredictionsError(f"{origin}: line 1 (the header) is not valid JSON ({exc})") from exc
    check_header(header, origin)
    out = _Builder()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            _image(line, out, f"{origin}:{n}: image #{len(out.names)}")
        except json.JSONDecodeError as exc:
            if n == len(lines):  # a writer stopped mid-line: the rest of the file is intact
                log.warning("%s: ignoring its last line %d, cut short (an interrupted writer)", origin, n)
                break
            raise PredictionsError(f"{origin}: line {n} is not valid JSON ({exc})") from exc
    return out.finish(header, validate)


def read_prediction_columns(path: str | Path, validate: bool = True) -> PredictionColumns:
    """Read a JSON or JSON Lines predictions file into :class:`PredictionColumns`.

    Args:
        path: ``.jsonl`` is read as JSON Lines; anything else as JSON, or as JSON Lines when its
            first line is a document of its own.
        validate: check every box and score (:func:`triplet_problem`); an error names the image and hoi.
    Raises:
        FileNotFoundError: no such file.
        PredictionsError: an empty file (0 bytes or only whitespace: a run that crashed before
            writing looks like that), another format or version, or a malformed entry.
    A truncated last line of a JSON Lines file (an interrupted writer) is ignored with a warning;
    a malformed line elsewhere is an error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file not found: {path}")
    data = path.read_bytes()
    origin = str(path)
    if not data.strip():
        raise PredictionsError(f"{origin}: the file is empty ({len(data)} bytes; expected a {FORMAT} JSON or "
                               "JSON Lines file; a run that stopped before writing anything leaves such a file)")
    if path.suffix != ".jsonl":
        columns = _read_json(data, origin, validate)
        if columns is not None:
            return columns
    return _read_jsonl(data, origin, validate)


def read_predictions(path: str | Path, validate: bool = True) -> PredictionsFile:
    """Read a JSON or JSON Lines predictions file into a :class:`PredictionsFile` (see :func:`read_prediction_columns`)."""
    return read_prediction_columns(path, validate).to_file()
