"""Rendering an image record of the synthetic world, and its boxes from what is drawn.

A box is the tight pixel extent of everything drawn for the instance (limbs, head and nose of a
figure; every part of an object), measured on the instance's own mask, so it is *amodal*: parts
hidden behind something drawn later still count. Boxes are xyxy in pixel-edge coordinates: the
box ``[x0, y0, x1, y1]`` covers pixel columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from hoi_mllm.data.synthetic_figure import figure_primitives
from hoi_mllm.data.synthetic_shapes import Prim, draw_prims, object_primitives


def render_background(bg: dict, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8: a light wall above ``horizon``, a floor below, smooth and fine noise."""
    w, h = size
    rng = np.random.default_rng(bg["noise_seed"])
    rows = np.empty((h, 1, 3), dtype=np.float32)  # [H, 1, 3] wall and floor colours
    split = int(round(bg["horizon"]))
    rows[:split], rows[split:] = bg["top"], bg["floor"]
    smooth = Image.fromarray(rng.normal(0, 1, (7, 7)).astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    noise = 7.0 * np.asarray(smooth) + rng.integers(-4, 5, (h, w), dtype=np.int8)  # [H, W]
    img = rows + noise[..., None]
    return np.clip(img, 0, 255, out=img).round().astype(np.uint8)


def instance_primitives(rec: dict) -> tuple[list[list[Prim]], list[list[Prim]]]:
    """Primitives of every person and every object of a record: ``(persons, objects)``."""
    return [figure_primitives(p) for p in rec["persons"]], [object_primitives(o) for o in rec["objects"]]


def mask_box(prims: list[Prim], size: tuple[int, int]) -> np.ndarray:
    """``[4]`` float32 xyxy pixel-edge box of the pixels the primitives cover on their own."""
    mask = Image.new("L", size, 0)
    draw_prims(ImageDraw.Draw(mask), prims, fill=255)
    bbox = mask.getbbox()
    if bbox is None:
        raise ValueError("an instance covers no pixel of the image")
    return np.asarray(bbox, dtype=np.float32)


def render_scene(rec: dict) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Draw a record.

    Returns:
        ``(image, person_boxes [P, 4], object_boxes [O, 4])``: the RGB picture and the instance boxes
        (float32 xyxy pixel edges, measured from each instance's own mask).
    """
    size = tuple(rec["size"])
    persons, objects = instance_primitives(rec)
    img = Image.fromarray(render_background(rec["background"], size), mode="RGB")
    draw = ImageDraw.Draw(img)
    draw_prims(draw, [Prim.from_json(c) for c in rec["clutter"]])
    effects = [Prim.from_json(e) for e in rec["effects"]]
    table = {"person": persons, "object": objects, "effect": [[e] for e in effects]}
    for kind, index in rec["order"]:
        draw_prims(draw, table[kind][index])
    draw_prims(draw, [Prim.from_json(c) for c in rec["occluders"]])
    person_boxes = np.stack([mask_box(p, size) for p in persons]) if persons else np.zeros((0, 4), np.float32)
    object_boxes = np.stack([mask_box(o, size) for o in objects]) if objects else np.zeros((0, 4), np.float32)
    return img, person_boxes, object_boxes
