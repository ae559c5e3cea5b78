"""Drawing primitives and object shapes of the synthetic HOI world.

Everything the world draws is a list of :class:`Prim` (disc, ring, capsule, polyline, polygon) in
image pixels (x right, y down). A primitive's *extent* is computed from its geometry alone, so a
box can be re-derived from the recorded rendering parameters without looking at pixels.

An object is a record (a JSON-able dict)::

    {"name": "ball", "size": {"d": 30.0}, "origin": [x, y], "angle": deg, "mirror": 1 | -1,
     "colour": [r, g, b], "accent": [r, g, b]}

``origin`` is the object's bottom centre (where it stands on the ground); its local frame has x
toward ``mirror`` and y down, so local ``-x`` is the object's *near* side (the side an engaged
person stands on). ``angle`` rotates the object about its origin (degrees, clockwise on screen).
Each class also names *anchors* in its local frame: where a hand grips it (``grip``), where hands
carry it (``carry``), where hips rest (``seat``), where a foot kicks it (``kick``), where hands push it
(``push``), where a rider's feet go (``pedals``) and its ``centre``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import ImageDraw

KINDS = ("disc", "ring", "capsule", "polyline", "polygon")


@dataclass(frozen=True)
class Prim:
    """One drawn primitive.

    Attributes:
        kind: one of ``KINDS``.
        points: ``[K, 2]`` float xy pixels (centre for disc/ring; 2 ends for capsule; K for poly*).
        size: radius (disc, ring), stroke width in pixels (capsule, polyline), 0 for polygon.
        colour: ``(r, g, b)``.
        stroke: ring outline width in pixels (ring only).
    """

    kind: str
    points: np.ndarray
    size: float
    colour: tuple[int, int, int]
    stroke: int = 0

    def extent(self) -> np.ndarray:
        """``[4]`` xyxy extent of what this primitive covers, from its geometry."""
        pad = _PAD[self.kind] * self.size
        return np.concatenate([self.points.min(0) - pad, self.points.max(0) + pad])

    def transformed(self, origin, angle: float, mirror: int) -> "Prim":
        return Prim(self.kind, to_world(self.points, origin, angle, mirror), self.size, self.colour, self.stroke)

    def to_json(self) -> list:
        return [self.kind, np.round(self.points, 2).tolist(), round(float(self.size), 2), list(self.colour), self.stroke]

    @classmethod
    def from_json(cls, item: list) -> "Prim":
        kind, points, size, colour, stroke = item
        return cls(kind, np.asarray(points, dtype=np.float64).reshape(-1, 2), float(size), tuple(colour), int(stroke))


def disc(c, r, colour) -> Prim:
    return Prim("disc", np.asarray([c], dtype=np.float64), float(r), tuple(colour))


def ring(c, r, stroke, colour) -> Prim:
    return Prim("ring", np.asarray([c], dtype=np.float64), float(r), tuple(colour), int(max(1, round(stroke))))


def capsule(a, b, width, colour) -> Prim:
    """A stroke from ``a`` to ``b`` with round ends; ``width`` is rounded to whole pixels (>= 1)."""
    return Prim("capsule", np.asarray([a, b], dtype=np.float64), float(max(1, round(width))), tuple(colour))


def polyline(points, width, colour) -> Prim:
    return Prim("polyline", np.asarray(points, dtype=np.float64), float(max(1, round(width))), tuple(colour))


def polygon(points, colour) -> Prim:
    return Prim("polygon", np.asarray(points, dtype=np.float64), 0.0, tuple(colour))


def rect(x0, y0, x1, y1, colour) -> Prim:
    return polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)


def to_world(points, origin, angle: float, mirror: int) -> np.ndarray:
    """Local ``[K, 2]`` points -> image pixels: mirror x, rotate by ``angle`` degrees, add ``origin``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) * np.array([mirror, 1.0])
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return p @ rot.T + np.asarray(origin, dtype=np.float64)


_PAD = {"disc": 1.0, "ring": 1.0, "capsule": 0.5, "polyline": 0.5, "polygon": 0.0}  # x size: how far a point reaches


