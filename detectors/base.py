"""The detector protocol, the options every detector shares, and the one post-filter they all apply.

A detector is a callable::

    detector(images: list[PIL.Image.Image], file_names: list[str] | None = None) -> list[Detections]

returning, per image, boxes ``[N, 4]`` xyxy in pixels of the *original* image, scores ``[N]`` in
[0, 1] and labels ``[N]`` that are object ids of the detector's ``vocabulary`` (a
:class:`~hoi_mllm.prompts.Vocabulary`), with ``image_size = (width, height)`` set. Nothing else
crosses to the recogniser.

Adapters subclass :class:`Detector` and implement :meth:`Detector.detect_batch` (raw detections of
one batch); :meth:`Detector.__call__` batches the images and runs :func:`filter_detections`, which
applies the shared :class:`DetectorOptions` (thresholds, class-aware NMS, caps) the same way for
every adapter. File-keyed detectors (ground truth, a detections file, jitter) find each image's
entry with a :class:`FileIndex`.
"""
from __future__ import annotations

import abc
import inspect
import os
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, ClassVar, Generic, Iterable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import torch
from PIL import Image
from torchvision.ops import batched_nms

from hoi_mllm.prompts import Vocabulary, load_vocabulary
from hoi_mllm.records import Detections

T = TypeVar("T")
_NONE_WORDS = ("none", "null", "off", "")


@runtime_checkable
class DetectorProtocol(Protocol):
    """Anything called as ``detector(images, file_names=None) -> list[Detections]`` with a ``vocabulary``."""

    vocabulary: Vocabulary

    def __call__(self, images: list[Image.Image], file_names: list[str] | None = None) -> list[Detections]: ...


