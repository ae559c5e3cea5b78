"""Articulated stick figures of the synthetic HOI world: skeleton, poses from joint angles, drawing.

A figure is a record (JSON-able dict)::

    {"L": torso length px, "facing": 1 | -1, "colour": [r, g, b], "width": limb px, "torso_width": px,
     "head_r": px, "face": "front" | "profile", "gaze": degrees (profile: direction the nose points),
     "joints": {"hip": [x, y], "neck": ..., "head": ..., "shoulder": ..., "elbow_f": ..., "hand_f": ...,
                "elbow_b": ..., "hand_b": ..., "knee_f": ..., "foot_f": ..., "knee_b": ..., "foot_b": ...}}

``_f`` limbs are the front (near) arm and leg, drawn over the body; ``_b`` limbs are behind it and
drawn in a darker shade. Angles are degrees in image coordinates *relative to the facing*: 0 points
the way the figure faces, 90 straight down, -90 straight up.
"""
from __future__ import annotations

import math

import numpy as np

from hoi_mllm.data.synthetic_shapes import Prim, capsule, disc, polygon, shade

# body proportions in units of the torso length L
HEAD_R, UPPER_ARM, FOREARM, THIGH, SHIN = 0.27, 0.55, 0.53, 0.62, 0.6
SHOULDER_AT, LIMB_W, TORSO_W = 0.82, 0.11, 0.17
ARM, LEG = UPPER_ARM + FOREARM, THIGH + SHIN
EYE_WHITE, PUPIL = (245, 245, 240), (25, 25, 25)
JOINTS = ("hip", "neck", "head", "shoulder", "elbow_b", "hand_b", "knee_b", "foot_b", "elbow_f", "hand_f", "knee_f", "foot_f")


class PoseError(ValueError):
    """A pose could not be built with the sampled sizes (the caller samples again)."""


def direction(angle: float, facing: int) -> np.ndarray:
    """Unit vector ``[2]`` of a facing-relative angle (0 forward, 90 down)."""
    a = math.radians(angle)
    return np.array([math.cos(a) * facing, math.sin(a)])


def two_link(base, target, l1: float, l2: float, prefer) -> tuple[np.ndarray, np.ndarray]:
    """Inverse kinematics of a two-segment limb.

    Args:
        base: ``[2]`` shoulder or hip; target: ``[2]`` where the hand or foot must go.
        l1, l2: segment lengths; prefer: ``[2]`` direction the middle joint (elbow, knee) should bend to.

    Returns:
        ``(middle [2], end [2])``; ``end`` equals ``target`` when it is within reach.

    Raises:
        PoseError: the target is out of reach (further than ``l1 + l2``).
    """
    base, target = np.asarray(base, dtype=np.float64), np.asarray(target, dtype=np.float64)
    v = target - base
    d = float(np.hypot(*v))
    if d > l1 + l2 + 1e-6:
        raise PoseError(f"target out of reach: {d:.1f} > {l1 + l2:.1f}")
    d = max(d, abs(l1 - l2) + 1e-6)
    a = math.atan2(v[1], v[0])
    alpha = math.acos(max(-1.0, min(1.0, (l1 * l1 + d * d - l2 * l2) / (2 * l1 * d))))
    options = [base + l1 * np.array([math.cos(a + s * alpha), math.sin(a + s * alpha)]) for s in (1, -1)]
    mid = max(options, key=lambda m: float(np.dot(m - (base + target) / 2, prefer)))
    return mid, target


def skeleton(L: float, facing: int, lean: float, hip=(0.0, 0.0)) -> dict[str, np.ndarray]:
    """Hip, neck, head centre and shoulder of a torso leaning ``lean`` degrees forward."""
    hip = np.asarray(hip, dtype=np.float64)
    up = direction(-90 + lean, facing)
    neck = hip + L * up
    return {"hip": hip, "neck": neck, "head": neck + (HEAD_R + 0.03) * L * up, "shoulder": hip + SHOULDER_AT * L * up}


def limb_angles(j: dict, side: str, limb: str, L: float, facing: int, upper: float, lower: float) -> None:
    """Forward kinematics: set ``elbow_/hand_`` (limb="arm") or ``knee_/foot_`` (limb="leg") of ``side`` f/b."""
    base, (l1, l2), names = (j["shoulder"], (UPPER_ARM, FOREARM), ("elbow", "hand")) if limb == "arm" else \
        (j["hip"], (THIGH, SHIN), ("knee", "foot"))
    mid = base + l1 * L * direction(upper, facing)
    j[f"{names[0]}_{side}"], j[f"{names[1]}_{side}"] = mid, mid + l2 * L * direction(lower, facing)


def limb_to(j: dict, side: str, limb: str, L: float, target, prefer) -> None:
    """Inverse kinematics: put the hand (``limb="arm"``) or foot of ``side`` on ``target``."""
    if limb == "arm":
        j[f"elbow_{side}"], j[f"hand_{side}"] = two_link(j["shoulder"], target, UPPER_ARM * L, FOREARM * L, prefer)
    else:
        j[f"knee_{side}"], j[f"foot_{side}"] = two_link(j["hip"], target, THIGH * L, SHIN * L, prefer)


# ----------------------------------------------------------------------------- leg and arm poses
def legs_stand(j: dict, L: float, facing: int, rng: np.random.Generator) -> None:
    t = rng.uniform(-12, -2)
    limb_angles(j, "f", "leg", L, facing, 90 + t, 90 + t + rng.uniform(-4, 4))
    t = rng.uniform(2, 12)
    limb_angles(j, "b", "leg", L, facing, 90 + t, 90 + t + rng.uniform(-4, 4))


