"""One person and the objects they engage, posed so that each verb is visible in the picture.

:func:`build_person` turns a list of interactions ``[(verb, object), ...]`` into a figure record and
object records in a local frame (hip at the origin). Every verb is realised by geometry alone:

==============  ===========================================================================
hold            a hand grips the object at hand height (front hand in front, back hand behind)
carry           both arms raised, both hands under the object, the object above the head
kick            standing leg straight, kicking leg swung forward, the object at its foot (just kicked up)
sit_on          thighs horizontal, shins down, hips resting on top of the object
ride            astride: hips on top, one foot in front of it and one behind (pedals on a bicycle)
push            torso leaning forward, striding legs, both hands on the object's near side
throw           one arm raised, the object in the air ahead of the hand with motion lines
look_at         head in profile, the nose pointing at a distant object (placed by the scene)
==============  ===========================================================================

A free arm rests on the knee when sitting, is held out for balance when kicking or riding, and
hangs relaxed otherwise. Objects are sized from the person's torso length ``L``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hoi_mllm.data import synthetic_figure as F
from hoi_mllm.data.synthetic_figure import PoseError
from hoi_mllm.data.synthetic_shapes import Prim, capsule, extent_of, local_anchor, object_anchor, object_primitives, place_by_anchor

# Which verbs each object affords (no_interaction is valid for every object): the world's prior.
PRIOR: dict[str, tuple[str, ...]] = {
    "ball": ("carry", "hold", "kick", "look_at", "ride", "sit_on", "throw"),
    "bicycle": ("carry", "hold", "look_at", "push", "ride"),
    "box": ("carry", "hold", "kick", "look_at", "push", "ride", "sit_on", "throw"),
    "chair": ("carry", "kick", "look_at", "push", "sit_on"),
    "cup": ("carry", "hold", "kick", "look_at", "throw"),
    "sign": ("carry", "hold", "look_at", "push"),
    "umbrella": ("carry", "hold", "look_at", "throw"),
}
CONTACT_VERBS = ("carry", "hold", "kick", "push", "ride", "sit_on")  # the body touches the object
LEG_VERBS = ("kick", "ride", "sit_on")
# verbs a second interaction of the same person may take, given the first
SECOND: dict[str, tuple[str, ...]] = {
    "sit_on": ("hold", "throw", "look_at"), "ride": ("hold", "throw", "look_at"), "kick": ("hold", "look_at"),
    "hold": ("sit_on", "ride", "kick", "hold", "look_at"), "throw": ("sit_on", "ride"),
    "look_at": ("hold", "sit_on", "ride"), "carry": (), "push": (),
}
MOTION_GREY = (70, 70, 70)
# verbs after which the person may also look at the same object (a second verb on one pair, habits="hico"):
# the object is ahead of, above or below the head, never under the body as a seat is
LOOK_SAME_VERBS = ("carry", "hold", "kick", "push", "throw")


@dataclass
class Group:
    """A posed person with the objects they touch or throw, in one frame.

    Attributes:
        person: figure record (``synthetic_figure``).
        objects: object records (``synthetic_shapes``) engaged by the person.
        verbs: verb of each object in ``objects``.
        effects: primitives that belong to no instance (motion lines).
        look: whether the person looks at an object still to be placed by the scene.
        also: more verbs on objects already in ``objects``, ``(index in objects, verb)``: several verbs
            on one pair, e.g. riding a bicycle with a hand on its handlebar.
    """

    IN_FRONT = (("hold", "bicycle"), ("push", "bicycle"))  # the person stands behind these: drawn after them

    person: dict
    objects: list[dict] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    effects: list[Prim] = field(default_factory=list)
    look: bool = False
    also: list[tuple[int, str]] = field(default_factory=list)

    def translate(self, t) -> None:
        t = np.asarray(t, dtype=np.float64)
        self.person["joints"] = {k: [round(v[0] + t[0], 2), round(v[1] + t[1], 2)] for k, v in self.person["joints"].items()}
        for o in self.objects:
            o["origin"] = [round(o["origin"][0] + t[0], 2), round(o["origin"][1] + t[1], 2)]
        self.effects = [Prim(p.kind, np.round(p.points + t, 2), p.size, p.colour, p.stroke) for p in self.effects]

    def extent(self) -> np.ndarray:
        prims = F.figure_primitives(self.person) + list(self.effects)
        for o in self.objects:
            prims += object_primitives(o)
        return extent_of(prims)


def new_object(name: str, size: dict, mirror: int = 1, angle: float = 0.0) -> dict:
    """An object record at the origin (colours are assigned by the scene)."""
    return {"name": name, "size": {k: round(float(v), 2) for k, v in size.items()}, "origin": [0.0, 0.0],
            "angle": round(float(angle), 2), "mirror": int(mirror), "colour": [128, 128, 128], "accent": [70, 70, 70]}


def sample_size(rng: np.random.Generator, name: str, purpose: str, L: float) -> dict:
    """Size parameters (pixels) of an object used for ``purpose`` (a verb, or ``free``), by person size ``L``."""
    def u(a, b):
        return rng.uniform(a, b) * L

    if name == "ball":
        return {"d": u(0.4, 0.9) if purpose == "free" else u(0.4, 0.7)}
    if name == "box":
        wh = {"hold": (0.35, 0.6, 0.35, 0.6), "throw": (0.35, 0.6, 0.35, 0.6), "carry": (0.5, 0.9, 0.4, 0.7),
              "kick": (0.45, 0.8, 0.35, 0.7), "push": (0.7, 1.2, 1.5, 1.9)}.get(purpose, (0.4, 1.2, 0.35, 1.3))
        return {"w": u(*wh[:2]), "h": u(*wh[2:])}
    if name == "chair":
        if purpose == "carry":
            return {"w": u(0.5, 0.7), "seat": u(0.4, 0.5), "back": u(0.35, 0.5)}
        return {"w": u(0.6, 0.85), "seat": u(0.5, 0.65), "back": u(0.75, 0.95) if purpose == "push" else u(0.5, 0.75)}
    if name == "bicycle":
        return {"r": {"carry": u(0.28, 0.34), "push": u(0.51, 0.6)}.get(purpose, u(0.3, 0.42))}
    if name == "sign":
        w = u(0.6, 1.0)
        return {"w": w, "h": w * rng.uniform(0.5, 0.7), "pole": {"carry": u(0.5, 0.8), "hold": u(0.7, 1.0)}.get(purpose, u(0.8, 1.3))}
    if name == "cup":
        return {"w": u(0.3, 0.45)}
    if name == "umbrella":
        ws = {"carry": (0.8, 1.1, 0.6, 0.9), "throw": (0.7, 1.0, 0.7, 0.9)}.get(purpose, (0.9, 1.3, 0.85, 1.15))
        return {"w": u(*ws[:2]), "shaft": u(*ws[2:])}
    raise ValueError(f"unknown synthetic object {name!r}; allowed: {', '.join(PRIOR)}")


def seat_size(rng: np.random.Generator, name: str, height: float, L: float, ride: bool) -> dict:
    """Size of an object whose ``seat`` anchor is ``height`` px above the ground."""
    if name == "ball":
        return {"d": height}
    if name == "box":
        return {"w": rng.uniform(0.7, 1.1) * L if ride else rng.uniform(0.6, 1.0) * L, "h": height}
    if name == "chair":
        w = rng.uniform(0.6, 0.85) * L
        return {"w": w, "seat": height - max(2.0, 0.14 * w), "back": rng.uniform(0.5, 0.75) * L}
    if name == "bicycle":
        return {"r": height / 2.18}
    raise PoseError(f"{name} cannot be sat on or ridden")


def _ground(j: dict, w: float) -> float:
    return max(j["foot_f"][1], j["foot_b"][1]) + w / 2


def _legs(rng, j, L, f, leg: tuple[str, str] | None, w: float, objects: list, verbs: list, stride: bool) -> float:
    """Pose the legs (and place a kicked / sat-on / ridden object); return the ground y."""
    if leg is None:
        (F.legs_stride if stride else F.legs_stand)(j, L, f, rng)
        return _ground(j, w)
    verb, name = leg
    if verb == "sit_on":
        F.legs_sit(j, L, f, rng)
        ground = _ground(j, w)
        seat = j["hip"] + np.array([f * rng.uniform(-0.12, 0.06) * L, w / 2])
        obj = new_object(name, seat_size(rng, name, ground - seat[1], L, ride=False), mirror=f)
        place_by_anchor(obj, "seat", seat)
    elif verb == "ride":
        height = rng.uniform(0.55, 0.8) * F.LEG * L
        obj = new_object(name, seat_size(rng, name, height, L, ride=True), mirror=f)
        place_by_anchor(obj, "seat", j["hip"] + np.array([0.0, w / 2]))
        ground = j["hip"][1] + w / 2 + height
        if name == "bicycle":
            feet = object_anchor(obj, "pedals")
        else:
            e = extent_of(object_primitives(obj))
            front, back = (e[2], e[0]) if f > 0 else (e[0], e[2])
            feet = np.array([[front + f * 0.1 * L, ground - w / 2], [back - f * 0.1 * L, ground - w / 2]])
        F.limb_to(j, "f", "leg", L, feet[0], F.direction(0, f))
        F.limb_to(j, "b", "leg", L, feet[1], F.direction(180, f) if name != "bicycle" else F.direction(0, f))
    else:  # kick: the leg swung forward, the object (lifted off the ground by the kick) at the foot
        F.limb_angles(j, "b", "leg", L, f, 90 + rng.uniform(0, 6), 90 + rng.uniform(0, 6))
        ground = j["foot_b"][1] + w / 2
        obj = new_object(name, sample_size(rng, name, "kick", L), mirror=f)
        swing = rng.uniform(35, 55)
        F.limb_angles(j, "f", "leg", L, f, 90 - swing, 90 - swing + rng.uniform(-4, 8))
        if j["foot_f"][1] > ground + local_anchor(obj, "kick")[0][1]:
            raise PoseError("kicked object would sink into the ground")
        place_by_anchor(obj, "kick", j["foot_f"] + np.array([f * 0.3 * w, 0.0]))
    objects.append(obj)
    verbs.append(verb)
    return ground


def _carry_or_push(rng, j, L, f, verb, name, ground, w, objects, verbs) -> None:
    if verb == "carry":
        obj = new_object(name, sample_size(rng, name, "carry", L), mirror=f)
        head_top = j["head"][1] - F.HEAD_R * L
        bottom = extent_of(object_primitives(obj))[3]  # the object's lowest point, relative to its origin
        obj["origin"] = [j["neck"][0] + f * rng.uniform(-0.1, 0.1) * L, head_top - rng.uniform(0.04, 0.12) * L - bottom]
        hands = object_anchor(obj, "carry")
        hands = hands[np.argsort(-f * hands[:, 0])]  # front hand is the one further ahead
        F.limb_to(j, "f", "arm", L, hands[0], F.direction(0, f))
        F.limb_to(j, "b", "arm", L, hands[1], F.direction(180, f))
    else:  # push
        mirror = -f if name == "bicycle" else f
        obj = new_object(name, sample_size(rng, name, "push", L), mirror=mirror)
        if name == "sign":
            board_mid = ground - j["shoulder"][1] - rng.uniform(0.1, 0.4) * L  # board centre a bit below the shoulder
            obj["size"]["pole"] = round(float(board_mid - obj["size"]["h"] / 2), 2)
        height = -local_anchor(obj, "push")[0][1]
        below = 0.07 * L if name in ("box", "sign") else 0.0  # the second hand a little lower on a flat side
        dy = ground - height - j["shoulder"][1]
        reach = rng.uniform(0.82, 0.95) * F.ARM * L
        if abs(dy) >= reach * 0.95 or ground - height + below > j["hip"][1] - 0.05 * L:
            raise PoseError("push target out of reach or below the chest")
        hand = j["shoulder"] + np.array([f * math.sqrt(reach ** 2 - dy ** 2), dy])
        place_by_anchor(obj, "push", hand + np.array([f * 0.3 * w, 0.0]))
        second = hand + np.array([0.0, below])
        F.limb_to(j, "f", "arm", L, hand, F.direction(90, f))
        F.limb_to(j, "b", "arm", L, second, F.direction(90, f))
    objects.append(obj)
    verbs.append(verb)


def _hold(rng, j, L, f, side, name, ground, w) -> dict:
    if name == "bicycle":  # standing beside it, a hand on the handlebar
        hip_h = ground - j["hip"][1]
        bar = rng.uniform(hip_h - 0.05 * L, hip_h + 0.35 * L)
        obj = new_object(name, {"r": bar / 2.4}, mirror=-f)
        dy = ground - bar - j["shoulder"][1]
        reach = rng.uniform(0.75, 0.92) * F.ARM * L
        if abs(dy) >= reach * 0.95:
            raise PoseError("handlebar out of reach")
        hand = j["shoulder"] + np.array([f * math.sqrt(reach ** 2 - dy ** 2), dy])
        F.limb_to(j, side, "arm", L, hand, F.direction(90, f))
        return place_by_anchor(obj, "grip", hand)
    F.arm_hold(j, side, L, f, rng)
    mirror = f if side == "f" else -f
    tilt = mirror * rng.uniform(0, 15) if name in ("umbrella", "sign") else rng.uniform(-8, 8)
    obj = new_object(name, sample_size(rng, name, "hold", L), mirror=mirror, angle=tilt)
    return place_by_anchor(obj, "grip", j[f"hand_{side}"])


def _throw(rng, j, L, f, side_name, name) -> tuple[dict, list[Prim]]:
    F.arm_raise(j, side_name, L, f, rng)
    angle = 0.0 if name == "ball" else rng.uniform(-40, 40)
    obj = new_object(name, sample_size(rng, name, "throw", L), mirror=int(rng.choice([-1, 1])), angle=angle)
    u = F.direction(rng.uniform(-55, -10), f)
    e, c = extent_of(object_primitives(obj)), object_anchor(obj, "centre")[0]
    corners = np.array([[e[0], e[1]], [e[2], e[1]], [e[0], e[3]], [e[2], e[3]]]) - c
    back, side = float(np.max(corners @ -u)), float(np.max(np.abs(corners @ np.array([-u[1], u[0]]))))
    centre = np.asarray(j[f"hand_{side_name}"]) + (rng.uniform(0.3, 0.5) * L + back) * u
    place_by_anchor(obj, "centre", centre)
    n = np.array([-u[1], u[0]])
    lines, width = [], max(1, round(0.035 * L))
    for k in (-0.45, 0.0, 0.45):  # motion lines just behind the object, pointing back at the hand
        start = centre - (back + 0.06 * L) * u + k * side * n
        lines.append(capsule(start, start - rng.uniform(0.15, 0.25) * L * u, width, MOTION_GREY))
    return obj, lines


def build_person(rng: np.random.Generator, L: float, facing: int, interactions: list[tuple[str, str]],
                 ride_hold: bool = False) -> Group:
    """Pose one person for ``interactions`` ``[(verb, object name), ...]`` (hip at the origin).

    ``ride_hold``: a rider of a bicycle also grips its handlebar with the front hand (``hold`` on the
    same pair, recorded in ``Group.also``); the arm held out for balance is what a ride alone shows.

    Raises:
        PoseError: the sampled sizes do not fit the pose; call again with the generator advanced.
    """
    f, w = facing, max(2, round(F.LIMB_W * L))
    verbs_of = [v for v, _ in interactions]
    lean = rng.uniform(14, 25) if "push" in verbs_of else rng.uniform(3, 10) if "ride" in verbs_of else \
        rng.uniform(4, 11) if "sit_on" in verbs_of else rng.uniform(-5, 5)
    j = F.skeleton(L, f, lean)
    objects: list[dict] = []
    verbs: list[str] = []
    effects: list[Prim] = []
    leg = next(((v, o) for v, o in interactions if v in LEG_VERBS), None)
    ground = _legs(rng, j, L, f, leg, w, objects, verbs, stride=any(v in ("push", "throw") for v in verbs_of))
    free = ["f", "b"]
    also: list[tuple[int, str]] = []
    if ride_hold and leg == ("ride", "bicycle"):
        F.limb_to(j, "f", "arm", L, object_anchor(objects[0], "grip")[0], F.direction(90, f))  # PoseError if out of reach
        free, also = ["b"], [(0, "hold")]
    for verb, name in interactions:
        if verb in ("carry", "push"):
            _carry_or_push(rng, j, L, f, verb, name, ground, w, objects, verbs)
            free = []
        elif verb in ("hold", "throw"):
            if not free:
                raise PoseError(f"no free hand to {verb} the {name}")
            side = free.pop(0)
            if verb == "hold":
                objects.append(_hold(rng, j, L, f, side, name, ground, w))
            else:
                obj, lines = _throw(rng, j, L, f, side, name)
                objects.append(obj)
                effects += lines
            verbs.append(verb)
    for side in free:
        if leg is not None and leg[0] == "sit_on":
            F.arm_on_knee(j, side, L, f)
        elif leg is not None:
            F.arm_balance(j, side, L, f, rng)
        else:
            F.arm_relaxed(j, side, L, f, rng)
    look = "look_at" in verbs_of
    person = F.new_figure(L, f, (0, 0, 0), j, face="profile" if look else "front")
    return Group(person=person, objects=objects, verbs=verbs, effects=effects, look=look, also=also)
