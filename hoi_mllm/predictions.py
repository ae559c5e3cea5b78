"""The predictions file: what every detector+recogniser run writes and every evaluator reads.

JSON::

    {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det",
     "images": [{"file_name": "HICO_test2015_00000001.jpg",
                 "hois": [{"human_box": [x1, y1, x2, y2], "object_box": [x1, y1, x2, y2],
                           "object": 8, "verb": 87, "score": 0.93}, ...]}, ...]}

Boxes are xyxy pixels of the original image (0-based); ``object`` and ``verb`` index the named
vocabulary; ``score`` is in [0, 1]. Extra keys are allowed anywhere and kept.

``object_box`` may be ``null`` (or all zeros) for a V-COCO role without an object; HICO-DET refuses that.

JSON Lines (``.jsonl``) streams the same content: the first line is the header (the object above
without ``images``), then one image object per line. A reader accepts both, by extension or by
content. :class:`PredictionsWriter` appends to a ``.jsonl`` file image by image, so a long run
that stops keeps what it finished and can skip those images when it is run again.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hoi_mllm.io import atomic_write_text
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


def read_predictions(path: str | Path, validate: bool = True) -> PredictionsFile:
    """Read a JSON or JSON Lines predictions file (the reader lives in :mod:`hoi_mllm.predictions_reader`).

    An empty file is an error; a JSON Lines file with only a header gives no images. A truncated
    last line of a JSON Lines file (an interrupted writer) is ignored; a malformed line elsewhere
    is an error. ``object_box`` ``null`` (V-COCO: no role object) is read as a row of NaN.
    """
    from hoi_mllm.predictions_reader import read_predictions as read

    return read(path, validate)


class PredictionsWriter:
    """Append images to a JSON Lines predictions file, one flushed line per image; resumable.

    >>> with PredictionsWriter("out/predictions.jsonl", "hico-det") as w:   # doctest: +SKIP
    ...     for image in images:
    ...         if image.name not in w.done: w.write(recognise(image))

    A :class:`~hoi_mllm.jsonl_log.JsonlLog` of :class:`HOITriplets`. On opening an existing file for
    the same vocabulary, the images already written are kept (``done`` holds their file names) and
    a truncated last line is dropped; another vocabulary is an error. ``accept(old header)`` may
    discard (False) or refuse (raise) a file written with other settings; ``keep(image)`` drops
    images no longer valid. ``finish(json_path)`` also writes the complete file as one JSON
    document, atomically.
    """

    def __init__(self, path: str | Path, vocabulary: str, meta: dict | None = None, resume: bool = True,
                 accept=None, keep=None, writable: bool = True):
        from hoi_mllm.jsonl_log import JsonlLog, LogError
        from hoi_mllm.predictions_reader import check_header, parse_image

        self.path = Path(path)
        self.vocabulary = vocabulary
        self.meta = dict(meta or {})

        def accept_old(old: dict) -> bool:
            check_header(old, str(self.path))
            if old.get("vocabulary") != vocabulary:
                raise PredictionsError(
                    f"{self.path} holds predictions for vocabulary {old.get('vocabulary')!r}, not {vocabulary!r}; "
                    "use another output folder or remove the file")
            return accept is None or accept(old)

        def parse(raw: dict, where: str) -> tuple[str, HOITriplets]:
            image = parse_image(raw, where, vocabulary)
            return image.file_name, image

        header = {"format": FORMAT, "version": VERSION, "vocabulary": vocabulary, **self.meta}
        try:
            self._log = JsonlLog(self.path, header, parse, HOITriplets.to_json, accept=accept_old,
                                 keep=None if keep is None else (lambda _, image: keep(image)), resume=resume,
                                 writable=writable)
        except LogError as exc:
            raise PredictionsError(str(exc)) from exc

    @property
    def images(self) -> list[HOITriplets]:
        return list(self._log.entries.values())

    @property
    def done(self) -> set[str]:
        return self._log.done

    def write(self, image: HOITriplets) -> None:
        self._log.append(image.file_name, image)

    def close(self) -> None:
        self._log.close()

    def finish(self, json_path: str | Path | None = None) -> PredictionsFile:
        self.close()
        result = PredictionsFile(self.vocabulary, self.images, self.meta)
        if json_path is not None:
            write_predictions(json_path, result)
        return result

    def __enter__(self) -> "PredictionsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