def extent_of(prims: list[Prim]) -> np.ndarray:
    """``[4]`` xyxy union of the primitives' extents (:meth:`Prim.extent`), in one batched pass."""
    pts = np.concatenate([p.points for p in prims])  # [K, 2]
    pad = np.repeat([_PAD[p.kind] * p.size for p in prims], [len(p.points) for p in prims])[:, None]  # [K, 1]
    return np.concatenate([(pts - pad).min(0), (pts + pad).max(0)])


def draw_prims(draw: ImageDraw.ImageDraw, prims: list[Prim], fill=None) -> None:
    """Rasterise primitives with PIL (``fill`` overrides every colour, e.g. 255 on a mask)."""
    for p in prims:
        col = p.colour if fill is None else fill
        pts = [tuple(q) for q in p.points]
        if p.kind == "disc":
            (x, y), r = pts[0], p.size
            draw.ellipse([x - r, y - r, x + r, y + r], fill=col)
        elif p.kind == "ring":
            (x, y), r = pts[0], p.size
            draw.ellipse([x - r, y - r, x + r, y + r], outline=col, width=p.stroke)
        elif p.kind in ("capsule", "polyline"):
            w = int(p.size)
            draw.line(pts, fill=col, width=w, joint="curve" if len(pts) > 2 else None)
            if w >= 2:
                for x, y in (pts[0], pts[-1]):
                    draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=col)
        elif p.kind == "polygon":
            draw.polygon(pts, fill=col)
        else:
            raise ValueError(f"unknown primitive kind {p.kind!r}; allowed: {', '.join(KINDS)}")


def shade(colour, factor: float) -> tuple[int, int, int]:
    """Darker (factor < 1) or lighter (factor > 1, toward white) version of a colour."""
    c = np.asarray(colour, dtype=np.float64)
    c = c * factor if factor <= 1 else c + (255 - c) * (factor - 1)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


# ----------------------------------------------------------------------------- object classes
# Each shape function returns (local primitives, local anchors) for a size dict; coordinates are
# in the object's local frame (origin at the bottom centre, y down so the object lies at y <= 0).

Anchors = dict[str, np.ndarray]


