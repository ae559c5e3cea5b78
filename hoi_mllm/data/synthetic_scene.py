"""Sampling one image of the synthetic HOI world: people, their interactions, distractors, layout.

:func:`sample_scene` returns the image's *record*, a JSON-able dict from which the picture, every
box and every label can be re-derived (``synthetic_render``)::

    {"file_name": str, "size": [W, H],
     "background": {"top": rgb, "floor": rgb, "horizon": y, "noise_seed": int},
     "persons": [figure record, ...], "objects": [object record, ...],
     "interactions": [[person, object, verb], ...],      # every engaged pair; the rest: no_interaction
     "effects": [primitive, ...],                         # motion lines, part of no instance
     "clutter": [primitive, ...], "occluders": [primitive, ...],
     "order": [["object" | "person" | "effect", index], ...]}   # drawing order, back to front

A scene is accepted only when the picture says what the labels say: no hand, foot, hip or limb of a
person comes near an object the person does not touch by label, no profile head points at an
object it is not labelled as looking at, and everything lies inside the image. Otherwise the
generator samples again (deterministically, from the same random stream).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hoi_mllm.data import synthetic_figure as F
from hoi_mllm.data.synthetic_poses import (CONTACT_VERBS, LEG_VERBS, LOOK_SAME_VERBS, PRIOR, SECOND, Group, PoseError,
                                           build_person, new_object, sample_size)
from hoi_mllm.data.synthetic_shapes import Prim, capsule, disc, extent_of, object_anchor, object_primitives, polygon, polyline, shade

LIMB_SEGMENTS = (("hip", "neck"), ("hip", "knee_f"), ("knee_f", "foot_f"), ("hip", "knee_b"), ("knee_b", "foot_b"),
                 ("shoulder", "elbow_f"), ("elbow_f", "hand_f"), ("shoulder", "elbow_b"), ("elbow_b", "hand_b"))


@dataclass(frozen=True)
class SceneConfig:
    """How images of the world are sampled.

    Attributes:
        image_size: side of the square images in pixels.
        occlusion: let people and objects overlap and draw foreground occluders (posts, bushes) over
            them; boxes stay amodal (the full extent of what was drawn, hidden parts included).
        clutter: background clutter (stars, zig-zags, tufts: shapes of no class) and 1-2 more
            distractor objects per image.
        person_scale: range of the torso length as a fraction of the image side.
        people_weights: probabilities of 1, 2, 3, ... people per image.
        distractor_weights: probabilities of 0, 1, 2, ... objects nobody engages (before clutter).
        p_no_interaction: probability that a person engages no object at all.
        p_second: probability that a person has a second interaction (e.g. holds a cup while sitting).
        p_turned_head: probability that a person who looks at nothing has the head turned (at no object).

    HICO-DET's habits (``habits="hico"``; all 0 in the clean world, which then draws exactly as before):

    Attributes:
        p_look_same: probability that a person who looks at no distant object also looks at one of the
            objects it carries, holds, kicks, pushes or throws: two verbs on one pair (head in profile,
            the nose pointing at that object).
        p_ride_hold: probability that a bicycle rider grips the handlebar too (ride and hold, one pair).
        p_same_class_near: per person who engages something, probability of one more object of the
            class of one of its objects, placed near the person and engaged by nobody (which pair is
            meant matters).
        p_crowd: probability that an image is a crowd: ``crowd_people`` people (inclusive range) drawn at
            ``crowd_scale`` of the usual size, and ``crowd_distractors`` unengaged objects, so that the
            image has more candidate pairs than the default ``max_pairs`` (64).
    """

    image_size: int = 256
    occlusion: bool = False
    clutter: bool = False
    person_scale: tuple[float, float] = (0.13, 0.18)
    people_weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    distractor_weights: tuple[float, ...] = (0.3, 0.45, 0.25)
    p_no_interaction: float = 0.12
    p_second: float = 0.35
    p_turned_head: float = 0.3
    p_look_same: float = 0.0
    p_ride_hold: float = 0.0
    p_same_class_near: float = 0.0
    p_crowd: float = 0.0
    crowd_people: tuple[int, int] = (6, 8)
    crowd_distractors: tuple[int, int] = (6, 10)
    crowd_scale: float = 0.6


# fields added for habits="hico": left out of a clean world's world.json while at their defaults, so a clean
# world's files stay byte-identical to those of earlier versions
HABIT_FIELDS = ("p_look_same", "p_ride_hold", "p_same_class_near", "p_crowd", "crowd_people", "crowd_distractors",
                "crowd_scale")


def interaction_classes() -> list[tuple[str, str]]:
    """Every (verb, object) the world draws as an interaction, sorted by object then verb."""
    return [(v, o) for o in sorted(PRIOR) for v in PRIOR[o]]


def _second_options(first: tuple[str, str]) -> list[list[tuple[str, str]]]:
    """For each verb a second interaction may take after ``first``, the (verb, object) pairs it may be."""
    out = []
    for verb in SECOND[first[0]]:
        standing = first[0] not in LEG_VERBS and verb not in LEG_VERBS
        objs = [o for o in sorted(PRIOR) if verb in PRIOR[o] and o != first[1]
                and not (o == "bicycle" and verb == "hold" and (not standing or first[0] == "hold"))
                and not (first == ("hold", "bicycle") and verb in LEG_VERBS)]
        if objs:
            out.append([(verb, o) for o in objs])
    return out


@lru_cache(maxsize=8)
def first_weights(p_second: float) -> np.ndarray:
    """``[C]`` probabilities of each class of :func:`interaction_classes` as a person's first interaction,
    chosen so that first and second interactions together make every class about equally frequent
    (classes that are often second ones, e.g. holding, are drawn less often first)."""
    classes = interaction_classes()
    index = {c: k for k, c in enumerate(classes)}
    second = np.zeros((len(classes), len(classes)))  # [first, second] probability given the first
    for k, first in enumerate(classes):
        options = _second_options(first)
        for pairs in options:
            for pair in pairs:
                second[k, index[pair]] += p_second / len(options) / len(pairs)
    w = np.full(len(classes), 1.0 / len(classes))
    for _ in range(500):  # fixed point: scale each weight by (mean frequency / its frequency)
        freq = w + w @ second
        w = w * freq.mean() / freq
        w /= w.sum()
    return w


def sample_interactions(rng: np.random.Generator, cfg: SceneConfig) -> list[tuple[str, str]]:
    """A person's interactions: none, or a first class (:func:`first_weights`) plus maybe a compatible second."""
    if rng.random() < cfg.p_no_interaction:
        return []
    classes = interaction_classes()
    first = classes[rng.choice(len(classes), p=first_weights(cfg.p_second))]
    out = [first]
    options = _second_options(first)
    if options and rng.random() < cfg.p_second:
        pairs = options[rng.integers(len(options))]
        pair = pairs[rng.integers(len(pairs))]
        out = [pair, first] if pair[0] in LEG_VERBS else out + [pair]
    return out


