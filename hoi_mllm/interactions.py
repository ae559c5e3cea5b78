"""New interactions as text: verb-object phrases added to a vocabulary at inference, no training.

This is what an MLLM recogniser buys: a class is a phrase the language model reads, not a row of a
classifier, so ``"feed giraffe"`` can be scored by a model that never saw it in training (matching
mode: the phrase is one more candidate before a ``<match>`` token; training-free: one more answer
whose likelihood is measured).

Each interaction is one of:

- a string ``"VERB OBJECT"`` (the object is the longest trailing run of words naming an object of
  the vocabulary: ``"repair hair drier"``), optionally followed by more objects after commas
  (``"feed giraffe, zebra, elephant"``: one new verb over several objects is one entry);
- a mapping ``{"verb": "feed", "objects": ["giraffe", "zebra"], "phrase": "feeding a {object}"}``
  (``object`` instead of ``objects`` for one; ``phrase`` optional, ``{verb}`` / ``{object}`` filled in;
  default ``"VERB OBJECT"``).

A file (``.yaml`` / ``.yml`` / ``.json``) holds a list of them (or ``{"interactions": [...]}``).

An object not in the vocabulary is an error naming close names; an empty phrase is an error; a
verb-object pair the vocabulary already has is reused (and said so), never added twice.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from hoi_mllm.prompts.vocabulary import Vocabulary, VocabularyError, normalise_name

ARTICLES = ("a", "an", "the")


@dataclass(frozen=True)
class Interaction:
    """One verb over one object, with the phrase the recogniser reads."""

    verb: str
    object: int
    phrase: str


@dataclass
class InteractionReport:
    """What :func:`add_interactions` did: classes added and pairs reused, as sentences."""

    added: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return ([f"added interaction: {a}" for a in self.added] + [f"reused: {r}" for r in self.reused])


def _object_suggestions(name: str, vocab: Vocabulary) -> str:
    names = [o.replace("_", " ") for o in vocab.objects]
    close = difflib.get_close_matches(normalise_name(name), names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"objects: {', '.join(names[:20])}, ..."
    return f"object {name!r} is not in the {vocab.name} vocabulary ({hint})"


def _split_verb_object(text: str, vocab: Vocabulary) -> tuple[str, int]:
    """``"ride a bicycle"`` -> ``("ride a", bicycle id)``: the longest trailing words naming an object."""
    words = normalise_name(text).split()
    for start in range(1, len(words)):
        obj = vocab.object_index_or_none(" ".join(words[start:]))
        if obj is not None:
            verb = words[:start]
            while len(verb) > 1 and verb[-1] in ARTICLES:  # "ride a bicycle": the verb is "ride"
                verb = verb[:-1]
            return " ".join(verb), obj
    if len(words) < 2:
        raise VocabularyError(f"interaction {text!r} needs a verb and an object, e.g. 'feed giraffe'")
    raise VocabularyError(f"interaction {text!r}: {_object_suggestions(words[-1], vocab)}")


def _object(name, vocab: Vocabulary, where: str) -> int:
    if not isinstance(name, str) or not name.strip():
        raise VocabularyError(f"interaction {where}: an empty object name")
    obj = vocab.object_index_or_none(name)
    if obj is None:
        raise VocabularyError(f"interaction {where}: {_object_suggestions(name, vocab)}")
    return obj


def parse_interactions(entries: Iterable, vocab: Vocabulary) -> list[Interaction]:
    """Strings and mappings (see the module docstring) -> :class:`Interaction` per verb and object.

    Raises:
        VocabularyError (a ValueError): an empty phrase, no object, an unknown object (naming close names).
    """
    out: list[Interaction] = []
    for i, entry in enumerate(entries):
        where = f"#{i + 1}"
        phrase_template = None
        if isinstance(entry, str):
            head, *more = entry.split(",")
            if not head.strip():
                raise VocabularyError(f"interaction {where} is an empty phrase; give 'VERB OBJECT', e.g. 'feed giraffe'")
            verb, first = _split_verb_object(head, vocab)
            objects = [first] + [_object(m, vocab, f"{entry!r}") for m in more]
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - {"verb", "object", "objects", "phrase"})
            if unknown:
                raise VocabularyError(f"interaction {where}: unknown key(s) {unknown}; allowed: verb, object, objects, "
                                      "phrase")
            verb = entry.get("verb")
            if not isinstance(verb, str) or not verb.strip():
                raise VocabularyError(f"interaction {where}: 'verb' must be a non-empty string")
            verb = normalise_name(verb)
            names = entry.get("objects", [entry["object"]] if "object" in entry else [])
            if isinstance(names, str):
                names = [names]
            if not names:
                raise VocabularyError(f"interaction {where} ({verb!r}): give 'object' or 'objects'")
            objects = [_object(n, vocab, f"{where} ({verb!r})") for n in names]
            phrase_template = entry.get("phrase")
            if phrase_template is not None and (not isinstance(phrase_template, str) or not phrase_template.strip()):
                raise VocabularyError(f"interaction {where} ({verb!r}): 'phrase' is empty")
        else:
            raise VocabularyError(f"interaction {where} is a {type(entry).__name__}; give a string 'VERB OBJECT' "
                                  "or a mapping {verb, objects, phrase}")
        for obj in objects:
            name = vocab.object_name(obj)
            phrase = (phrase_template.format(verb=verb, object=name) if phrase_template else f"{verb} {name}")
            out.append(Interaction(verb, obj, " ".join(phrase.split())))
    return out


def read_interactions(path: str | Path) -> list:
    """The list of entries in a YAML or JSON file (a list, or ``{"interactions": [...]}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interactions file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if isinstance(data, dict) and "interactions" in data:
        data = data["interactions"]
    if not isinstance(data, list):
        raise VocabularyError(f"{path}: expected a list of interactions (or {{interactions: [...]}}), "
                              f"got {type(data).__name__}")
    return data


def add_interactions(vocab: Vocabulary, entries: Iterable) -> tuple[Vocabulary, InteractionReport]:
    """A copy of ``vocab`` with the interactions' classes appended (new verbs appended too).

    Existing object, verb and class ids are unchanged, so detectors and trained weights still fit.
    The copy is named ``<name>+<n>`` (n classes added) so its predictions are never read against
    the original vocabulary.
    """
    wanted = parse_interactions(entries, vocab)
    verbs = list(vocab.verbs)
    verb_ids = {normalise_name(v): i for i, v in enumerate(verbs)}
    actions = vocab.extra.get("verb_actions")
    if actions:  # V-COCO: "hold obj" is the verb; its action "hold" is the name people say
        for i, a in enumerate(actions):
            verb_ids.setdefault(normalise_name(a), i)
    classes, phrases = list(vocab.classes), list(vocab.phrases)
    index = {c: i for i, c in enumerate(classes)}
    extra = {k: (list(v) if isinstance(v, list) else v) for k, v in vocab.extra.items()}
    report = InteractionReport()
    for it in wanted:
        v = verb_ids.get(normalise_name(it.verb))
        if v is None:
            v = len(verbs)
            verbs.append(it.verb)
            verb_ids[normalise_name(it.verb)] = v
            if "verb_actions" in extra:
                extra["verb_actions"].append(it.verb)
            if "verb_roles" in extra:
                extra["verb_roles"].append("obj")
        cls = index.get((it.object, v))
        if cls is not None:
            report.reused.append(f"{it.phrase!r} is already class {cls} ({phrases[cls]!r}) of {vocab.name}")
            continue
        index[(it.object, v)] = len(classes)
        classes.append((it.object, v))
        phrases.append(it.phrase)
        report.added.append(f"{it.phrase!r} (class {len(classes) - 1})")
    n = len(classes) - len(vocab.classes)
    if n == 0:
        return vocab, report
    extended = replace(vocab, name=f"{vocab.name}+{n}", verbs=tuple(verbs), classes=tuple(classes),
                       phrases=tuple(phrases), extra=extra, source=f"{vocab.source or vocab.name} + {n} interaction(s)")
    extended.validate("vocabulary with interactions")
    return extended, report


def use_vocabulary(recogniser, vocabulary: Vocabulary) -> None:
    """Point a recogniser (matching or training-free) at an extended vocabulary (same objects, verbs
    and classes first): its prompt pieces are rebuilt, its allowed classes gain the new ones."""
    from hoi_mllm.models.prompting import PromptIds

    old = recogniser.vocabulary
    if vocabulary.objects != old.objects or vocabulary.classes[:len(old.classes)] != old.classes:
        raise ValueError(f"vocabulary {vocabulary.name!r} does not extend {old.name!r} (objects and classes must "
                         "come first, unchanged)")
    recogniser.vocabulary = vocabulary
    recogniser.prompt_ids = PromptIds(recogniser.backbone, vocabulary, recogniser.templates)
    if getattr(recogniser, "allowed_classes", None) is not None:
        recogniser.allowed_classes = frozenset(recogniser.allowed_classes) | frozenset(
            range(len(old.classes), len(vocabulary.classes)))
