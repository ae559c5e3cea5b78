"""What the web app runs, without the web page: one recogniser, one detector at a time, text interactions.

:class:`AppSession` loads the recogniser once (:func:`hoi_mllm.pipeline.load_pipeline`, no
detector), keeps the last detector used (building another drops it first: one detector's weights in
memory at a time), points the recogniser at the base vocabulary extended by the run's text
interactions (:mod:`hoi_mllm.interactions`) and runs the very pipeline of ``hoi-mllm detect``
(:class:`~hoi_mllm.pipeline.HOIPipeline`) with the run's thresholds. Everything a user can get wrong
(an upload that is not an image, a huge image, an unknown object in an interaction, a detector that
fails to load) is an :class:`AppError` whose message the page shows; the session stays usable.
"""
from __future__ import annotations

import gc
import logging
import tempfile
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # larger uploads are refused (a 40 MP photo is already beyond any camera phone's JPEG)
MAX_SIDE = 4096  # longer sides are downscaled to this before detection
TABLE_HEADERS = ["person", "interaction", "object", "score"]
DRAWN = 10  # triplets drawn on the picture at most (the table holds all top-k)

Progress = Callable[[float, str], None]


class AppError(ValueError):
    """Something the user can fix; its message is shown in the page."""


@dataclass
class RunOutput:
    """One run: the picture with the triplets drawn, the table rows, the predictions file, what to say."""

    picture: object  # PIL image
    rows: list[list]  # TABLE_HEADERS, best first
    predictions_path: Path
    choices: list[str]  # the interactions in the table (its filter's choices)
    message: str
    added: list[str] = field(default_factory=list)  # the text interactions added to the vocabulary


def parse_interaction_text(text: str | None) -> list[str]:
    """One interaction a line (``feed giraffe``; ``polish car, motorcycle``: one verb, several objects);
    blank lines and ``#`` comments ignored."""
    out = []
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _nothing(progress: Progress | None):
    return progress if progress is not None else (lambda fraction, desc: None)


