"""Pictures of detections and HOI triplets, drawn with PIL only.

:func:`draw_detections` outlines each box in a colour per object class with ``"person 0.98"``;
:func:`draw_triplets` gives each human-object pair its own colour: both boxes, a line from the
person's centre to the object's centre, and one label line per verb (``"ride bicycle 0.91"``).
Small images are enlarged first (``min_side``) so that the labels stay readable; the input image
is never modified.
"""
from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hoi_mllm.prompts import Vocabulary, load_vocabulary
from hoi_mllm.records import Detections, HOITriplets

GOLDEN = 0.618033988749895
MAX_SIDE = 4096  # enlarging never makes a side longer than this (a 300 x 1 strip stays a strip)


def colour(i: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour for index ``i`` (hues spaced by the golden ratio)."""
    r, g, b = colorsys.hsv_to_rgb((0.07 + i * GOLDEN) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 else (255, 255, 255)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _canvas(image: Image.Image, min_side: int) -> tuple[Image.Image, float]:
    """An RGB copy, enlarged so that its short side is at least ``min_side`` (its long side at most
    :data:`MAX_SIDE`); and the scale used."""
    rgb = image.convert("RGB")
    scale = max(1.0, min(min_side / max(1, min(rgb.size)), MAX_SIDE / max(rgb.size)))
    if scale > 1.0:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
    else:
        rgb = rgb.copy()
    return rgb, scale


def _style(canvas: Image.Image) -> tuple[ImageFont.ImageFont, int]:
    short = min(canvas.size)
    return _font(max(11, round(short / 36))), max(2, round(short / 200))


def _label(draw: ImageDraw.ImageDraw, anchor: tuple[float, float], lines: list[str], fill: tuple[int, int, int],
           font, size: tuple[int, int]) -> None:
    """Text lines on a filled box whose bottom-left is at ``anchor`` (moved inside the image)."""
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0.0, anchor[0]), max(0.0, size[0] - w))
    y = anchor[1] - h
    if y < 0:  # no room above the box: put it inside, below its top edge
        y = min(anchor[1], max(0.0, size[1] - h))
    draw.rectangle([x, y, x + w, y + h], fill=fill)
    draw.multiline_text((x + 3 - left, y + 2 - top), text, fill=_text_colour(fill), font=font, spacing=2)


def _centre(box: np.ndarray) -> tuple[float, float]:
    return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2


def draw_detections(image: Image.Image, dets: Detections, vocabulary: str | Vocabulary = "hico-det",
                    min_side: int = 256) -> Image.Image:
    """Draw detections on a copy of ``image``.

    Args:
        dets: boxes ``[N, 4]`` xyxy pixels of ``image``, scores ``[N]``, labels ``[N]`` object ids of ``vocabulary``.
        min_side: enlarge smaller images to this short side before drawing.
    Returns:
        A new RGB image (enlarged when ``image`` is small), persons in one colour, each object class in its own.
    """
    vocab = load_vocabulary(vocabulary)
    canvas, scale = _canvas(image, min_side)
    draw = ImageDraw.Draw(canvas)
    font, width = _style(canvas)
    d = dets.numpy()
    order = np.argsort(d.scores, kind="stable")  # best drawn last, on top
    for i in order:
        box = d.boxes[i].astype(np.float64) * scale
        label = int(d.labels[i])
        fill = colour(0 if label == vocab.human_object else label + 1)
        draw.rectangle(box.tolist(), outline=fill, width=width)
        _label(draw, (box[0], box[1]), [f"{vocab.object_name(label)} {float(d.scores[i]):.2f}"], fill, font, canvas.size)
    return canvas


def verb_label(vocabulary: Vocabulary, verb: int) -> str:
    """A verb's display name (V-COCO's ``"hold obj"`` shows as ``"hold"``)."""
    actions = vocabulary.extra.get("verb_actions")
    name = actions[verb] if actions and 0 <= verb < len(actions) else vocabulary.verbs[vocabulary.check_verb(verb)]
    return name.replace("_", " ")


def draw_triplets(image: Image.Image, triplets: HOITriplets, vocabulary: str | Vocabulary = "hico-det",
                  top_k: int | None = 10, min_side: int = 256) -> Image.Image:
    """Draw the ``top_k`` best HOI triplets on a copy of ``image``, one colour per human-object pair.

    Args:
        triplets: human/object boxes ``[T, 4]`` xyxy pixels of ``image``, objects ``[T]``, verbs ``[T]``,
            scores ``[T]``; triplets with identical boxes form one pair (several verbs, one label each).
            A non-finite object box (a V-COCO action without its role object) draws the person only.
        top_k: draw this many triplets, best first (``None``: all).
    Returns:
        A new RGB image (enlarged when ``image`` is small).
    """
    vocab = load_vocabulary(vocabulary)
    canvas, scale = _canvas(image, min_side)
    draw = ImageDraw.Draw(canvas)
    font, width = _style(canvas)
    t = triplets.top_k(top_k).numpy()
    pairs: dict[tuple, list[int]] = {}
    for i in range(len(t)):
        key = tuple(np.round(np.concatenate([t.human_boxes[i], t.object_boxes[i]]), 1).tolist())
        pairs.setdefault(key, []).append(i)
    for p, rows in reversed(list(enumerate(pairs.values()))):  # the best pair drawn last, on top
        fill = colour(p)
        h = t.human_boxes[rows[0]].astype(np.float64) * scale
        o = t.object_boxes[rows[0]].astype(np.float64) * scale
        has_object = bool(np.isfinite(o).all() and o.any())  # all zeros: V-COCO's "no role object"
        draw.rectangle(h.tolist(), outline=fill, width=width)
        lines = []
        for r in rows:
            obj = f" {vocab.object_name(int(t.objects[r]))}" if has_object else ""
            lines.append(f"{verb_label(vocab, int(t.verbs[r]))}{obj} {float(t.scores[r]):.2f}")
        if has_object:
            draw.rectangle(o.tolist(), outline=fill, width=width)
            hc, oc = _centre(h), _centre(o)
            draw.line([hc, oc], fill=fill, width=width)
            for c in (hc, oc):
                draw.ellipse([c[0] - 2 * width, c[1] - 2 * width, c[0] + 2 * width, c[1] + 2 * width], fill=fill)
            _label(draw, (o[0], o[1]), lines, fill, font, canvas.size)
        else:
            _label(draw, (h[0], h[1]), lines, fill, font, canvas.size)
    return canvas