def _colour(rng: np.random.Generator, taken: list, person: bool) -> list[int]:
    best, best_d = None, -1.0
    for _ in range(40):
        h = rng.random()
        s, v = (rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.72)) if person else (rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.92))
        c = [int(round(x * 255)) for x in colorsys.hsv_to_rgb(h, s, v)]
        d = min((float(np.linalg.norm(np.subtract(c, t))) for t in taken), default=1e9)
        if d >= 75:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _inside(box, size, margin=1.0) -> bool:
    return box[0] >= margin and box[1] >= margin and box[2] <= size[0] - margin and box[3] <= size[1] - margin


def _overlaps(box, others, margin: float, occlusion: bool) -> bool:
    for q in others:
        iw = min(box[2], q[2]) - max(box[0], q[0]) + margin
        ih = min(box[3], q[3]) - max(box[1], q[1]) + margin
        if iw > 0 and ih > 0:
            if not occlusion:
                return True
            inter = max(0.0, iw - margin) * max(0.0, ih - margin)
            small = min((box[2] - box[0]) * (box[3] - box[1]), (q[2] - q[0]) * (q[3] - q[1]))
            if inter > 0.4 * small:
                return True
    return False


def _translation(rng, ext, size, placed, margin, occlusion, tries: int = 40):
    lo, hi = np.array([2 - ext[0], 2 - ext[1]]), np.array([size[0] - 2 - ext[2], size[1] - 2 - ext[3]])
    if np.any(hi < lo):
        return None
    for _ in range(tries):
        t = rng.uniform(lo, hi)
        if not _overlaps(ext + np.tile(t, 2), placed, margin, occlusion):
            return t
    return None


def point_box_distance(p, box) -> float:
    """Euclidean distance from a point ``[2]`` to an xyxy box (0 inside)."""
    dx = max(box[0] - p[0], 0.0, p[0] - box[2])
    dy = max(box[1] - p[1], 0.0, p[1] - box[3])
    return math.hypot(dx, dy)


