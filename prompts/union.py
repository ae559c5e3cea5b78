"""A union action set: one vocabulary made of two, and the verb mapping between them.

EoID scales its action set up by training on HICO-DET plus detection-only V-COCO images with 123
verbs: HICO-DET's 117 and the 6 V-COCO actions HICO-DET lacks (surf, ski, snowboard, skateboard,
eat_with, work_on), 9 new verb-object classes, and a map from those verbs to V-COCO's action-roles
for the V-COCO evaluation (``datasets/static_hico_vcoco.py``). Here that is data,
``prompts/data/hico_vcoco_union.json`` (format ``hoi-mllm/vocabulary-union``)::

    {"name": str, "base": vocabulary, "other": vocabulary,
     "new_verbs": [verb, ...],                 # verbs of the union that the base lacks
     "new_classes": [[verb, object(, phrase)], ...],  # their classes (object names of the base)
     "verb_map": {union verb: other verb},     # where the names differ (the V-COCO action-roles)
     "split": name}                            # the split "actions only from detection-only data"

:func:`union_vocabulary` builds it: the base's objects, verbs, classes and phrases first (base ids
unchanged, so base annotation files read into it as they are), then the new verbs and classes; a
new class's phrase is its own (a third element) or the other vocabulary's phrase of the class its
verb maps to. One split of kind ``unseen_verb``, ``split``, holds the new classes: its seen
classes are the "actions from labelled data", its unseen ones the "actions only from detection-only
data". The union's ``extra`` keeps ``verb_map``, the ``other`` name and ``verb_map_outside`` (mapped
action-roles that the other vocabulary file lacks: V-COCO's ``point instr``, which its 24-class files
drop). :func:`map_predictions` turns a predictions file of the union into one of the other.

Built-in: ``hico-det+vcoco`` (``load_vocabulary("hico-det+vcoco")``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from hoi_mllm.prompts.vocabulary import Split, Vocabulary, VocabularyError, load_vocabulary, normalise_name

UNION_FORMAT = "hoi-mllm/vocabulary-union"
UNIONS = {"hico-det+vcoco": "hico_vcoco_union.json"}


def _verb(vocab: Vocabulary, name: str) -> int | None:
    want = normalise_name(name)
    return next((i for i, v in enumerate(vocab.verbs) if normalise_name(v) == want), None)


def union_vocabulary(spec: dict, origin: str = "<dict>") -> Vocabulary:
    """The union vocabulary a ``hoi-mllm/vocabulary-union`` dict describes (module docstring).

    Raises:
        VocabularyError: a field missing, a new verb the base has, a class naming an object the base lacks or
            a verb that is not new, a mapped verb missing from both vocabularies (or its target from the other).
    """
    if spec.get("format") != UNION_FORMAT:
        raise VocabularyError(f"{origin}: 'format' is {spec.get('format')!r}, expected {UNION_FORMAT!r}")
    for key in ("name", "base", "other", "new_verbs", "new_classes", "verb_map", "split"):
        if key not in spec:
            raise VocabularyError(f"{origin}: missing field {key!r}")
    base, other = load_vocabulary(spec["base"]), load_vocabulary(spec["other"])
    new = [str(v) for v in spec["new_verbs"]]
    for v in new:
        if _verb(base, v) is not None:
            raise VocabularyError(f"{origin}: new verb {v!r} is already a verb of {base.name}")
    verbs = list(base.verbs) + new
    classes, phrases = list(base.classes), list(base.phrases)
    outside = sorted(set(spec["verb_map"].values()) - set(other.verbs))
    allowed_outside = set(other.extra.get("vsrl_eval_roles_not_in_vocabulary", []))
    for verb, target in spec["verb_map"].items():
        if verb not in verbs:
            raise VocabularyError(f"{origin}: verb_map names {verb!r}, a verb of neither {base.name} nor the new "
                                  f"verbs; {base.name} verbs and new verbs: e.g. {', '.join(verbs[-len(new) - 3:])}")
        if target not in other.verbs and target not in allowed_outside:
            raise VocabularyError(f"{origin}: verb_map maps {verb!r} to {target!r}, a verb {other.name} lacks; "
                                  f"{other.name} verbs: {', '.join(other.verbs)}")
    for row in spec["new_classes"]:
        if not (isinstance(row, (list, tuple)) and len(row) in (2, 3)):
            raise VocabularyError(f"{origin}: new_classes row {row!r} is not [verb, object] or [verb, object, phrase]")
        verb, obj, own = row[0], row[1], (row[2] if len(row) == 3 else None)
        if verb not in new:
            raise VocabularyError(f"{origin}: new class ({verb!r}, {obj!r}) does not use a new verb "
                                  f"({', '.join(new)})")
        o = base.object_index_or_none(obj)
        if o is None:
            raise VocabularyError(f"{origin}: new class ({verb!r}, {obj!r}) names an object {base.name} lacks")
        mapped = spec["verb_map"].get(verb)
        theirs = other.class_of(other.verb_index(mapped), other.object_index(base.objects[o])) \
            if mapped in other.verbs and other.object_index_or_none(base.objects[o]) is not None else None
        classes.append((o, verbs.index(verb)))
        if own is None and theirs is None:
            raise VocabularyError(f"{origin}: new class ({verb!r}, {obj!r}) needs a phrase: {other.name} has no class "
                                  f"({mapped!r}, {obj!r}) to take it from; give [verb, object, phrase]")
        phrases.append(own if own is not None else other.phrases[theirs])
    unseen = frozenset(range(base.num_classes, len(classes)))
    splits = {spec["split"]: Split(spec["split"], "unseen_verb", unseen)}
    vocab = Vocabulary(name=spec["name"], objects=base.objects, verbs=tuple(verbs), classes=tuple(classes),
                       phrases=tuple(phrases), human_object=base.human_object,
                       no_interaction_verb=base.no_interaction_verb, rare=base.rare, splits=splits,
                       extra={"verb_map": dict(spec["verb_map"]), "other": other.name, "base": base.name,
                              "verb_map_outside": outside},
                       source=spec.get("source", origin))
    vocab.validate(origin)
    return vocab


@lru_cache(maxsize=None)
def builtin_union(name: str) -> Vocabulary:
    """A built-in union vocabulary by name (:data:`UNIONS`)."""
    text = resources.files("hoi_mllm.prompts").joinpath(f"data/{UNIONS[name]}").read_text()
    return union_vocabulary(json.loads(text), origin=f"built-in {name}")


def load_union(path: str | Path) -> Vocabulary:
    """A union vocabulary from a ``hoi-mllm/vocabulary-union`` file."""
    path = Path(path)
    try:
        return union_vocabulary(json.loads(path.read_text()), origin=str(path))
    except json.JSONDecodeError as exc:
        raise VocabularyError(f"{path}: not valid JSON ({exc})") from exc


def verb_mapping(union: Vocabulary, other: Vocabulary) -> np.ndarray:
    """``[union verbs]`` the other vocabulary's verb of each union verb (the union's ``verb_map``, else the same
    name), -1 where there is none."""
    table = union.extra.get("verb_map", {})
    out = np.full(union.num_verbs, -1, dtype=np.int64)
    for v, name in enumerate(union.verbs):
        target = table.get(name, name)
        j = _verb(other, target)
        out[v] = -1 if j is None else j
    return out


def map_predictions(predictions, union: Vocabulary, other: Vocabulary):
    """A predictions file of ``union`` as one of ``other``: each triplet's verb through :func:`verb_mapping`
    (triplets of a verb without a counterpart dropped), several union verbs mapping to one action-role on the same
    pair kept once, with the highest score (``sit_on`` and ``sit_at`` both give ``sit instr``).

    Returns ``(PredictionsFile, counts)`` with counts of the triplets kept, merged and unmapped (by verb name).
    """
    from hoi_mllm.predictions import PredictionsFile
    from hoi_mllm.records import HOITriplets

    verbs = verb_mapping(union, other)
    obj = np.array([-1 if other.object_index_or_none(n) is None else other.object_index_or_none(n)
                    for n in union.objects], dtype=np.int64)
    counts = {"kept": 0, "merged": 0, "unmapped": {}}
    images = []
    for t in predictions.images:
        v, o = verbs[t.verbs], obj[t.objects]
        ok = (v >= 0) & (o >= 0)
        for name, n in zip(*np.unique(np.asarray(union.verbs)[t.verbs[~ok]], return_counts=True)):
            counts["unmapped"][str(name)] = counts["unmapped"].get(str(name), 0) + int(n)
        best: dict[tuple, int] = {}
        for i in np.flatnonzero(ok)[np.argsort(-t.scores[ok], kind="stable")]:
            key = (*np.round(t.human_boxes[i], 2), *np.nan_to_num(np.round(t.object_boxes[i], 2), nan=-1.0),
                   int(o[i]), int(v[i]))
            if key in best:
                counts["merged"] += 1
                continue
            best[key] = int(i)
        rows = np.asarray(sorted(best.values()), dtype=np.int64)
        counts["kept"] += len(rows)
        images.append(HOITriplets.create(t.human_boxes[rows], t.object_boxes[rows], o[rows], v[rows], t.scores[rows],
                                         t.file_name, t.image_size, **t.extra))
    meta = dict(predictions.meta)
    meta["mapped_from"] = union.name
    return PredictionsFile(other.name, images, meta), counts


def action_split(union: Vocabulary, other: Vocabulary) -> tuple[frozenset[int], frozenset[int]]:
    """``(seen, unseen)`` verbs of ``other`` (V-COCO's action-roles): seen where some verb of the union's base maps
    to it (it has labelled data), unseen where only the union's new verbs do (detection-only data alone teaches
    it: surf, ski, snowboard, skateboard instr, eat instr, work_on_computer instr for ``hico-det+vcoco``)."""
    mapping = verb_mapping(union, other)
    base = load_vocabulary(union.extra.get("base", union.name))
    from_base = {int(j) for v, j in enumerate(mapping) if j >= 0 and v < base.num_verbs}
    from_new = {int(j) for v, j in enumerate(mapping) if j >= 0 and v >= base.num_verbs}
    return frozenset(from_base), frozenset(from_new - from_base)


def action_split_summary(result, union: Vocabulary, other: Vocabulary) -> dict:
    """Mean role AP (percent) of a V-COCO ``result`` over all, the seen and the unseen actions of :func:`action_split`.

    Returns ``{"seen_actions": [names], "unseen_actions": [names], "scenarios": {name: {"full", "seen", "unseen"}}}``,
    each mean over the action-roles with ground truth (``None`` where none has any). What ``hoi-mllm evaluate vcoco
    --union`` prints as a table and writes into its JSON report (``action_split``)."""
    seen, unseen = action_split(union, other)

    def mean(s, verbs):
        ap = [float(s.ap[v]) for v in sorted(verbs) if s.npos[v] > 0]
        return round(100.0 * float(np.mean(ap)), 4) if ap else None

    return {"union": union.name, "seen_actions": [other.verbs[v] for v in sorted(seen)],
            "unseen_actions": [other.verbs[v] for v in sorted(unseen)],
            "scenarios": {name: {"full": mean(s, range(other.num_verbs)), "seen": mean(s, seen),
                                 "unseen": mean(s, unseen)} for name, s in result.scenarios.items()}}
