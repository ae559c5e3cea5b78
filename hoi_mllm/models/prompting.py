"""Prompt templates (data in ``prompts/templates/``) and their token ids, tokenised once and cached.

A template file (``"format": "hoi-mllm/templates"``) has two sections of Python format strings:

``matching`` (the fine-tuned recogniser, one-pass deterministic matching)
    ``text_before_image``, ``instruction`` (after the image; no placeholders), ``grounding``
    (optional, default empty; per pair, before the pair tokens, used when the recogniser is
    ``grounded``: ``{person}`` and ``{object}`` are the boxes in the family's grounding convention
    from ``Backbone.box_text``, ``{object_name}`` the class name; grounded mode requires
    ``{person}`` and ``{object}``), ``question`` (per pair, after the pair tokens; ``{object}``), ``candidate`` (one candidate phrase, followed by
    ``<|match|>``; ``{phrase}``, ``{verb}``, ``{object}``), ``candidates_header`` (prefix
    placement: opens the candidates of one object class in the shared prefix; ``{object}``) and
    ``answer`` (prefix placement: precedes the per-pair ``<|answer|>`` token; no placeholders).

``training_free`` (a pretrained MLLM, candidates scored by likelihood)
    ``text_before_image``, ``instruction``, ``question`` (per pair; ``{person}`` and ``{object}``
    are the boxes in the family's grounding syntax from ``Backbone.box_text``; ``{object_name}``)
    and ``answer`` (the scored answer; ``{phrase}``, ``{verb}``, ``{object}``).

Built-in templates: the ``*.json`` files of ``prompts/templates/`` by stem (``default``); any
other value is read as a path.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

FORMAT = "hoi-mllm/templates"

# field -> placeholders it may use
MATCHING_FIELDS = {
    "text_before_image": (), "instruction": (), "grounding": ("person", "object", "object_name"),
    "question": ("object",),
    "candidate": ("phrase", "verb", "object"), "candidates_header": ("object",), "answer": (),
}
OPTIONAL_FIELDS = {"grounding": ""}  # field -> value when a template file leaves it out
GROUNDING_PLACEHOLDERS = ("person", "object")  # what the grounded mode needs in matching.grounding
TRAINING_FREE_FIELDS = {
    "text_before_image": (), "instruction": (), "question": ("person", "object", "object_name"),
    "answer": ("phrase", "verb", "object"),
}


@dataclass(frozen=True)
class MatchingTemplate:
    """Prompt pieces of one-pass deterministic matching (see the module docstring)."""

    text_before_image: str
    instruction: str
    question: str
    candidate: str
    candidates_header: str
    answer: str
    grounding: str = ""


@dataclass(frozen=True)
class TrainingFreeTemplate:
    """Prompt pieces of the training-free (likelihood) mode (see the module docstring)."""

    text_before_image: str
    instruction: str
    question: str
    answer: str


@dataclass(frozen=True)
class PromptTemplates:
    name: str
    matching: MatchingTemplate
    training_free: TrainingFreeTemplate
    origin: str = ""

    def check_grounding(self) -> None:
        """Raise ``ValueError`` naming the template file and key when ``matching.grounding`` lacks a
        box placeholder the grounded mode needs."""
        names = placeholders(self.matching.grounding)
        missing = [n for n in GROUNDING_PLACEHOLDERS if n not in names]
        if missing:
            raise ValueError(f"{self.origin or self.name}: matching.grounding must contain "
                             f"{', '.join('{' + n + '}' for n in GROUNDING_PLACEHOLDERS)} for the grounded prompt "
                             f"(recogniser.grounded: true); missing {', '.join('{' + n + '}' for n in missing)} in "
                             f"{self.matching.grounding!r}. Add them, or set recogniser.grounded: false")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "name": self.name,
                "matching": {f.name: getattr(self.matching, f.name) for f in fields(MatchingTemplate)},
                "training_free": {f.name: getattr(self.training_free, f.name) for f in fields(TrainingFreeTemplate)}}


def builtin_templates() -> list[str]:
    folder = resources.files("hoi_mllm.prompts").joinpath("templates")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def placeholders(text: str) -> set[str]:
    """Names of the ``{...}`` placeholders of a format string."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _check_section(section: dict, allowed: dict[str, tuple[str, ...]], where: str) -> dict:
    if not isinstance(section, dict):
        raise ValueError(f"{where}: must be an object with fields {', '.join(allowed)}")
    section = {**{k: v for k, v in OPTIONAL_FIELDS.items() if k in allowed}, **section}
    missing = [k for k in allowed if k not in section]
    unknown = [k for k in section if k not in allowed]
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}; allowed: {', '.join(allowed)}")
    for key, text in section.items():
        if not isinstance(text, str):
            raise ValueError(f"{where}.{key}: must be a string, got {type(text).__name__}")
        try:
            names = placeholders(text)
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: not a valid format string ({exc})") from exc
        bad = sorted(names - set(allowed[key]))
        if bad:
            raise ValueError(f"{where}.{key}: placeholders {bad} not allowed; allowed: "
                             f"{', '.join('{' + a + '}' for a in allowed[key]) or 'none'}")
    return section