@dataclass(frozen=True)
class DetectorOptions:
    """Options common to every detector, applied by :func:`filter_detections` after the model runs.

    The defaults follow the detection post-processing of two-stage HOI detectors (UPT: score 0.2,
    at most 15 humans and 15 objects per image, class-aware NMS at IoU 0.5). Adapters that read
    boxes from a file or annotations (``ground-truth``, ``file``, ``jitter``) default to no filtering.
    """

    score_threshold: float = field(default=0.2, metadata={"help": "drop detections scoring below this (0..1)"})
    human_score_threshold: float | None = field(
        default=None, metadata={"help": "separate threshold for persons (None: score_threshold)"})
    max_humans: int | None = field(default=15, metadata={"help": "keep at most this many persons per image, best first (None: all)"})
    max_objects: int | None = field(default=15, metadata={"help": "keep at most this many non-person detections per image (None: all)"})
    nms_iou: float | None = field(
        default=0.5, metadata={"help": "class-aware NMS IoU threshold (torchvision batched_nms); None: off"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (cuda when available), cpu, cuda, cuda:N"})
    batch_size: int = field(default=8, metadata={"help": "images per model call"})

    def __post_init__(self):
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("human_score_threshold", "max_humans", "max_objects", "nms_iou"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
                fix(name, None)
        for name in ("score_threshold", "human_score_threshold"):
            value = getattr(self, name)
            if value is None and name == "human_score_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"detector option {name}={value!r}: must be a number in [0, 1]")
            fix(name, float(value))
        for name in ("max_humans", "max_objects"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"detector option {name}={value!r}: must be an integer >= 0 or none")
        if self.nms_iou is not None:
            v = self.nms_iou
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"detector option nms_iou={v!r}: must be in (0, 1], or none to turn NMS off")
            fix("nms_iou", float(v))
        if isinstance(self.device, int) and not isinstance(self.device, bool):
            fix("device", f"cuda:{self.device}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"detector option device={self.device!r}: use auto, cpu, cuda or cuda:N")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"detector option batch_size={self.batch_size!r}: must be an integer >= 1")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def help(cls) -> dict[str, str]:
        """Option name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @property
    def min_score(self) -> float:
        """The lowest threshold in force (what a model's own post-processing may pre-filter at)."""
        h = self.human_score_threshold
        return self.score_threshold if h is None else min(self.score_threshold, h)

    def torch_device(self) -> torch.device:
        """The device to run on: ``auto`` picks CUDA when available."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"detector option device={self.device!r}: {exc}; use auto, cpu, cuda or cuda:N") from exc


@torch.no_grad()
def filter_detections(dets: Detections, options: DetectorOptions, vocabulary: Vocabulary) -> Detections:
    """Apply the shared options to one image's raw detections; every adapter goes through this.

    Steps: drop non-finite boxes; clip to the image; drop boxes left empty (zero width or height);
    score thresholds (``human_score_threshold`` for persons); class-aware NMS; cap persons and
    other objects separately, best first.

    Args:
        dets: boxes ``[N, 4]`` xyxy pixels, scores ``[N]``, labels ``[N]`` object ids of ``vocabulary``.
    Returns:
        :class:`Detections` (CPU torch tensors, float32 / int64) sorted by descending score (stable),
        ``vocabulary`` set to the vocabulary's name.
    Raises:
        ValueError: a label outside the vocabulary (a bug in the adapter that produced ``dets``).
    """
    boxes = torch.as_tensor(dets.boxes).detach().float().cpu().reshape(-1, 4)  # [N, 4]
    scores = torch.as_tensor(dets.scores).detach().float().cpu().reshape(-1)  # [N]
    labels = torch.as_tensor(dets.labels).detach().long().cpu().reshape(-1)  # [N]
    if labels.numel() and (labels.min() < 0 or labels.max() >= vocabulary.num_objects):
        bad = labels[(labels < 0) | (labels >= vocabulary.num_objects)][0].item()
        raise ValueError(f"detection label {bad} outside the {vocabulary.name} objects (0..{vocabulary.num_objects - 1})")
    w, h = dets.image_size
    keep = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    is_human = labels == vocabulary.human_object  # [N]
    human_thr = options.score_threshold if options.human_score_threshold is None else options.human_score_threshold
    thr = torch.where(is_human, torch.tensor(human_thr), torch.tensor(options.score_threshold))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (scores >= thr)
    idx = keep.nonzero().flatten()  # rows of the raw detections still in play
    order = torch.sort(scores[idx], descending=True, stable=True).indices
    idx = idx[order]
    if options.nms_iou is not None and idx.numel():
        kept = batched_nms(boxes[idx], scores[idx], labels[idx], options.nms_iou)  # sorted by score
        idx = idx[torch.sort(kept).values]  # back to the stable score order
    human_rank = torch.cumsum(is_human[idx].long(), 0)  # [K] 1-based rank among persons
    object_rank = torch.cumsum((~is_human[idx]).long(), 0)
    cap = torch.ones_like(idx, dtype=torch.bool)
    if options.max_humans is not None:
        cap &= ~is_human[idx] | (human_rank <= options.max_humans)
    if options.max_objects is not None:
        cap &= is_human[idx] | (object_rank <= options.max_objects)
    idx = idx[cap]
    return Detections(boxes[idx], scores[idx], labels[idx], (w, h), vocabulary.name)


def class_name_table(names: Mapping[int, str] | Sequence[str], vocabulary: Vocabulary) -> torch.Tensor:
    """Map a model's class names to vocabulary object ids by name.

    Args:
        names: model class id -> name (e.g. ``config.id2label``, ``YOLO.names``) or a list of names.
    Returns:
        ``[max_id + 1]`` int64: vocabulary object id of each model class, ``-1`` where the vocabulary
        has no such object (those detections are dropped). COCO spellings map to HICO-DET objects.
    """
    items = dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): v for k, v in names.items()}
    size = max(items, default=-1) + 1
    table = torch.full((size,), -1, dtype=torch.int64)
    for k, name in items.items():
        idx = vocabulary.object_index_or_none(str(name))
        if idx is not None:
            table[k] = idx
    return table


def map_labels(model_labels: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model class ids ``[N]`` -> (vocabulary ids ``[N]``, keep mask ``[N]``) through :func:`class_name_table`."""
    model_labels = model_labels.long().cpu()
    inside = (model_labels >= 0) & (model_labels < table.numel())
    mapped = torch.full_like(model_labels, -1)
    mapped[inside] = table[model_labels[inside]]
    return mapped, mapped >= 0


def check_images(images: Sequence[Image.Image], file_names: Sequence[str] | None) -> tuple[list[Image.Image], list[str | None]]:
    """Validate a detector's inputs; convert non-RGB images (grayscale, RGBA, palette) to RGB.

    Returns the RGB images (keeping their ``filename``) and a file name per image (``None`` when unknown).
    """
    if isinstance(images, Image.Image):
        images = [images]
    images = list(images)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise ValueError(f"image #{i} is a {type(im).__name__}, expected a PIL.Image.Image")
    if file_names is None:
        names: list[str | None] = [None] * len(images)
    else:
        names = [None if n is None else str(n) for n in file_names]
        if len(names) != len(images):
            raise ValueError(f"{len(names)} file_names for {len(images)} images: give one name per image")
    out = []
    for im in images:
        if im.mode != "RGB":
            name = getattr(im, "filename", "")
            im = im.convert("RGB")
            im.filename = name
        out.append(im)
    return out, names


class Detector(abc.ABC):
    """Base of the adapters: batching, input checks and the shared post-filter.

    Subclasses implement :meth:`detect_batch` and may set ``default_options`` (overrides of the
    :class:`DetectorOptions` defaults used when the detector is built by name). Keyword parameters
    of a subclass's ``__init__`` (besides ``vocabulary`` and ``options``) are its own options.
    """

    name: ClassVar[str] = ""
    default_options: ClassVar[dict] = {}

    def __init__(self, vocabulary: str | Vocabulary | None = "hico-det", options: DetectorOptions | None = None):
        self.vocabulary = load_vocabulary(vocabulary if vocabulary is not None else "hico-det")  # None: the default
        self.options = options if options is not None else DetectorOptions(**self.default_options)

    @classmethod
    def own_options(cls) -> tuple[str, ...]:
        """Names of the adapter-specific options (keyword parameters of ``__init__``)."""
        params = inspect.signature(cls.__init__).parameters
        return tuple(n for n, p in params.items() if n not in ("self", "vocabulary", "options")
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def __call__(self, images: Sequence[Image.Image], file_names: Sequence[str] | None = None) -> list[Detections]:
        """Detect objects in each image; see the module docstring for the contract."""
        rgb, names = check_images(images, file_names)
        out: list[Detections] = []
        step = self.options.batch_size
        for start in range(0, len(rgb), step):
            batch, batch_names = rgb[start:start + step], names[start:start + step]
            raw = self.detect_batch(batch, batch_names)
            if len(raw) != len(batch):
                raise RuntimeError(f"{type(self).__name__}.detect_batch returned {len(raw)} results for {len(batch)} images")
            out.extend(filter_detections(d, self.options, self.vocabulary) for d in raw)
        return out

    @abc.abstractmethod
    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        """Raw detections of one batch of RGB images: labels in vocabulary ids, boxes in original pixels."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocabulary={self.vocabulary.name!r}, options={self.options})"


def _posix(name: str) -> str:
    return os.path.normpath(name.replace("\\", "/")).lstrip("/") or name


class FileIndex(Generic[T]):
    """Find a per-image entry (an annotation, a file's detections) for an image by its file name.

    A name matches an entry when equal, when the entry's key is a trailing part of the name's path
    (``/data/hico/images/test2015/x.jpg`` finds ``test2015/x.jpg``), or by base name when that base
    name is unique among the entries.
    """

    def __init__(self, entries: Mapping[str, T] | Iterable[tuple[str, T]], what: str):
        self.what = what
        self.entries: dict[str, T] = {}
        by_base: dict[str, list[str]] = {}
        for key, value in (entries.items() if isinstance(entries, Mapping) else entries):
            norm = _posix(key)
            if norm in self.entries:
                raise ValueError(f"{what} lists the image {key!r} twice")
            self.entries[norm] = value
            by_base.setdefault(PurePosixPath(norm).name, []).append(norm)
        self.by_base = by_base

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, name: str) -> str | None:
        """The key of the entry for ``name``, or ``None``; raises ``ValueError`` when ambiguous."""
        parts = PurePosixPath(_posix(name)).parts
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if key in self.entries:
                return key
        keys = self.by_base.get(parts[-1] if parts else name, [])
        if len(keys) > 1:
            raise ValueError(f"image {name!r} is ambiguous in {self.what}: it matches {', '.join(keys[:5])}; "
                             "pass the file name relative to the image root")
        return keys[0] if keys else None

    def lookup(self, image: Image.Image, file_name: str | None, position: int = 0) -> tuple[str, T]:
        """``(key, entry)`` for an image, by ``file_name`` or else ``image.filename``.

        Raises:
            ValueError: naming the image when it has no name or no entry.
        """
        tried = [n for n in (file_name, getattr(image, "filename", None)) if n]
        if not tried:
            raise ValueError(f"image #{position} has no file name: pass file_names=[...] or open the image from a file, "
                             f"so that its entry in {self.what} can be found")
        for name in tried:
            key = self.match(name)
            if key is not None:
                return key, self.entries[key]
        some = ", ".join(list(self.entries)[:3]) + (", ..." if len(self.entries) > 3 else "")
        raise ValueError(f"image #{position} ({tried[0]!r}) is not in {self.what} "
                         f"({len(self.entries)} images, e.g. {some or 'none'})")