def ray_entry(origin, direction, box) -> float | None:
    """Distance along the ray ``origin + t * direction`` (t >= 0) at which it enters an xyxy box, or ``None``."""
    t0, t1 = 0.0, math.inf
    for k in range(2):
        if abs(direction[k]) < 1e-9:
            if not box[k] <= origin[k] <= box[k + 2]:
                return None
            continue
        a, b = (box[k] - origin[k]) / direction[k], (box[k + 2] - origin[k]) / direction[k]
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
    return t0 if t0 <= t1 else None


def body_clearance(fig: dict, box) -> float:
    """Smallest distance from any limb, the torso or the head of a figure to an xyxy box, minus their thickness."""
    j = fig["joints"]
    a = np.array([j[s] for s, _ in LIMB_SEGMENTS])  # [S, 2] segment starts
    b = np.array([j[e] for _, e in LIMB_SEGMENTS])  # [S, 2] segment ends
    pts = (a[:, None] + np.linspace(0, 1, 6)[None, :, None] * (b - a)[:, None]).reshape(-1, 2)  # [S * 6, 2]
    lo, hi = np.asarray(box[:2]), np.asarray(box[2:])
    limbs = np.hypot(*np.maximum(np.maximum(lo - pts, pts - hi), 0).T).min() - fig["width"] / 2
    return float(min(limbs, point_box_distance(j["head"], box) - fig["head_r"]))


def check_scene(persons, objects, engaged: dict, looks: dict, motion: list[tuple[int, Prim]] = ()) -> str | None:
    """Return why the picture would contradict the labels, or ``None`` when it does not.

    ``engaged[(p, o)]`` is the set of verbs of pair (p, o); ``looks[p]`` the object person p looks at;
    ``motion`` the motion lines drawn for person p's throws. A profile head must not point at any object
    other than the one it looks at, and motion lines must lead to no object other than a thrown one.
    """
    boxes = [extent_of(object_primitives(o)) for o in objects]
    for p, line in motion:
        for o, box in enumerate(boxes):
            if "throw" not in engaged.get((p, o), set()) and point_box_distance(line.points[0], box) < 0.6 * persons[p]["L"]:
                return f"motion lines of person {p} lead to object {o}, which it does not throw"
    for p, fig in enumerate(persons):
        gap = 0.1 * fig["L"]
        for o, box in enumerate(boxes):
            verbs = engaged.get((p, o), set())
            if not verbs & set(CONTACT_VERBS) and body_clearance(fig, box) < gap:
                return f"person {p} touches object {o} without a contact verb"
        if _gaze_hits(fig, boxes, looks.get(p)):
            return f"person {p} looks toward an object that it is not labelled as looking at"
    return None


def _gaze_hits(fig: dict, boxes: list, target: int | None) -> bool:
    """Whether a profile head's line of sight (a ray) meets an object other than ``target``."""
    g = F.gaze_vector(fig)
    if g is None:
        return False
    head, pad = np.asarray(fig["joints"]["head"]), 0.08 * fig["L"]
    return any(o != target and ray_entry(head, g, box + np.array([-pad, -pad, pad, pad])) is not None
               for o, box in enumerate(boxes))


def _clutter(rng, size, L) -> list[Prim]:
    out = []
    for _ in range(int(rng.integers(6, 14))):
        c = rng.uniform([0, 0], size)
        s = rng.uniform(0.15, 0.45) * L
        col = [int(round(x * 255)) for x in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.8))]
        kind = rng.integers(3)
        if kind == 0:  # zig-zag
            xs = np.linspace(-s, s, 5)
            out.append(polyline(np.stack([c[0] + xs, c[1] + s * 0.4 * (-1) ** np.arange(5)], 1), rng.integers(1, 3), col))
        elif kind == 1:  # five-pointed star
            a = np.arange(10) * math.pi / 5 + rng.uniform(0, math.pi)
            rad = np.where(np.arange(10) % 2 == 0, s, 0.45 * s)
            out.append(polygon(np.stack([c[0] + rad * np.cos(a), c[1] + rad * np.sin(a)], 1), col))
        else:  # tuft of grass
            out += [capsule(c, c + s * np.array([math.sin(t), -math.cos(t)]), 1, col) for t in (-0.5, 0.0, 0.5)]
    return out


