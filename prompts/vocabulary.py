"""HOI vocabularies: objects, verbs, verb-object classes, their phrases, the prior and zero-shot splits.

A vocabulary is data (a JSON file in ``prompts/data/`` or anywhere on disk); this module only reads
it and answers questions about it. Built-in names: ``hico-det``, ``vcoco``. A synthetic world writes
its own vocabulary file next to its annotations, and ``Vocabulary.load(path)`` reads it.

File format (``"format": "hoi-mllm/vocabulary"``, ``"version": 1``)::

    {"name": str, "objects": [str, ...], "verbs": [str, ...],
     "human_object": int,                 # index of "person" in objects
     "no_interaction_verb": int | null,
     "classes": [[object, verb], ...],    # class id = position in this list
     "phrases": [str, ...],               # one natural verb phrase per class
     "rare": [class, ...],
     "splits": {name: {"kind": "unseen_combination" | "unseen_verb" | "unseen_object",
                       "unseen": [class, ...]}}}
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

FORMAT = "hoi-mllm/vocabulary"
BUILTIN = {"hico-det": "hico_det.json", "vcoco": "vcoco.json"}
ALIASES = {"hicodet": "hico-det", "hico_det": "hico-det", "hico": "hico-det", "v-coco": "vcoco"}
SPLIT_KINDS = ("unseen_combination", "unseen_verb", "unseen_object")


class VocabularyError(ValueError):
    """A vocabulary file or a question to a vocabulary is invalid."""


def normalise_name(name: str) -> str:
    """Canonical form of a class name for matching across sources ("Sports Ball" == "sports_ball")."""
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def _suggest(name: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    close = difflib.get_close_matches(name, allowed, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"allowed: {', '.join(allowed)}.{hint}"


@dataclass(frozen=True)
class Split:
    """A zero-shot split: the unseen classes (held out of training) and what kind of split it is."""

    name: str
    kind: str
    unseen: frozenset[int]


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Objects, verbs and verb-object classes of one dataset, with phrases, prior and splits.

    Class ids, object ids and verb ids are 0-based positions in ``classes``, ``objects`` and ``verbs``.
    """

    name: str
    objects: tuple[str, ...]
    verbs: tuple[str, ...]
    classes: tuple[tuple[int, int], ...]  # class -> (object, verb)
    phrases: tuple[str, ...]
    human_object: int
    no_interaction_verb: int | None = None
    rare: frozenset[int] = frozenset()
    splits: dict[str, Split] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    source: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "Vocabulary":
        """Load a built-in vocabulary by name (``hico-det``, ``vcoco``) or a vocabulary JSON file."""
        key = str(name_or_path).lower()
        key = ALIASES.get(key, key)
        if key in BUILTIN:
            return _load_builtin(key)
        from hoi_mllm.prompts.union import UNION_FORMAT, UNIONS, builtin_union, union_vocabulary

        if key in UNIONS:  # a vocabulary made of two (prompts/union.py)
            return builtin_union(key)
        path = Path(name_or_path)
        if path.is_dir():
            path = path / "vocabulary.json"
        if not path.exists():
            raise VocabularyError(
                f"unknown vocabulary {str(name_or_path)!r}: not a built-in name and no such file; "
                f"built-in: {', '.join([*BUILTIN, *UNIONS])}, or a path to a {FORMAT} JSON file"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and data.get("format") == UNION_FORMAT:
            return union_vocabulary(data, origin=str(path))
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "Vocabulary":
        if data.get("format") != FORMAT:
            raise VocabularyError(f"{origin}: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        for key in ("name", "objects", "verbs", "classes", "phrases", "human_object"):
            if key not in data:
                raise VocabularyError(f"{origin}: missing field {key!r}")
        known = {"format", "version", "name", "objects", "verbs", "classes", "phrases", "human_object",
                 "no_interaction_verb", "rare", "splits", "source"}
        splits = {
            name: Split(name=name, kind=s.get("kind", "unseen_combination"), unseen=frozenset(s["unseen"]))
            for name, s in data.get("splits", {}).items()
        }
        vocab = cls(
            name=data["name"],
            objects=tuple(data["objects"]),
            verbs=tuple(data["verbs"]),
            classes=tuple((int(o), int(v)) for o, v in data["classes"]),
            phrases=tuple(data["phrases"]),
            human_object=int(data["human_object"]),
            no_interaction_verb=data.get("no_interaction_verb"),
            rare=frozenset(data.get("rare", [])),
            splits=splits,
            extra={k: v for k, v in data.items() if k not in known},
            source=data.get("source", ""),
        )
        vocab.validate(origin)
        return vocab

    def to_dict(self) -> dict:
        out = {
            "format": FORMAT, "version": 1, "name": self.name, "source": self.source,
            "objects": list(self.objects), "verbs": list(self.verbs),
            "human_object": self.human_object, "no_interaction_verb": self.no_interaction_verb,
            "classes": [list(c) for c in self.classes], "phrases": list(self.phrases),
            "rare": sorted(self.rare),
            "splits": {n: {"kind": s.kind, "unseen": sorted(s.unseen)} for n, s in self.splits.items()},
        }
        out.update(self.extra)
        return out

    def save(self, path: str | Path) -> None:
        from hoi_mllm.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    def validate(self, origin: str = "") -> None:
        """Check internal consistency; raise :class:`VocabularyError` naming the first problem."""
        where = f"{origin or self.name}: "
        n_obj, n_verb, n_cls = len(self.objects), len(self.verbs), len(self.classes)
        if not 0 <= self.human_object < n_obj:
            raise VocabularyError(f"{where}human_object {self.human_object} outside 0..{n_obj - 1}")
        if self.no_interaction_verb is not None and not 0 <= self.no_interaction_verb < n_verb:
            raise VocabularyError(f"{where}no_interaction_verb {self.no_interaction_verb} outside 0..{n_verb - 1}")
        if len(self.phrases) != n_cls:
            raise VocabularyError(f"{where}{len(self.phrases)} phrases for {n_cls} classes")
        seen: set[tuple[int, int]] = set()
        for i, (o, v) in enumerate(self.classes):
            if not (0 <= o < n_obj and 0 <= v < n_verb):
                raise VocabularyError(f"{where}class {i} = (object {o}, verb {v}) out of range")
            if (o, v) in seen:
                raise VocabularyError(f"{where}class {i} repeats (object {o}, verb {v})")
            seen.add((o, v))
        for c in self.rare:
            if not 0 <= c < n_cls:
                raise VocabularyError(f"{where}rare class {c} outside 0..{n_cls - 1}")
        for s in self.splits.values():
            if s.kind not in SPLIT_KINDS:
                raise VocabularyError(f"{where}split {s.name!r} has kind {s.kind!r}; allowed: {', '.join(SPLIT_KINDS)}")
            bad = [c for c in s.unseen if not 0 <= c < n_cls]
            if bad:
                raise VocabularyError(f"{where}split {s.name!r} names classes out of range: {bad[:5]}")

    # ------------------------------------------------------------------ sizes
    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def num_verbs(self) -> int:
        return len(self.verbs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ lookups
    @cached_property
    def _class_index(self) -> dict[tuple[int, int], int]:
        return {(v, o): i for i, (o, v) in enumerate(self.classes)}

    @cached_property
    def _classes_by_object(self) -> tuple[tuple[int, ...], ...]:
        by_obj: list[list[int]] = [[] for _ in self.objects]
        for i, (o, _v) in enumerate(self.classes):
            by_obj[o].append(i)
        return tuple(tuple(sorted(c, key=lambda k: self.classes[k][1])) for c in by_obj)

    @cached_property
    def class_table(self) -> np.ndarray:
        """``[num_objects, num_verbs]`` int array: class id of (object, verb), -1 where invalid."""
        table = np.full((self.num_objects, self.num_verbs), -1, dtype=np.int64)
        for i, (o, v) in enumerate(self.classes):
            table[o, v] = i
        return table

    @cached_property
    def class_objects(self) -> np.ndarray:
        """``[num_classes]`` object id of each class."""
        return np.array([o for o, _ in self.classes], dtype=np.int64)

    @cached_property
    def class_verbs(self) -> np.ndarray:
        """``[num_classes]`` verb id of each class."""
        return np.array([v for _, v in self.classes], dtype=np.int64)

    @cached_property
    def verb_action_ids(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """``([num_verbs] action id of each verb, action names)``: V-COCO's action-roles grouped by action.

        From the vocabulary's ``verb_actions`` (``vcoco`` has it: ``eat obj`` and ``eat instr`` are
        both ``eat``); a vocabulary without it (HICO-DET, the synthetic world) has one action per verb.
        """
        names = self.extra.get("verb_actions")
        if names is None or len(names) != self.num_verbs:
            names = list(self.verbs)
        actions = tuple(dict.fromkeys(names))
        return np.array([actions.index(n) for n in names], dtype=np.int64), actions

    def check_object(self, obj: int) -> int:
        if not isinstance(obj, (int, np.integer)) or not 0 <= int(obj) < self.num_objects:
            raise VocabularyError(
                f"object index {obj!r} outside the {self.name} vocabulary (0..{self.num_objects - 1})"
            )
        return int(obj)

    def check_verb(self, verb: int) -> int:
        if not isinstance(verb, (int, np.integer)) or not 0 <= int(verb) < self.num_verbs:
            raise VocabularyError(f"verb index {verb!r} outside the {self.name} vocabulary (0..{self.num_verbs - 1})")
        return int(verb)

    def check_class(self, cls: int) -> int:
        if not isinstance(cls, (int, np.integer)) or not 0 <= int(cls) < self.num_classes:
            raise VocabularyError(f"class index {cls!r} outside the {self.name} vocabulary (0..{self.num_classes - 1})")
        return int(cls)

    def classes_for_object(self, obj: int) -> tuple[int, ...]:
        """Valid classes (the prior) for an object, ordered by verb id: the candidates of a pair."""
        return self._classes_by_object[self.check_object(obj)]

    def verbs_for_object(self, obj: int) -> tuple[int, ...]:
        """Valid verbs for an object (the prior), ascending."""
        return tuple(self.classes[c][1] for c in self.classes_for_object(obj))

    def class_of(self, verb: int, obj: int) -> int | None:
        """Class id of (verb, object), or ``None`` when the combination is not a class."""
        return self._class_index.get((self.check_verb(verb), self.check_object(obj)))

    def phrase(self, cls: int) -> str:
        return self.phrases[self.check_class(cls)]

    def object_index(self, name: str) -> int:
        """Object id of a name, tolerant to case, spaces and underscores."""
        idx = self._object_by_name.get(normalise_name(name))
        if idx is None:
            raise VocabularyError(f"object {name!r} not in the {self.name} vocabulary; {_suggest(name, self.objects)}")
        return idx

    def verb_index(self, name: str) -> int:
        idx = {normalise_name(v): i for i, v in enumerate(self.verbs)}.get(normalise_name(name))
        if idx is None:
            raise VocabularyError(f"verb {name!r} not in the {self.name} vocabulary; {_suggest(name, self.verbs)}")
        return idx

    @cached_property
    def _object_by_name(self) -> dict[str, int]:
        table = {normalise_name(o): i for i, o in enumerate(self.objects)}
        for alias, target in COCO_ALIASES.items():
            if target in table and alias not in table:
                table[alias] = table[target]
        return table

    def object_index_or_none(self, name: str) -> int | None:
        return self._object_by_name.get(normalise_name(name))

    def object_name(self, obj: int) -> str:
        return self.objects[self.check_object(obj)].replace("_", " ")

    def verb_name(self, verb: int) -> str:
        return self.verbs[self.check_verb(verb)].replace("_", " ")

    def class_name(self, cls: int) -> str:
        o, v = self.classes[self.check_class(cls)]
        return f"{self.verb_name(v)} {self.object_name(o)}"

    # ------------------------------------------------------------------ splits
    def split(self, name: str) -> Split:
        if name not in self.splits:
            allowed = list(self.splits) or ["(none: this vocabulary has no zero-shot splits)"]
            raise VocabularyError(f"unknown split {name!r} for {self.name}; {_suggest(name, allowed)}")
        return self.splits[name]

    def unseen_classes(self, split: str | None) -> frozenset[int]:
        return frozenset() if split in (None, "", "default") else self.split(split).unseen

    def seen_classes(self, split: str | None) -> frozenset[int]:
        return frozenset(range(self.num_classes)) - self.unseen_classes(split)

    def unseen_verbs(self, split: str | None) -> frozenset[int]:
        """Verbs that appear in no seen class of the split.

        Non-empty for unseen-verb splits by design, and possibly for unseen-combination splits too
        where every class of a verb is held out (HICO-DET's uc0..uc4 hold out some verbs entirely).
        """
        seen = {self.classes[c][1] for c in self.seen_classes(split)}
        return frozenset(v for v in range(self.num_verbs) if v not in seen)

    def unseen_objects(self, split: str | None) -> frozenset[int]:
        """Objects that appear in no seen class of the split."""
        seen = {self.classes[c][0] for c in self.seen_classes(split)}
        return frozenset({self.classes[c][0] for c in range(self.num_classes)} - seen)

    @property
    def non_rare(self) -> frozenset[int]:
        return frozenset(range(self.num_classes)) - self.rare

    # ------------------------------------------------------------------ COCO ids
    @cached_property
    def coco80_to_object(self) -> np.ndarray:
        """``[80]`` object id of each contiguous COCO class (ultralytics order), -1 where absent."""
        coco = coco_categories()
        return np.array([self.object_index_or_none(n) if self.object_index_or_none(n) is not None else -1
                         for n in coco["names"]], dtype=np.int64)

    @cached_property
    def coco91_to_object(self) -> dict[int, int]:
        """COCO category id (1..90, the 91-id scheme of the COCO json and DETR) -> object id."""
        coco = coco_categories()
        return {cid: int(o) for cid, o in zip(coco["category_ids"], self.coco80_to_object) if o >= 0}

    def summary(self, split: str | None = None) -> dict:
        """Counts of classes, verbs and objects, seen and unseen for a split."""
        unseen = self.unseen_classes(split)
        out = {
            "vocabulary": self.name, "split": split or "default",
            "classes": self.num_classes, "verbs": self.num_verbs, "objects": self.num_objects,
            "seen_classes": self.num_classes - len(unseen), "unseen_classes": len(unseen),
            "unseen_verbs": len(self.unseen_verbs(split)) if split else 0,
            "unseen_objects": len(self.unseen_objects(split)) if split else 0,
            "rare_classes": len(self.rare), "non_rare_classes": self.num_classes - len(self.rare),
        }
        if split:
            out["split_kind"] = self.split(split).kind
        return out


COCO_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv",
                "tv monitor": "tv", "hair dryer": "hair drier", "diningtable": "dining table",
                "pottedplant": "potted plant", "ball": "sports ball", "mobile phone": "cell phone",
                "television": "tv", "cellphone": "cell phone", "human": "person", "people": "person"}


@lru_cache(maxsize=None)
def coco_categories() -> dict:
    """The COCO-80 names (contiguous order) and their COCO-91 category ids, from ``prompts/data/coco.json``."""
    return json.loads(resources.files("hoi_mllm.prompts").joinpath("data/coco.json").read_text())


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> Vocabulary:
    text = resources.files("hoi_mllm.prompts").joinpath(f"data/{BUILTIN[name]}").read_text()
    return Vocabulary.from_dict(json.loads(text), origin=f"built-in {name}")


def load_vocabulary(name_or_path: str | Path | Vocabulary) -> Vocabulary:
    """Return a :class:`Vocabulary` for a name, a path, or an existing vocabulary (passed through)."""
    return name_or_path if isinstance(name_or_path, Vocabulary) else Vocabulary.load(name_or_path)