def _ball(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    d = s["d"]
    r, c = d / 2, (0.0, -d / 2)
    w = max(1, round(0.07 * d))
    t = np.linspace(0, math.pi, 9)
    seams = [polyline(np.stack([c[0] + k * 0.45 * r * np.sin(t), c[1] - 0.92 * r * np.cos(t)], 1), w, acc) for k in (1, -1)]
    prims = [disc(c, r, col), *seams, ring(c, r, w, acc)]
    anchors = {"grip": [(-0.42 * d, -0.45 * d)], "carry": [(-0.3 * d, -0.1 * d), (0.3 * d, -0.1 * d)],
               "seat": [(0.0, -d)], "kick": [(-0.46 * d, -0.3 * d)], "centre": [c]}
    return prims, anchors


def _box(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    w, h = s["w"], s["h"]
    sw = max(1, round(0.06 * min(w, h)))
    i = 0.14 * min(w, h)
    prims = [rect(-w / 2, -h, w / 2, 0, col),
             polyline([(-w / 2 + i, -i), (-w / 2 + i, -h + i), (w / 2 - i, -h + i), (w / 2 - i, -i), (-w / 2 + i, -i)], sw, acc),
             capsule((-w / 2 + i, -i), (w / 2 - i, -h + i), sw, acc),
             polyline([(-w / 2, 0), (-w / 2, -h), (w / 2, -h), (w / 2, 0), (-w / 2, 0)], sw, acc)]
    anchors = {"grip": [(-0.46 * w, -0.55 * h)], "carry": [(-0.35 * w, 0.0), (0.35 * w, 0.0)], "seat": [(0.0, -h)],
               "kick": [(-w / 2, -min(0.35 * h, 0.3 * w))], "push": [(-w / 2, -0.88 * h)], "centre": [(0.0, -h / 2)]}
    return prims, anchors


def _chair(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    w, seat, back = s["w"], s["seat"], s["back"]
    t = max(2.0, 0.14 * w)
    lw = max(2, round(0.09 * w))
    xn, xf = -w / 2 + lw / 2, w / 2 - lw / 2  # near (backrest) and far leg
    prims = [capsule((xn, -seat), (xn - 0.06 * w, 0.0), lw, acc), capsule((xf, -seat), (xf + 0.06 * w, 0.0), lw, acc),
             capsule((xn, -seat), (xn, -seat - back), lw, acc),
             rect(-w / 2, -seat - back, -w / 2 + 0.22 * w, -seat - 0.45 * back, col),
             rect(-w / 2, -seat - t, w / 2, -seat, col),
             capsule((-w / 2 + t / 2, -seat - t / 2), (w / 2 - t / 2, -seat - t / 2), max(1, round(t / 3)), acc)]
    anchors = {"grip": [(xn, -seat - back)], "push": [(xn, -seat - back)], "seat": [(0.05 * w, -seat - t)],
               "carry": [(xn - 0.06 * w, 0.0), (xf + 0.06 * w, 0.0)], "kick": [(xn - 0.04 * w, -0.45 * seat)],
               "centre": [(0.0, -(seat + back) / 2)]}
    return prims, anchors


def _bicycle(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    r = s["r"]
    tw, fw = max(2, round(0.14 * r)), max(2, round(0.12 * r))
    rear, front = (-1.3 * r, -r), (1.3 * r, -r)
    bb, seat, head, bar = (-0.1 * r, -0.9 * r), (-0.2 * r, -2.0 * r), (0.95 * r, -2.05 * r), (0.8 * r, -2.4 * r)
    prims = []
    for hub in (rear, front):
        for a in (0.0, 60.0, 120.0):
            dx, dy = 0.9 * r * math.cos(math.radians(a)), 0.9 * r * math.sin(math.radians(a))
            prims.append(capsule((hub[0] - dx, hub[1] - dy), (hub[0] + dx, hub[1] + dy), 1, shade(acc, 1.6)))
        prims.append(ring(hub, r, tw, acc))
    prims += [capsule(rear, bb, fw, col), capsule(bb, seat, fw, col), capsule(seat, rear, fw, col),
              capsule(seat, head, fw, col), capsule(head, bb, fw, col), capsule(head, front, fw, col),
              capsule(head, bar, fw, col), capsule(bar, (0.55 * r, -2.4 * r), fw, acc),
              capsule((-0.45 * r, -2.08 * r), (0.05 * r, -2.08 * r), max(2, round(0.2 * r)), acc),
              capsule((bb[0] - 0.3 * r, bb[1] + 0.2 * r), (bb[0] + 0.3 * r, bb[1] - 0.2 * r), max(1, fw - 1), acc)]
    anchors = {"grip": [(0.55 * r, -2.4 * r)], "push": [(0.55 * r, -2.4 * r)], "seat": [(-0.2 * r, -2.08 * r - 0.1 * r)],
               "pedals": [(bb[0] + 0.32 * r, bb[1] + 0.22 * r), (bb[0] - 0.32 * r, bb[1] - 0.22 * r)],
               "carry": [(-1.3 * r, 0.0), (1.3 * r, 0.0)], "centre": [(0.0, -1.2 * r)]}
    return prims, anchors


def _sign(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    w, h, pole = s["w"], s["h"], s["pole"]
    pw, lw = max(2, round(0.07 * w)), max(1, round(0.07 * h))
    top = -pole - h
    prims = [capsule((0.0, 0.0), (0.0, -pole), pw, acc), rect(-w / 2, top, w / 2, -pole, col),
             polyline([(-w / 2, top), (w / 2, top), (w / 2, -pole), (-w / 2, -pole), (-w / 2, top)], lw, acc)]
    for k, frac in enumerate((0.3, 0.52, 0.74)):
        prims.append(capsule((-0.32 * w, top + frac * h), ((0.32 if k != 1 else 0.12) * w, top + frac * h), lw, acc))
    anchors = {"grip": [(0.0, -0.35 * pole)], "carry": [(0.0, -0.03 * pole), (0.0, -0.18 * pole)],
               "push": [(-w / 2, -pole - 0.5 * h)], "centre": [(0.0, -pole - h / 2)]}
    return prims, anchors


def _cup(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    w = s["w"]
    h = 1.1 * w
    hc = (-w / 2 - 0.1 * w, -0.55 * h)
    band = [(-0.465 * w, -0.68 * h), (0.465 * w, -0.68 * h), (0.43 * w, -0.46 * h), (-0.43 * w, -0.46 * h)]
    prims = [ring(hc, 0.24 * w, max(2, round(0.09 * w)), col),
             polygon([(-w / 2, -h), (w / 2, -h), (0.36 * w, 0.0), (-0.36 * w, 0.0)], col), polygon(band, acc),
             capsule((-w / 2, -h), (w / 2, -h), max(1, round(0.07 * w)), acc)]
    anchors = {"grip": [hc], "carry": [(-0.25 * w, 0.0), (0.25 * w, 0.0)], "kick": [(-0.39 * w, -0.15 * h)],
               "centre": [(0.0, -h / 2)]}
    return prims, anchors


def _umbrella(s: dict, col, acc) -> tuple[list[Prim], Anchors]:
    w, shaft = s["w"], s["shaft"]
    r, c = w / 2, (0.0, -shaft)
    sw = max(2, round(0.045 * w))
    prims = [capsule((0.0, -shaft - r), (0.0, -shaft - r - 0.1 * w), sw, acc)]
    edges = np.linspace(math.pi, 2 * math.pi, 7)
    for k in range(6):  # six panels, alternating colours
        t = np.linspace(edges[k], edges[k + 1], 4)
        pts = [c] + [(c[0] + r * math.cos(a), c[1] + r * math.sin(a)) for a in t]
        prims.append(polygon(pts, col if k % 2 == 0 else acc))
    prims += [capsule(c, (0.0, -0.14 * shaft), sw, shade(acc, 0.6)),
              polyline([(0.0, -0.14 * shaft), (0.0, -0.04 * shaft), (-0.05 * w, 0.0), (-0.1 * w, -0.05 * shaft)], sw, shade(acc, 0.6))]
    anchors = {"grip": [(0.0, -0.3 * shaft)], "carry": [(0.0, -0.06 * shaft), (0.0, -0.2 * shaft)],
               "centre": [(0.0, -shaft - 0.25 * w)]}
    return prims, anchors


SHAPES: dict[str, Callable[[dict, tuple, tuple], tuple[list[Prim], Anchors]]] = {
    "ball": _ball, "bicycle": _bicycle, "box": _box, "chair": _chair, "cup": _cup, "sign": _sign, "umbrella": _umbrella,
}


def _shape(obj: dict) -> tuple[list[Prim], Anchors]:
    name = obj["name"]
    if name not in SHAPES:
        raise ValueError(f"unknown synthetic object {name!r}; allowed: {', '.join(SHAPES)}")
    return SHAPES[name](obj["size"], tuple(obj["colour"]), tuple(obj["accent"]))


def object_primitives(obj: dict) -> list[Prim]:
    """The primitives of an object record, in image pixels, in drawing order."""
    prims, _ = _shape(obj)
    pts = to_world(np.concatenate([p.points for p in prims]), obj["origin"], obj["angle"], obj["mirror"])
    ends = np.cumsum([len(p.points) for p in prims])
    return [Prim(p.kind, q, p.size, p.colour, p.stroke) for p, q in zip(prims, np.split(pts, ends[:-1]))]


def object_anchor(obj: dict, name: str) -> np.ndarray:
    """``[K, 2]`` image positions of a named anchor of an object record."""
    _, anchors = _shape(obj)
    if name not in anchors:
        raise ValueError(f"{obj['name']} has no anchor {name!r}; it has: {', '.join(anchors)}")
    return to_world(anchors[name], obj["origin"], obj["angle"], obj["mirror"])


def local_anchor(obj: dict, name: str) -> np.ndarray:
    """``[K, 2]`` anchor positions in the object's local frame (before mirror, rotation, origin)."""
    return np.asarray(_shape(obj)[1][name], dtype=np.float64)


def place_by_anchor(obj: dict, name: str, target, index: int = 0) -> dict:
    """Set ``obj["origin"]`` so that anchor ``name`` (its ``index``-th point) lands on ``target`` (xy)."""
    obj["origin"] = [0.0, 0.0]
    at = object_anchor(obj, name)[index]
    obj["origin"] = (np.asarray(target, dtype=np.float64) - at).tolist()
    return obj
