"""The synthetic HOI world: rendered images where every interaction is visible, as a HICO-DET-style dataset.

It is what lets this project train and measure real learning on a CPU. Stick figures (head, torso,
two arms with elbows, two legs with knees; varied colours, sizes and positions) interact with
objects of seven classes (ball, bicycle, box, chair, cup, sign, umbrella; each its own shape and
texture, sizes varied). Eight verbs are told apart only by what the picture shows: pose, contact
and relative position (see ``synthetic_poses``), plus ``no_interaction`` for every person-object
pair that is not engaged. Colours are random for every instance and carry no label.

Written to ``DIR``::

    instances_train.json, instances_test.json   UPT-style HICO-DET annotation (one row per triplet,
                                                no_interaction rows for every unengaged pair)
    images/train/*.png, images/test/*.png
    vocabulary.json                             the world's own vocabulary (hoi-mllm/vocabulary)
    world.json                                  generation parameters + one rendering record per image

Train and test come from one seed as two separate random streams (image ``i`` of a split uses the
stream ``(seed, split, i)``), so the same seed gives byte-identical files whatever the number of
worker processes.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hoi_mllm.data.synthetic_poses import PRIOR
from hoi_mllm.data.synthetic_render import render_scene
from hoi_mllm.data.synthetic_scene import HABIT_FIELDS, SceneConfig, sample_scene
from hoi_mllm.io import atomic_path, atomic_write_json, read_json

GENERATOR_VERSION = 1
WORLD_FORMAT = "hoi-mllm/synthetic-world"
SPLITS = ("train", "test")
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
NO_INTERACTION = "no_interaction"
RARE_THRESHOLD = 10  # HICO-DET's rule: a class with fewer training instances is rare
PHRASES = {"carry": "carrying {} overhead", "hold": "holding {}", "kick": "kicking {}", "look_at": "looking at {}",
           NO_INTERACTION: "no interaction with {}", "push": "pushing {}", "ride": "riding {}", "sit_on": "sitting on {}",
           "throw": "throwing {}"}
# Zero-shot splits, as (verb, object) pairs held out of training. Each unseen-combination split keeps
# every verb with at least two seen objects and every object with at least two seen verbs, so an
# unseen pair is a new composition of a seen pose and a seen object.
ZERO_SHOT_SPLITS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "uc_a": ("unseen_combination", [("kick", "cup"), ("carry", "chair"), ("ride", "box"), ("push", "sign"),
                                    ("throw", "umbrella"), ("hold", "ball"), ("look_at", "bicycle")]),
    "uc_b": ("unseen_combination", [("hold", "cup"), ("carry", "bicycle"), ("kick", "box"), ("sit_on", "chair"),
                                    ("push", "bicycle"), ("throw", "ball"), ("look_at", "sign")]),
    "uc_c": ("unseen_combination", [("hold", "sign"), ("carry", "ball"), ("kick", "chair"), ("sit_on", "box"),
                                    ("ride", "ball"), ("push", "box"), ("throw", "cup"), ("look_at", "umbrella")]),
    "unseen_verb": ("unseen_verb", [(v, o) for o in sorted(PRIOR) for v in PRIOR[o] if v in ("push", "throw")]),
    "unseen_object": ("unseen_object", [(v, o) for o in ("bicycle", "umbrella") for v in (*PRIOR[o], NO_INTERACTION)]),
}
DEFAULT_SPLIT = "uc_a"
HABITS = ("clean", "hico")
# Annotation habits of HICO-DET's UPT files (habits="hico"): every row (one verb of a pair) has its own
# boxes, each coordinate off the drawn box by N(0, 1) x sigma x the box's width / height, sigma per row
# JITTER_SIGMA x exp(N(0, JITTER_SPREAD)). Fitted so that two rows of one pair overlap as the real
# near-duplicate rows do: on instances_test2015.json, 16,298 row pairs (same image and object, another
# verb, min IoU >= 0.5) have human-box IoU percentiles 5/10/25/50/75/90 of 0.58 0.64 0.76 0.86 0.93 0.96
# (object 0.57 0.63 0.74 0.85 0.92 0.95); these constants give 0.54 0.65 0.78 0.87 0.92 0.96
# (tests/test_synthetic_habits.py measures a generated world).
JITTER_SIGMA, JITTER_SPREAD = 0.025, 0.9
# Scenes of habits="hico" (SceneConfig): up to four people and three distractor objects per image (clean: 3
# and 2); several verbs on one pair (look at what one holds, kicks, ...; ride a bicycle gripping its
# handlebar); an unengaged object of the class of a person's object beside that person; and a few crowds
# with more candidate pairs than max_pairs (64). Measured on instances_test2015.json: of 17,503 interacting
# pairs (rows merged at min IoU >= 0.5, same object) 42.8 % carry >= 2 verbs (26 % two, 12 % three, 5 % more);
# after class-wise NMS 0.5 of the boxes, 3.3 % of the images have more than 64 proposals (person x every
# other instance), 9.7 % counting every row's boxes as instances (benchmarks/crowded_pairs.py).
# tests/test_synthetic_habits.py measures what a generated world gets.
HICO_SCENE = {"people_weights": (0.25, 0.3, 0.25, 0.2), "distractor_weights": (0.2, 0.3, 0.3, 0.2),
              "p_look_same": 0.65, "p_ride_hold": 0.6, "p_same_class_near": 0.25, "p_crowd": 0.08}
# version of the hico habits, part of a hico world's parameters: a world cached under an older one is redrawn
# (1: jittered rows and crowding; 2: several verbs on one pair, same-class objects nearby, crowds)
HABITS_VERSION = 2


def habits_hash() -> str:
    """A short hash of the hico habits' constants (``HICO_SCENE``, ``JITTER_SIGMA``, ``JITTER_SPREAD``),
    part of a hico world's parameters: changing one makes cached hico worlds be redrawn. Changes of the
    drawing code itself bump ``HABITS_VERSION``."""
    spec = {"scene": HICO_SCENE, "jitter": [JITTER_SIGMA, JITTER_SPREAD], "version": HABITS_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class WorldExistsError(ValueError):
    """The output folder holds a different synthetic world (or other files) and ``force`` was not given."""


def world_names() -> tuple[list[str], list[str]]:
    """``(objects, verbs)`` of the world, sorted by name (``person`` among the objects)."""
    objects = sorted([*PRIOR, "person"])
    verbs = sorted({v for vs in PRIOR.values() for v in vs} | {NO_INTERACTION})
    return objects, verbs


def world_vocabulary(rare: frozenset[int] = frozenset()):
    """The world's :class:`~hoi_mllm.prompts.Vocabulary`: classes are (object, verb) for each object's
    verbs in the prior plus ``no_interaction``, ordered by object then verb; splits ``ZERO_SHOT_SPLITS``."""
    from hoi_mllm.prompts.vocabulary import Split, Vocabulary

    objects, verbs = world_names()
    classes = [(objects.index(o), verbs.index(v)) for o in sorted(PRIOR) for v in sorted((*PRIOR[o], NO_INTERACTION))]
    phrases = []
    for o, v in classes:
        name = objects[o]
        phrases.append(PHRASES[verbs[v]].format(("an " if name[0] in "aeiou" else "a ") + name))
    index = {(verbs[v], objects[o]): c for c, (o, v) in enumerate(classes)}
    splits = {}
    for name, (kind, pairs) in ZERO_SHOT_SPLITS.items():
        missing = [p for p in pairs if p not in index]
        if missing:
            raise ValueError(f"split {name!r} names pairs that are not classes of the world: {missing}")
        splits[name] = Split(name=name, kind=kind, unseen=frozenset(index[p] for p in pairs))
    vocab = Vocabulary(name="synthetic", objects=tuple(objects), verbs=tuple(verbs), classes=tuple(classes),
                       phrases=tuple(phrases), human_object=objects.index("person"),
                       no_interaction_verb=verbs.index(NO_INTERACTION), rare=frozenset(rare), splits=splits,
                       extra={"default_split": DEFAULT_SPLIT},
                       source=f"hoi-mllm synthetic world, generator version {GENERATOR_VERSION}; rare: fewer than "
                              f"{RARE_THRESHOLD} training triplets")
    vocab.validate("synthetic world vocabulary")
    return vocab


def jitter_box(box, size, rng: np.random.Generator) -> list[float]:
    """``box`` (xyxy) moved as one annotator row of HICO-DET moves it (``JITTER_SIGMA``), kept inside ``size``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    sigma = JITTER_SIGMA * float(np.exp(rng.normal(0.0, JITTER_SPREAD)))
    d = rng.normal(0.0, 1.0, 4) * sigma * np.array([w, h, w, h])
    W, H = size
    x1, x2 = float(np.clip(x1 + d[0], 0, W - 1)), float(np.clip(x2 + d[2], 0, W))
    y1, y2 = float(np.clip(y1 + d[1], 0, H - 1)), float(np.clip(y2 + d[3], 0, H))
    return [round(x1, 1), round(y1, 1), round(max(x2, x1 + 1.0), 1), round(max(y2, y1 + 1.0), 1)]