def _occluders(rng, boxes, L) -> list[Prim]:
    out = []
    for _ in range(int(rng.integers(1, 3))):
        b = boxes[rng.integers(len(boxes))]
        if rng.random() < 0.5:  # a post in front
            x = rng.uniform(b[0], b[2])
            col = [int(v) for v in rng.integers(90, 160, 3)]
            out.append(capsule((x, b[1] + rng.uniform(-0.5, 0.3) * L), (x, b[3] + rng.uniform(0.0, 0.5) * L), rng.uniform(0.12, 0.25) * L, col))
        else:  # a bush
            c = np.array([rng.uniform(b[0], b[2]), rng.uniform((b[1] + b[3]) / 2, b[3])])
            base = [int(round(x * 255)) for x in colorsys.hsv_to_rgb(rng.uniform(0.22, 0.4), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6))]
            for _k in range(int(rng.integers(4, 8))):
                out.append(disc(c + rng.normal(0, 0.2 * L, 2), rng.uniform(0.15, 0.3) * L, shade(base, rng.uniform(0.8, 1.2))))
    return out


def _look_at_own(group: Group, choice: int) -> bool:
    """Turn the head of ``group``'s person to one of its own objects (:data:`LOOK_SAME_VERBS`), the
    ``choice``-th of them modulo their number, and record ``look_at`` on that pair in ``group.also``.
    Not done (``False``) when it has none, or when the line of sight would also meet another of its objects."""
    options = [k for k, v in enumerate(group.verbs) if v in LOOK_SAME_VERBS]
    if not options or group.look:
        return False
    k = options[choice % len(options)]
    fig = group.person
    head = np.asarray(fig["joints"]["head"])
    v = object_anchor(group.objects[k], "centre")[0] - head
    fig["face"], fig["gaze"] = "profile", round(math.degrees(math.atan2(v[1], v[0])), 2)
    if _gaze_hits(fig, [extent_of(object_primitives(o)) for o in group.objects], k):
        fig["face"], fig["gaze"] = "front", 0.0
        return False
    group.also.append((k, "look_at"))
    return True


def _place_group(rng, cfg: SceneConfig, size, placed: list, margin: float, L: float, facing: int,
                 interactions: list[tuple[str, str]], ride_hold: bool = False,
                 look_own: int | None = None) -> tuple[Group, np.ndarray, dict | None] | None:
    """Pose a person, find a free place for them and for the object they look at (if any).

    ``ride_hold``: see :func:`~hoi_mllm.data.synthetic_poses.build_person`; ``look_own``: look at one of
    the person's own objects too (:func:`_look_at_own`, the choice among them).
    Returns ``(group, box, looked-at object)`` moved into place, or ``None`` when nothing fits.
    """
    group = build_person(rng, L, facing, interactions, ride_hold=ride_hold)
    if look_own is not None:
        _look_at_own(group, look_own)
    ext = group.extent()
    look = next((o for v, o in interactions if v == "look_at"), None)
    if look is not None:
        target = new_object(look, sample_size(rng, look, "free", L), mirror=int(rng.choice([-1, 1])))
        target_ext, target_centre = extent_of(object_primitives(target)), object_anchor(target, "centre")[0]
    joints = group.person["joints"]
    head = np.asarray(joints["head"])
    ground = max(joints["foot_f"][1], joints["foot_b"][1])
    for _ in range(60):
        t = _translation(rng, ext, size, placed, margin, cfg.occlusion, tries=1)
        if t is None:
            continue
        box = ext + np.tile(t, 2)
        if look is None:
            group.translate(t)
            return group, box, None
        origin = np.array([head[0] + t[0] + facing * rng.uniform(1.3, 3.2) * L, ground + t[1] + rng.uniform(-0.5, 0.3) * L])
        v = target_centre + origin - (head + t)
        tbox = target_ext + np.tile(origin, 2)
        if math.degrees(math.atan2(v[1], abs(v[0]))) > 60 or not _inside(tbox, size) \
                or _overlaps(tbox, placed + [box], margin, cfg.occlusion):
            continue
        group.translate(t)
        target["origin"] = [round(float(x), 2) for x in origin]
        group.person["face"], group.person["gaze"] = "profile", round(math.degrees(math.atan2(v[1], v[0])), 2)
        return group, box, target
    return None