def templates_from_dict(data: dict, origin: str = "<dict>") -> PromptTemplates:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{origin}: 'format' must be {FORMAT!r}")
    m = _check_section(data.get("matching"), MATCHING_FIELDS, f"{origin}: matching")
    t = _check_section(data.get("training_free"), TRAINING_FREE_FIELDS, f"{origin}: training_free")
    return PromptTemplates(str(data.get("name", Path(origin).stem)), MatchingTemplate(**m), TrainingFreeTemplate(**t),
                           origin)


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> PromptTemplates:
    text = resources.files("hoi_mllm.prompts").joinpath(f"templates/{name}.json").read_text()
    return templates_from_dict(json.loads(text), origin=f"built-in template {name}")


def load_templates(name_or_path: str | Path | PromptTemplates = "default") -> PromptTemplates:
    """A built-in template by name (see :func:`builtin_templates`), a template JSON file, or passed through."""
    if isinstance(name_or_path, PromptTemplates):
        return name_or_path
    if str(name_or_path) in builtin_templates():
        return _load_builtin(str(name_or_path))
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {str(name_or_path)!r} is neither a built-in "
                                f"({', '.join(builtin_templates())}) nor a file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"prompt template {path}: not valid JSON ({exc})") from exc
    return templates_from_dict(data, origin=str(path))


class PromptIds:
    """Token ids of a template's pieces for one tokenizer and vocabulary, computed once and cached.

    Every method returns a ``[L]`` int64 CPU tensor (no BOS/EOS); the caller concatenates pieces
    and special tokens. Pieces are tokenised separately, so a prompt's ids are the same wherever
    the piece appears (cached prefix, packed sequence or the unshared reference).
    """

    def __init__(self, backbone, vocabulary, templates: PromptTemplates):
        self.backbone = backbone
        self.vocabulary = vocabulary
        self.templates = templates
        self._cache: dict[tuple, Tensor] = {}
        self.match_id = backbone.special_token_id(backbone.MATCH_TOKEN)
        self.answer_id = backbone.special_token_id(backbone.ANSWER_TOKEN)
        self.pair_ids = backbone.pair_token_ids()

    def _ids(self, key: tuple, text: str) -> Tensor:
        if key not in self._cache:
            self._cache[key] = self.backbone.tokenize(text) if text else torch.zeros(0, dtype=torch.long)
        return self._cache[key]

    def _class_fields(self, cls: int) -> dict:
        o, v = self.vocabulary.classes[cls]
        return {"phrase": self.vocabulary.phrase(cls), "verb": self.vocabulary.verb_name(v),
                "object": self.vocabulary.object_name(o)}

    # matching
    def question(self, obj: int) -> Tensor:
        """``[L]`` the per-pair question for an object id."""
        return self._ids(("question", obj), self.templates.matching.question.format(
            object=self.vocabulary.object_name(obj)))

    def grounding(self, person: str, obj_box: str, obj: int) -> Tensor:
        """``[L]`` the per-pair grounding text (boxes already in the family's convention); not cached:
        coordinates differ from pair to pair."""
        text = self.templates.matching.grounding.format(person=person, object=obj_box,
                                                        object_name=self.vocabulary.object_name(obj))
        return self.backbone.tokenize(text) if text else torch.zeros(0, dtype=torch.long)

    def candidate(self, cls: int) -> Tensor:
        """``[L]`` one candidate phrase (the caller appends ``<|match|>``)."""
        return self._ids(("candidate", cls), self.templates.matching.candidate.format(**self._class_fields(cls)))

    def candidates_header(self, obj: int) -> Tensor:
        return self._ids(("header", obj), self.templates.matching.candidates_header.format(
            object=self.vocabulary.object_name(obj)))

    def answer(self) -> Tensor:
        return self._ids(("answer",), self.templates.matching.answer)

    # training-free
    def training_free_answer(self, cls: int) -> Tensor:
        return self._ids(("tf_answer", cls), self.templates.training_free.answer.format(**self._class_fields(cls)))

    def text(self, text: str) -> Tensor:
        """``[L]`` ids of arbitrary text, cached by the text."""
        return self._ids(("text", text), text)