def annotation_rows(rec: dict, person_boxes: np.ndarray, object_boxes: np.ndarray, vocab,
                    rng: np.random.Generator | None = None) -> dict:
    """The UPT-style annotation of one image: one row per (person, object, verb) for every person-object
    pair, ``no_interaction`` where the record has no interaction for the pair. With ``rng`` (habits
    ``hico``) every row gets its own jittered boxes (:func:`jitter_box`), as HICO-DET's files do.

    Returns:
        ``{"boxes_h": [T, 4], "boxes_o": [T, 4], "hoi": [T], "object": [T], "verb": [T]}`` as lists
        (boxes xyxy pixel edges).
    """
    verbs_of: dict[tuple[int, int], set[str]] = {}
    for p, o, v in rec["interactions"]:
        verbs_of.setdefault((p, o), set()).add(v)
    out = {"boxes_h": [], "boxes_o": [], "hoi": [], "object": [], "verb": []}
    for p in range(len(rec["persons"])):
        for o, obj in enumerate(rec["objects"]):
            oi = vocab.object_index(obj["name"])
            for verb in sorted(vocab.verb_index(v) for v in verbs_of.get((p, o), {NO_INTERACTION})):
                if rng is None:
                    out["boxes_h"].append([float(x) for x in person_boxes[p]])
                    out["boxes_o"].append([float(x) for x in object_boxes[o]])
                else:
                    out["boxes_h"].append(jitter_box(person_boxes[p], rec["size"], rng))
                    out["boxes_o"].append(jitter_box(object_boxes[o], rec["size"], rng))
                out["hoi"].append(int(vocab.class_of(verb, oi)))
                out["object"].append(oi)
                out["verb"].append(verb)
    return out