def _place_near(rng, cfg: SceneConfig, size, name: str, p: int, persons, person_boxes, objects, placed, layers,
                looks: dict, base: float, tries: int = 30) -> bool:
    """Place an unengaged ``name`` object beside person ``p`` (its box within one torso length of the
    person's body box, horizontally or vertically), touching nobody and in nobody's line of sight."""
    L = persons[p]["L"]
    obj = new_object(name, sample_size(rng, name, "free", L), mirror=int(rng.choice([-1, 1])))
    ext = extent_of(object_primitives(obj))
    pb = person_boxes[p]
    lo = np.maximum([pb[0] - L - ext[2], pb[1] - L - ext[3]], [2 - ext[0], 2 - ext[1]])
    hi = np.minimum([pb[2] + L - ext[0], pb[3] + L - ext[1]], [size[0] - 2 - ext[2], size[1] - 2 - ext[3]])
    if np.any(hi < lo):
        return False
    for _ in range(tries):
        t = rng.uniform(lo, hi)
        box = ext + np.tile(t, 2)
        if _overlaps(box, placed, 0.12 * base, cfg.occlusion) \
                or any(body_clearance(fig, box) < 0.2 * fig["L"] for fig in persons) \
                or any(_gaze_hits(persons[q], [extent_of(object_primitives(objects[o])), box], 0) for q, o in looks.items()):
            continue
        obj["origin"] = [round(float(t[0]), 2), round(float(t[1]), 2)]
        objects.append(obj)
        placed.append(box)
        layers.append((box[3], [["object", len(objects) - 1]]))
        return True
    return False