class AppSession:
    """The state behind the web app (see the module docstring).

    Args:
        model: a saved recogniser folder, a preset (``tiny-qwen2-vl``), a hub id or a local checkpoint.
        detectors: the detector specs offered (``yolo``, ``file:path=dets.json``, ...); the first is the default.
        vocabulary, mode, device, dtype: as :func:`hoi_mllm.pipeline.load_pipeline`.
        output_dir: where each run's predictions file is written (default: a new temporary folder).
        max_pixels, max_side: larger uploads are refused; longer sides are downscaled.
    Raises:
        ValueError: no detector, or a spec that does not parse (naming the allowed detectors and options),
        before anything loads.
    """

    def __init__(self, model: str, detectors: Sequence[str], *, vocabulary=None, mode: str | None = None,
                 device: str = "auto", dtype=None, output_dir: str | Path | None = None,
                 max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE):
        from hoi_mllm.detectors.registry import resolve_detector
        from hoi_mllm.device import resolve_device

        self.model = str(model)
        self.detectors = list(dict.fromkeys(detectors))
        if not self.detectors:
            raise ValueError("give at least one detector spec (e.g. yolo, yolo:model=yolov8n.pt, file:path=dets.json)")
        for spec in self.detectors:
            resolve_detector(spec)  # a spec that does not parse fails here, naming the allowed ones
        self.vocabulary_name, self.mode, self.dtype = vocabulary, mode, dtype
        self.device = resolve_device(device)
        self.output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="hoi-mllm-app-"))
        self.max_pixels, self.max_side = int(max_pixels), int(max_side)
        self._lock = threading.Lock()  # one run at a time: the recogniser and the detector are shared
        self._pipeline = None  # the recogniser's pipeline (no detector), loaded on first use
        self._base = None  # (vocabulary, prompt ids, allowed classes) as loaded
        self._interactions: list[str] = []
        self._report = None
        self._detector_spec: str | None = None
        self._detector = None
        self._detector_options = None
        self._runs = 0

    # ------------------------------------------------------------------ models
    def recogniser_pipeline(self, progress: Progress | None = None):
        """The loaded recogniser (as a detector-less :class:`HOIPipeline`), loading it on first call."""
        if self._pipeline is None:
            from hoi_mllm.pipeline import load_pipeline

            _nothing(progress)(0.05, f"loading the recogniser {self.model}")
            try:
                pipe = load_pipeline(self.model, vocabulary=self.vocabulary_name, mode=self.mode, device=self.device,
                                     dtype=self.dtype)
            except Exception as exc:  # noqa: BLE001 - any failure to load is shown, the app keeps serving
                raise AppError(f"the model {self.model!r} failed to load: {exc}") from exc
            rec = pipe.recogniser
            self._base = (rec.vocabulary, rec.prompt_ids, getattr(rec, "allowed_classes", None))
            self._pipeline = pipe
        return self._pipeline

    def detector(self, spec: str, progress: Progress | None = None):
        """The detector of ``spec``: the cached one when it is the last used, else built (the old one dropped first)."""
        if spec not in self.detectors:
            raise AppError(f"detector {spec!r} is not offered; choose one of: {', '.join(self.detectors)}")
        if spec != self._detector_spec:
            from hoi_mllm.detectors import build_detector
            from hoi_mllm.detectors.registry import resolve_detector

            self._drop_detector()
            self.recogniser_pipeline(progress)  # the detector labels the recogniser's base vocabulary
            _nothing(progress)(0.25, f"loading the detector {spec}")
            own = {} if "device" in resolve_detector(spec)[1] else {"device": self.device}  # as load_pipeline
            try:
                detector = build_detector(spec, vocabulary=self._base[0], **own)
            except Exception as exc:  # noqa: BLE001 - a missing file, weights that cannot be fetched offline, ...
                raise AppError(f"the detector {spec!r} failed to load: {exc}") from exc
            self._detector, self._detector_spec = detector, spec
            self._detector_options = detector.options
        return self._detector

    def _drop_detector(self) -> None:
        if self._detector is None:
            return
        self._detector = self._detector_spec = self._detector_options = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    @property
    def loaded_detector(self) -> str | None:
        """The spec of the detector in memory, or None."""
        return self._detector_spec

    def set_interactions(self, entries: Sequence[str]):
        """Point the recogniser at the base vocabulary plus ``entries``; returns the report (None: no entries).

        An unknown object or an empty phrase is an :class:`AppError` naming close names; the recogniser
        is then left on the base vocabulary.
        """
        from hoi_mllm.interactions import add_interactions, use_vocabulary

        entries = list(entries)
        pipe = self.recogniser_pipeline()
        if entries == self._interactions:
            return self._report
        rec = pipe.recogniser
        base_vocab, base_ids, base_allowed = self._base
        rec.vocabulary, rec.prompt_ids = base_vocab, base_ids  # back to the vocabulary as loaded
        if base_allowed is not None or hasattr(rec, "allowed_classes"):
            rec.allowed_classes = base_allowed
        self._interactions, self._report = [], None
        if entries:
            try:
                extended, report = add_interactions(base_vocab, entries)
            except ValueError as exc:
                raise AppError(str(exc)) from exc
            if extended is not base_vocab:
                use_vocabulary(rec, extended)
            self._interactions, self._report = entries, report
        return self._report

    @property
    def vocabulary(self):
        """The recogniser's vocabulary now (with the text interactions of the last run)."""
        return self.recogniser_pipeline().recogniser.vocabulary

    # ------------------------------------------------------------------ input
    def open_upload(self, path) -> tuple[object, str, str]:
        """``(RGB image, file name, note)`` of an uploaded file: refused when not an image or too large,
        downscaled (said in ``note``) when a side is over ``max_side``."""
        from PIL import Image

        from hoi_mllm.image_file import open_file
        from hoi_mllm.runner import as_image

        if path is None or (isinstance(path, str) and not path.strip()):
            raise AppError("no picture: upload one or click an example")
        if isinstance(path, Image.Image):
            image, name = path, Path(getattr(path, "filename", "") or "image.png").name
        else:
            path = Path(path)
            name = path.name
            if not path.is_file():
                raise AppError(f"the upload {name!r} is not a file")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
                    with open_file(path) as probe:  # reads the header only: a huge image is refused undecoded
                        self._check_size(name, *probe.size)
                        image = as_image(probe)
            except AppError:
                raise
            except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
                raise AppError(f"{name!r} is not an image this app can read ({type(exc).__name__}: {exc}); upload "
                               "a JPEG, PNG, WebP, BMP or GIF picture") from exc
        self._check_size(name, *image.size)
        image = as_image(image)
        note = ""
        if max(image.size) > self.max_side:
            scale = self.max_side / max(image.size)
            new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            note = (f"{name} is {image.width}x{image.height} pixels: downscaled to {new[0]}x{new[1]} (boxes are in "
                    "the downscaled picture's pixels)")
            image = image.resize(new, Image.Resampling.LANCZOS)
        return image, name, note

    def _check_size(self, name: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise AppError(f"{name!r} is {width}x{height} pixels ({width * height / 1e6:.0f} MP), more than the "
                           f"{self.max_pixels / 1e6:.0f} MP this app accepts; downscale it first")
        if width < 2 or height < 2:
            raise AppError(f"{name!r} is {width}x{height} pixels: too small to detect anything")

    # ------------------------------------------------------------------ a run
    def run(self, upload, detector: str | None = None, score_threshold: float = 0.2, triplet_threshold: float = 0.0,
            top_k: int = 10, interactions: str | Sequence[str] | None = None,
            progress: Progress | None = None) -> RunOutput:
        """Detect the HOI triplets of one uploaded picture.

        Args:
            upload: the uploaded file's path (or a PIL image).
            detector: one of ``self.detectors`` (default: the first).
            score_threshold: the detector's box score threshold (0..1).
            triplet_threshold: triplets scoring below it are dropped (0..1).
            top_k: triplets kept (and drawn), one cap over every triplet (the table's rows).
            interactions: text interactions, one a line (or a list of them).
        Raises:
            AppError: bad input, a model or detector that fails to load, an image the pipeline cannot process.
        """
        from hoi_mllm.pipeline import HOIPipeline

        progress = _nothing(progress)
        score_threshold, triplet_threshold = _fraction(score_threshold, "detector score threshold"), _fraction(
            triplet_threshold, "triplet score threshold")
        try:
            top_k = int(top_k)
        except (TypeError, ValueError):
            raise AppError(f"top-k must be a whole number >= 1, got {top_k!r}") from None
        if top_k < 1:
            raise AppError(f"top-k must be >= 1, got {top_k}")
        entries = parse_interaction_text(interactions) if isinstance(interactions, (str, type(None))) else [
            str(e) for e in interactions if str(e).strip()]
        image, name, note = self.open_upload(upload)
        with self._lock:
            pipe = self.recogniser_pipeline(progress)
            report = self.set_interactions(entries)
            det = self.detector(detector or self.detectors[0], progress)
            try:
                det.options = replace(self._detector_options, score_threshold=score_threshold)
            except ValueError as exc:
                raise AppError(f"detector score threshold: {exc}") from exc
            run = HOIPipeline(det, pipe.recogniser, pipe.pair_config,
                              # the table's rows: top_k of every triplet, no-interaction ones included (one cap)
                              replace(pipe.post_config, top_k=top_k, min_score=triplet_threshold,
                                      no_interaction_cap="shared"))
            progress(0.5, f"detecting and recognising ({det.__class__.__name__}, {pipe.mode})")
            try:
                result = run(image, file_names=name)
            except (ValueError, RuntimeError, OSError) as exc:
                raise AppError(f"could not process {name!r}: {exc}") from exc
            progress(0.9, "drawing")
            self._runs += 1
            path = self._write_predictions(result, name, report, detector or self.detectors[0])
            vocab = pipe.recogniser.vocabulary
        rows = table_rows(result)
        added = list(report.added) if report is not None else []
        lines = [f"{len(result)} triplet(s) in {name} ({detector or self.detectors[0]}, {pipe.mode}, "
                 f"vocabulary {vocab.name})"]
        if note:
            lines.append(note)
        if report is not None:
            lines += report.lines()
        return RunOutput(picture=result.plot(top_k=min(top_k, DRAWN)), rows=rows, predictions_path=path,
                         choices=scored_phrases(result), message="\n".join(lines), added=added)

    def _write_predictions(self, result, name: str, report, detector: str) -> Path:
        """The run's predictions file (``hoi-mllm/predictions``, one image), written atomically."""
        from hoi_mllm.io import atomic_write_json
        from hoi_mllm.predictions import FORMAT, VERSION

        doc = {"format": FORMAT, "version": VERSION, "vocabulary": result.vocabulary.name, "model": self.model,
               "detector": detector, "images": [result.to_json()]}
        if report is not None and report.added:
            doc["interactions"] = list(report.added)
        folder = self.output_dir / f"run-{self._runs:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(name).stem}_predictions.json"
        atomic_write_json(path, doc)
        return path


def _fraction(value, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise AppError(f"{what} must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise AppError(f"{what} must be from 0 to 1, got {value}")
    return value


def table_rows(result) -> list[list]:
    """``[person, interaction, object, score]`` per triplet, best first; boxes numbered per class
    (``person 2`` is the same box whether it acts or is acted on)."""
    import numpy as np

    numbers: dict[tuple, int] = {}
    counts: dict[str, int] = {}

    def label(name: str, box) -> str:
        key = (name, tuple(np.round(box, 1).tolist()))
        if key not in numbers:
            counts[name] = numbers[key] = counts.get(name, 0) + 1
        return f"{name} {numbers[key]}"

    rows = []
    for t, (phrase, obj_name, score) in enumerate(zip(result.phrases, result.object_names, result.scores.tolist())):
        human = label("person", result.human_boxes[t])
        rows.append([human, phrase, label(obj_name.replace("_", " "), result.object_boxes[t]), round(float(score), 4)])
    return rows


def scored_phrases(result) -> list[str]:
    """The interactions in this run's table, sorted: what the table's filter offers."""
    return sorted(set(result.phrases))