def _file_name(split: str, index: int, image_format: str) -> str:
    return f"synth_{split}_{index:06d}.{image_format}"


def _make_image(job: tuple) -> tuple[dict, list, list]:
    """Sample, draw and save one image (runs in worker processes); returns (record, person boxes, object boxes)."""
    seed, split, index, cfg, image_dir, image_format = job
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    name = _file_name(split, index, image_format)
    while True:
        rec = sample_scene(rng, cfg, name)
        img, pb, ob = render_scene(rec)
        keys = [("p", *b) for b in pb.tolist()] + [(o["name"], *b) for o, b in zip(rec["objects"], ob.tolist())]
        if len(set(keys)) == len(keys):  # two instances with one label and one box would read as one
            break
    buf = io.BytesIO()
    img.save(buf, format=IMAGE_FORMATS[image_format], **({"quality": 95} if image_format == "jpg" else {"compress_level": 1}))
    with atomic_path(Path(image_dir) / name) as tmp:
        tmp.write_bytes(buf.getvalue())
    return rec, pb.tolist(), ob.tolist()


@dataclass
class WorldInfo:
    """What :func:`generate_world` wrote (or found and reused).

    Attributes:
        output_dir: the world's folder; ``annotations``: split -> annotation file; ``image_dirs``:
            split -> image folder; ``vocabulary``: the vocabulary file; ``world``: ``world.json``.
        params: the generation parameters; ``counts``: split -> images, pairs, triplets, interactions
            (non-``no_interaction`` triplets); ``seconds``: generation time (0 when reused).
        default_split: the unseen-combination split meant for demos; ``reused``: found complete on disk.
    """

    output_dir: Path
    annotations: dict[str, Path]
    image_dirs: dict[str, Path]
    vocabulary: Path
    world: Path
    params: dict
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    default_split: str = DEFAULT_SPLIT
    reused: bool = False

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else {a: str(b) for a, b in v.items()} if k in ("annotations", "image_dirs") else v)
                for k, v in asdict(self).items()}


def _info(out: Path, params: dict, counts=None, seconds=0.0, reused=False) -> WorldInfo:
    return WorldInfo(output_dir=out, annotations={s: out / f"instances_{s}.json" for s in SPLITS},
                     image_dirs={s: out / "images" / s for s in SPLITS}, vocabulary=out / "vocabulary.json",
                     world=out / "world.json", params=params, counts=counts or {}, seconds=seconds, reused=reused)