def _try_scene(rng: np.random.Generator, cfg: SceneConfig, file_name: str, max_people: int) -> dict | None:
    size = (cfg.image_size, cfg.image_size)
    crowd = cfg.p_crowd > 0 and max_people > 1 and rng.random() < cfg.p_crowd
    if crowd:
        n_people = int(rng.integers(cfg.crowd_people[0], cfg.crowd_people[1] + 1))
    else:
        n_people = 1 + int(rng.choice(len(cfg.people_weights), p=np.asarray(cfg.people_weights) / sum(cfg.people_weights)))
        n_people = min(n_people, max_people)
    base = cfg.image_size * rng.uniform(*cfg.person_scale) * (0.85 if n_people >= 3 else 1.0)
    base *= cfg.crowd_scale if crowd else 1.0
    margin = 0.12 * base
    persons, objects, effects, placed, layers, owners, person_boxes = [], [], [], [], [], [], []
    engaged: dict[tuple[int, int], set[str]] = {}
    looks: dict[int, int] = {}
    for _ in range(n_people):
        L, facing, interactions = base * rng.uniform(0.9, 1.1), int(rng.choice([-1, 1])), sample_interactions(rng, cfg)
        ride_hold = cfg.p_ride_hold > 0 and ("ride", "bicycle") in interactions and rng.random() < cfg.p_ride_hold
        look_own = int(rng.integers(2)) if cfg.p_look_same > 0 and rng.random() < cfg.p_look_same else None
        for scale in (1.0, 0.85, 0.72):  # a group that does not fit is tried smaller before it is dropped
            found = _place_group(rng, cfg, size, placed, margin, L * scale, facing, interactions, ride_hold, look_own)
            if found is not None:
                break
        if found is None:
            if not persons:
                return None
            continue
        group, box, target = found
        p = len(persons)
        persons.append(group.person)
        placed.append(box)
        first, first_effect = len(objects), len(effects)
        for obj, verb in zip(group.objects, group.verbs):
            engaged.setdefault((p, len(objects)), set()).add(verb)
            objects.append(obj)
        for k, verb in group.also:  # more verbs on the same pairs
            engaged[(p, first + k)].add(verb)
            if verb == "look_at":
                looks[p] = first + k
        person_boxes.append(extent_of(F.figure_primitives(group.person)))
        effects += group.effects
        owners += [p] * len(group.effects)
        front = [(v, o["name"]) in Group.IN_FRONT for o, v in zip(group.objects, group.verbs)]
        entries = [["object", i] for i, f in zip(range(first, len(objects)), front) if not f]
        entries += [["effect", i] for i in range(first_effect, len(effects))] + [["person", p]]
        entries += [["object", i] for i, f in zip(range(first, len(objects)), front) if f]
        layers.append((box[3], entries))
        if target is not None:
            looks[p] = len(objects)
            engaged.setdefault((p, len(objects)), set()).add("look_at")
            objects.append(target)
            placed.append(extent_of(object_primitives(target)))
            layers.append((placed[-1][3], [["object", len(objects) - 1]]))
    if cfg.p_same_class_near > 0:
        for p in range(len(persons)):
            own = sorted(o for (q, o) in engaged if q == p)
            if own and rng.random() < cfg.p_same_class_near:
                _place_near(rng, cfg, size, objects[own[int(rng.integers(len(own)))]]["name"], p, persons, person_boxes,
                            objects, placed, layers, looks, base)
    if crowd:
        n_free = int(rng.integers(cfg.crowd_distractors[0], cfg.crowd_distractors[1] + 1))
    else:
        n_free = int(rng.choice(len(cfg.distractor_weights), p=np.asarray(cfg.distractor_weights) / sum(cfg.distractor_weights)))
    n_free += int(rng.integers(1, 3)) if cfg.clutter else 0
    names = sorted(PRIOR)
    for _ in range(n_free):
        name = names[rng.integers(len(names))]
        obj = new_object(name, sample_size(rng, name, "free", base), mirror=int(rng.choice([-1, 1])))
        ext = extent_of(object_primitives(obj))
        t = _translation(rng, ext, size, placed, 0.12 * base, cfg.occlusion, tries=20)
        if t is not None and any(_gaze_hits(persons[p], [extent_of(object_primitives(objects[o])), ext + np.tile(t, 2)], 0)
                                 for p, o in looks.items()):
            continue  # it would stand in the line of sight of someone looking at something else
        if t is not None:
            obj["origin"] = [round(float(t[0]), 2), round(float(t[1]), 2)]
            objects.append(obj)
            placed.append(ext + np.tile(t, 2))
            layers.append((placed[-1][3], [["object", len(objects) - 1]]))
    if not objects:
        return None
    boxes = [extent_of(object_primitives(o)) for o in objects]
    for p, fig in enumerate(persons):  # some who look at nothing turn their head, toward no object
        if p not in looks and rng.random() < cfg.p_turned_head:
            for _ in range(10):
                fig["face"], fig["gaze"] = "profile", round(float(rng.uniform(-180, 180)), 2)
                if not _gaze_hits(fig, boxes, None):
                    break
            else:
                fig["face"], fig["gaze"] = "front", 0.0
    if check_scene(persons, objects, engaged, looks, list(zip(owners, effects))) is not None:
        return None

    # colours: a light background, then people and objects distinct from it and from each other
    hue = rng.random()
    top = [int(round(x * 255)) for x in colorsys.hsv_to_rgb(hue, rng.uniform(0.03, 0.2), rng.uniform(0.85, 0.97))]
    floor = [int(round(x * 255)) for x in colorsys.hsv_to_rgb((hue + rng.uniform(-0.15, 0.15)) % 1, rng.uniform(0.05, 0.25), rng.uniform(0.72, 0.86))]
    taken = [top, floor]
    for fig in persons:
        fig["colour"] = _colour(rng, taken, person=True)
        taken.append(fig["colour"])
    for obj in objects:
        obj["colour"] = _colour(rng, taken, person=False)
        obj["accent"] = list(shade(obj["colour"], 0.55))
        taken.append(obj["colour"])
    clutter = _clutter(rng, size, base) if cfg.clutter else []
    occluders = _occluders(rng, placed, base) if cfg.occlusion else []
    order = [e for _, entries in sorted(layers, key=lambda x: x[0]) for e in entries]
    interactions = sorted([p, o, v] for (p, o), verbs in engaged.items() for v in verbs)
    return {"file_name": file_name, "size": list(size),
            "background": {"top": top, "floor": floor, "horizon": round(float(rng.uniform(0.25, 0.55) * size[1]), 2),
                           "noise_seed": int(rng.integers(2 ** 31))},
            "persons": persons, "objects": [{**o, "origin": [round(float(x), 2) for x in o["origin"]]} for o in objects],
            "interactions": interactions, "effects": [e.to_json() for e in effects],
            "clutter": [c.to_json() for c in clutter], "occluders": [c.to_json() for c in occluders], "order": order}


def sample_scene(rng: np.random.Generator, cfg: SceneConfig, file_name: str, attempts: int = 400) -> dict:
    """Sample one image record (see the module docstring); deterministic given the generator state."""
    for attempt in range(attempts):
        try:
            rec = _try_scene(rng, cfg, file_name, max_people=len(cfg.people_weights) if attempt < attempts // 2 else 1)
        except PoseError:
            continue
        if rec is not None:
            return rec
    raise RuntimeError(f"could not lay out image {file_name} in {attempts} attempts "
                       f"(image_size {cfg.image_size} too small for person_scale {cfg.person_scale}?)")