def legs_stride(j: dict, L: float, facing: int, rng: np.random.Generator) -> None:
    limb_angles(j, "f", "leg", L, facing, rng.uniform(60, 72), rng.uniform(82, 92))
    limb_angles(j, "b", "leg", L, facing, rng.uniform(108, 122), rng.uniform(122, 138))


def legs_sit(j: dict, L: float, facing: int, rng: np.random.Generator) -> None:
    """Thighs about horizontal and forward, shins about vertical: a sitting pose."""
    t, s = rng.uniform(-6, 10), rng.uniform(82, 100)
    limb_angles(j, "f", "leg", L, facing, t, s)
    limb_angles(j, "b", "leg", L, facing, t + rng.uniform(4, 9), s + rng.uniform(2, 8))


def arm_relaxed(j: dict, side: str, L: float, facing: int, rng: np.random.Generator) -> None:
    u = 90 + (rng.uniform(-25, -5) if side == "f" else rng.uniform(5, 25))
    limb_angles(j, side, "arm", L, facing, u, u + rng.uniform(-15, 15))


def arm_balance(j: dict, side: str, L: float, facing: int, rng: np.random.Generator) -> None:
    """Arm held out to the side (forward for the front arm, back for the back arm): keeping balance."""
    u = rng.uniform(-35, 5) if side == "f" else rng.uniform(175, 215)
    limb_angles(j, side, "arm", L, facing, u, u + rng.uniform(-20, 20) * (1 if side == "f" else -1))


def arm_hold(j: dict, side: str, L: float, facing: int, rng: np.random.Generator) -> None:
    """Hand at hand height: in front (front arm) or beside and behind (back arm)."""
    if side == "f":
        limb_angles(j, side, "arm", L, facing, rng.uniform(30, 70), rng.uniform(-35, 10))
    else:
        limb_angles(j, side, "arm", L, facing, rng.uniform(100, 130), rng.uniform(165, 200))


def arm_raise(j: dict, side: str, L: float, facing: int, rng: np.random.Generator) -> None:
    """A throwing arm: raised high, forearm forward and up."""
    limb_angles(j, side, "arm", L, facing, rng.uniform(-120, -80), rng.uniform(-85, -40))


def arm_on_knee(j: dict, side: str, L: float, facing: int) -> None:
    knee = j[f"knee_{side}"]
    target = knee + np.array([0.02 * L * facing, -0.6 * LIMB_W * L])
    limb_to(j, side, "arm", L, target, direction(90, facing))


# ----------------------------------------------------------------------------- drawing
def new_figure(L: float, facing: int, colour, joints: dict, face: str = "front", gaze: float = 0.0) -> dict:
    """A figure record from joints (arrays or lists); numbers rounded to 0.01 px as recorded."""
    return {"L": round(float(L), 2), "facing": int(facing), "colour": [int(c) for c in colour],
            "width": int(max(2, round(LIMB_W * L))), "torso_width": int(max(3, round(TORSO_W * L))),
            "head_r": round(HEAD_R * L, 2), "face": face, "gaze": round(float(gaze), 2),
            "joints": {k: [round(float(v[0]), 2), round(float(v[1]), 2)] for k, v in joints.items()}}


def figure_primitives(fig: dict) -> list[Prim]:
    """Primitives of a figure record in drawing order (back limbs, torso, head and face, front limbs)."""
    j = {k: np.asarray(v, dtype=np.float64) for k, v in fig["joints"].items()}
    col, back = tuple(fig["colour"]), shade(fig["colour"], 0.72)
    w, r = fig["width"], fig["head_r"]
    prims = [capsule(j["hip"], j["knee_b"], w, back), capsule(j["knee_b"], j["foot_b"], w, back),
             capsule(j["shoulder"], j["elbow_b"], w, back), capsule(j["elbow_b"], j["hand_b"], w, back),
             capsule(j["hip"], j["neck"], fig["torso_width"], col), disc(j["head"], r, col)]
    h = j["head"]
    if fig["face"] == "profile":
        g = np.array([math.cos(math.radians(fig["gaze"])), math.sin(math.radians(fig["gaze"]))])
        n = np.array([-g[1], g[0]]) * (1 if g[0] >= 0 else -1)  # perpendicular, pointing down-ish
        prims.append(polygon([h + r * 0.75 * g - 0.32 * r * n, h + r * 1.55 * g + 0.05 * r * n, h + r * 0.75 * g + 0.3 * r * n], col))
        eye = h + 0.45 * r * g - 0.3 * r * n
        prims += [disc(eye, 0.24 * r, EYE_WHITE), disc(eye + 0.1 * r * g, 0.12 * r, PUPIL)]
    else:
        for s in (-1, 1):
            eye = h + np.array([0.38 * r * s, -0.08 * r])
            prims += [disc(eye, 0.22 * r, EYE_WHITE), disc(eye, 0.11 * r, PUPIL)]
    prims += [capsule(j["hip"], j["knee_f"], w, col), capsule(j["knee_f"], j["foot_f"], w, col),
              capsule(j["shoulder"], j["elbow_f"], w, col), capsule(j["elbow_f"], j["hand_f"], w, col)]
    return prims


def figure_colours(fig: dict) -> list[tuple[int, int, int]]:
    """The colours a figure's silhouette is drawn in (body, back limbs)."""
    return [tuple(fig["colour"]), shade(fig["colour"], 0.72)]


def gaze_vector(fig: dict) -> np.ndarray | None:
    """``[2]`` unit direction of a profile figure's gaze, ``None`` for a frontal face."""
    if fig["face"] != "profile":
        return None
    a = math.radians(fig["gaze"])
    return np.array([math.cos(a), math.sin(a)])