def _existing(out: Path, params: dict, force: bool) -> WorldInfo | None:
    """A complete identical world to reuse, or ``None`` to (re)generate; raise if a different one is there."""
    info = _info(out, params)
    if info.world.exists():
        old = read_json(info.world, what="world file")
        if old.get("params") == params:
            files = [info.vocabulary, *info.annotations.values()]
            files += [info.image_dirs[s] / _file_name(s, i, params["image_format"]) for s in SPLITS for i in range(params[f"num_{s}"])]
            if old.get("complete") and all(f.exists() for f in files):
                info.counts, info.reused = old.get("counts", {}), True
                return info
            return None  # same world, unfinished: generate again
        if not force:
            theirs = ", ".join(f"{k} {v}" for k, v in (old.get("params") or {}).items() if params.get(k) != v)
            raise WorldExistsError(f"{out} holds a different synthetic world ({theirs or 'other parameters'}); pass "
                                   f"--force (force=True) to replace it, or choose another output folder")
    elif not force:
        found = [p for p in (info.vocabulary, *info.annotations.values()) if p.exists()]
        found += [d for d in info.image_dirs.values() if d.is_dir() and any(d.iterdir())]
        if found:
            raise WorldExistsError(f"{out} already holds files that are not a synthetic world's ({found[0]}); pass "
                                   f"--force (force=True) to write over them, or choose another output folder")
    for d in info.image_dirs.values():  # remove a previous world's images, only those this module names
        if d.is_dir():
            for f in d.glob("synth_*_*.*"):
                f.unlink()
    return None


