"""Detectors by name: ``register_detector``, ``build_detector`` and the CLI spec form.

>>> det = build_detector("yolo", model="yolov8n.yaml", score_threshold=0.3)        # doctest: +SKIP
>>> det = build_detector("yolo:model=yolov8n.yaml,score_threshold=0.3")            # doctest: +SKIP

Options are split between the common :class:`~hoi_mllm.detectors.base.DetectorOptions` and the
adapter's own keyword parameters; anything else is a ``ValueError`` naming the allowed options.
"""
from __future__ import annotations

import re
from typing import Callable, TypeVar

from hoi_mllm.detectors.base import Detector, DetectorOptions
from hoi_mllm.prompts import Vocabulary

D = TypeVar("D", bound=type[Detector])

_REGISTRY: dict[str, type[Detector]] = {}
_ALIASES: dict[str, str] = {}
# a comma starts a new option only when "key=" follows, so values may hold commas ("[1,2]")
_SPEC_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.-]*\s*=)")


def register_detector(name: str, *aliases: str) -> Callable[[D], D]:
    """Class decorator: make a :class:`Detector` subclass buildable by ``name`` (and aliases)."""

    def decorate(cls: D) -> D:
        for key in (name, *aliases):
            owner = _REGISTRY.get(_ALIASES.get(key, key))
            if owner is not None and owner is not cls:
                raise ValueError(f"detector name {key!r} is already registered to {owner.__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias] = name
        return cls

    return decorate


def available_detectors(aliases: bool = False) -> list[str]:
    """Registered detector names (with their aliases when ``aliases``)."""
    return sorted(_REGISTRY) + (sorted(_ALIASES) if aliases else [])


def detector_class(name: str) -> type[Detector]:
    """The adapter class registered under ``name`` or an alias of it."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; allowed: {', '.join(available_detectors(aliases=True))}")
    return _REGISTRY[key]


def parse_detector_spec(spec: str) -> tuple[str, dict]:
    """``"yolo:model=yolov8n.yaml,score_threshold=0.3"`` -> ``("yolo", {"model": ..., "score_threshold": 0.3})``.

    Values are read as YAML scalars (numbers, booleans, ``null``, lists); a bare name has no options.
    """
    from hoi_mllm.cli import CLIError, parse_key_values

    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"detector spec {spec!r} has no detector name; expected NAME[:key=value,...]")
    items = [s.strip() for s in _SPEC_SPLIT.split(rest)] if rest.strip() else []
    try:
        return name, parse_key_values(items, what=f"detector {name!r} option")
    except CLIError as exc:
        raise ValueError(f"detector spec {spec!r}: {exc}; expected NAME[:key=value,...]") from exc


def split_detector_specs(text: str) -> list[str]:
    """A list of detector specs on one command-line value -> the specs.

    ``;`` always separates specs. A comma separates specs only where what follows it is a registered
    detector name (or alias), alone or followed by ``:``; any other comma belongs to the spec before
    it (an option ``key=value`` or a value such as ``[1,2]``)::

        "ground-truth,yolo:model=a.pt,score_threshold=0.3;hf:model=facebook/detr-resnet-50"
        -> ["ground-truth", "yolo:model=a.pt,score_threshold=0.3", "hf:model=facebook/detr-resnet-50"]

    Raises:
        ValueError: an empty spec (``;;`` or a leading / trailing separator), naming the allowed detectors.
    """
    names = set(available_detectors(aliases=True))
    specs: list[str] = []
    for part in text.split(";"):
        pieces: list[str] = []
        for piece in part.split(","):
            head = piece.split(":", 1)[0].strip().lower()
            if pieces and head not in names:
                pieces[-1] += "," + piece
            else:
                pieces.append(piece)
        specs += [p.strip() for p in pieces]
    if any(not s for s in specs):
        raise ValueError(f"empty detector spec in {text!r}; separate specs NAME[:key=value,...] with ';' "
                         f"(or ',' before a detector name); detectors: {', '.join(available_detectors(aliases=True))}")
    return specs


def resolve_detector(name: str, **options) -> tuple[type[Detector], dict]:
    """Check a name or spec and its options without building anything: ``(adapter class, merged options)``.

    Keyword ``options`` override the spec's.
    Raises:
        ValueError: unknown name or option, naming the allowed ones.
    """
    name, spec_options = parse_detector_spec(name)
    options = {**spec_options, **options}
    cls = detector_class(name)
    common_names, own_names = DetectorOptions.names(), cls.own_options()
    unknown = sorted(set(options) - set(common_names) - set(own_names))
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for detector {cls.name!r}; "
            f"allowed: {', '.join(own_names + common_names)}"
        )
    return cls, options


def build_detector(name: str, vocabulary: str | Vocabulary | None = "hico-det", **options) -> Detector:
    """Build a registered detector by name or spec string.

    Args:
        name: a registered name (``yolo``, ``hf``, ``hf-open-vocab``, ``ground-truth``, ``file``,
            ``jitter``, ...) or a spec ``"name:key=value,..."``; keyword ``options`` override the spec's.
        vocabulary: the vocabulary whose object ids the detections' labels are; ``None``: the adapter's
            default (``ground-truth`` and ``jitter``: their annotation file's; the others: ``hico-det``).
        options: :class:`DetectorOptions` fields and the adapter's own options.
    Raises:
        ValueError: unknown name or option (naming the allowed ones), or a bad option value.
    """
    cls, options = resolve_detector(name, **options)
    common = {k: options.pop(k) for k in DetectorOptions.names() if k in options}
    return cls(vocabulary=vocabulary, options=DetectorOptions(**{**cls.default_options, **common}), **options)