def generate_world(output_dir: str | Path, num_train: int, num_test: int, seed: int, image_size: int = 256,
                   occlusion: bool = False, clutter: bool = False, progress: bool = True, force: bool = False,
                   image_format: str = "png", workers: int | None = None, habits: str = "clean") -> WorldInfo:
    """Generate (or reuse) a synthetic HOI world in ``output_dir``.

    Args:
        num_train, num_test: numbers of images (test may be 0); seed: the world's seed.
        image_size: side of the square images in pixels (128..2048).
        occlusion, clutter: see :class:`~hoi_mllm.data.synthetic_scene.SceneConfig`.
        progress: show a tqdm bar; force: replace a different world (or other files) in the folder.
        image_format: ``png`` (lossless) or ``jpg`` (quality 95).
        workers: processes drawing images (default: all CPUs, serial for small worlds); the output
            does not depend on it.
        habits: ``clean`` (exact boxes, one box pair per pair of instances) or ``hico``: annotations with
            HICO-DET's habits (every verb row its own jittered boxes, ``JITTER_SIGMA``; up to four people
            and three distractors per image, several verbs on one pair, same-class objects beside a
            person, a few crowds over 64 candidate pairs: ``HICO_SCENE``; :func:`habit_shares` measures
            them). Unengaged pairs carry ``no_interaction`` rows in both.

    Returns:
        A :class:`WorldInfo`. An identical complete world already in the folder is reused, not redrawn.

    Raises:
        ValueError: a bad argument, naming the allowed values (or ``output_dir`` is a file); WorldExistsError: a different world is
        there and ``force`` is false.
    """
    if not isinstance(num_train, int) or num_train < 1:
        raise ValueError(f"number of training images must be an integer >= 1, got {num_train!r}")
    if not isinstance(num_test, int) or num_test < 0:
        raise ValueError(f"number of test images must be an integer >= 0, got {num_test!r}")
    if not isinstance(image_size, int) or not 128 <= image_size <= 2048:
        raise ValueError(f"image size must be an integer from 128 to 2048 pixels, got {image_size!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; allowed: {', '.join(IMAGE_FORMATS)}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if habits not in HABITS:
        raise ValueError(f"unknown annotation habits {habits!r}; allowed: {', '.join(HABITS)}")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file; give a new or existing folder")
    params = {"num_train": num_train, "num_test": num_test, "seed": seed, "image_size": image_size,
              "occlusion": bool(occlusion), "clutter": bool(clutter), "image_format": image_format,
              "generator_version": GENERATOR_VERSION}
    if habits != "clean":  # a clean world's parameters stay as before, so existing worlds are reused
        params["habits"] = habits
        params["habits_version"] = HABITS_VERSION
        params["habits_hash"] = habits_hash()
    reused = _existing(out, params, force)
    if reused is not None:
        return reused
    start = time.perf_counter()
    info = _info(out, params)
    for d in info.image_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(info.world, {"format": WORLD_FORMAT, "params": params, "complete": False})
    cfg = SceneConfig(image_size=image_size, occlusion=bool(occlusion), clutter=bool(clutter),
                      **(HICO_SCENE if habits == "hico" else {}))
    jobs = [(seed, s, i, cfg, str(info.image_dirs[s]), image_format) for s in SPLITS for i in range(params[f"num_{s}"])]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    results = []
    bar = tqdm(total=len(jobs), desc="synthetic world", unit="img", disable=not progress)
    if workers > 1 and len(jobs) > 4 * workers:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for r in pool.imap(_make_image, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(_make_image(job))
            bar.update()
    bar.close()

    by_split = {"train": results[:num_train], "test": results[num_train:]}
    objects, verbs = world_names()
    base = world_vocabulary()
    def rows_rng(split: str, i: int):
        return None if habits == "clean" else np.random.default_rng([seed, SPLITS.index(split), i, 1])

    tables = {s: [annotation_rows(rec, np.asarray(pb).reshape(-1, 4), np.asarray(ob).reshape(-1, 4), base,
                                  rows_rng(s, i))
                  for i, (rec, pb, ob) in enumerate(by_split[s])] for s in SPLITS}
    train_counts = Counter(c for a in tables["train"] for c in a["hoi"])
    vocab = world_vocabulary(frozenset(c for c in range(base.num_classes) if train_counts[c] < RARE_THRESHOLD))
    counts = {}
    for s in SPLITS:
        ann = tables[s]
        data = {"annotation": ann, "filenames": [r[0]["file_name"] for r in by_split[s]],
                "size": [r[0]["size"] for r in by_split[s]], "empty": [i for i, a in enumerate(ann) if not a["hoi"]],
                "objects": objects, "verbs": verbs,
                "correspondence": [[c, o, v] for c, (o, v) in enumerate(vocab.classes)],
                "rare": sorted(vocab.rare), "non_rare": sorted(vocab.non_rare)}
        atomic_write_json(info.annotations[s], data, indent=None)
        triplets = sum(len(a["hoi"]) for a in ann)
        counts[s] = {"images": len(ann), "pairs": sum(len(r[0]["persons"]) * len(r[0]["objects"]) for r in by_split[s]),
                     "triplets": triplets,
                     "interactions": sum(v != vocab.no_interaction_verb for a in ann for v in a["verb"])}
    vocab.save(info.vocabulary)
    info.counts, info.seconds = counts, time.perf_counter() - start
    atomic_write_json(info.world, {"format": WORLD_FORMAT, "params": params, "complete": True, "counts": counts,
                                   "scene_config": _scene_json(cfg), "records": {s: [r[0] for r in by_split[s]] for s in SPLITS}},
                      indent=None)
    return info


def _scene_json(cfg: SceneConfig) -> dict:
    """``cfg`` as written to ``world.json``: the habits fields (``HABIT_FIELDS``) only where they differ
    from their defaults, so that a clean world's file is the one earlier versions wrote."""
    default = SceneConfig()
    return {k: v for k, v in asdict(cfg).items() if k not in HABIT_FIELDS or v != getattr(default, k)}


def habit_shares(records: list[dict], max_pairs: int = 64) -> dict:
    """How often a world's images show the habits of ``HICO_SCENE``, from their rendering records
    (``world.json``): the truth, before any row is jittered.

    Returns:
        ``pairs``: interacting person-object pairs; ``multi_verb_pairs``: share of them with two or more
        verbs; ``same_class_near``: share of images where a person engages an object and another
        object of its class, which that person does not engage, lies within one torso length of the
        person's body box; ``over_max_pairs``: share of images with more than ``max_pairs`` candidate
        pairs (each person with every other instance, as ``pairs.propose_pairs`` with ``human_human``).
    """
    from hoi_mllm.data.synthetic_figure import figure_primitives
    from hoi_mllm.data.synthetic_shapes import extent_of, object_primitives

    def gap(a, b) -> float:
        return max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3], 0.0)

    pairs = multi = near = crowded = 0
    for rec in records:
        verbs: dict[tuple[int, int], set[str]] = {}
        for p, o, v in rec["interactions"]:
            verbs.setdefault((p, o), set()).add(v)
        pairs += len(verbs)
        multi += sum(len(v) >= 2 for v in verbs.values())
        people, objects = rec["persons"], rec["objects"]
        crowded += len(people) * (len(people) + len(objects) - 1) > max_pairs
        body = [extent_of(figure_primitives(f)) for f in people]
        boxes = [extent_of(object_primitives(o)) for o in objects]
        near += any(objects[o2]["name"] == objects[o]["name"] and (p, o2) not in verbs
                    and gap(body[p], boxes[o2]) <= people[p]["L"]
                    for p, o in verbs for o2 in range(len(objects)) if o2 != o)
    n = max(len(records), 1)
    return {"images": len(records), "pairs": pairs, "multi_verb_pairs": multi / max(pairs, 1),
            "same_class_near": near / n, "over_max_pairs": crowded / n}


def read_world(output_dir: str | Path) -> dict:
    """The ``world.json`` of a generated world (parameters, counts and every image's rendering record)."""
    return read_json(Path(output_dir) / "world.json", what="synthetic world file")

