"""The report's gallery: test images with the ground truth and the predicted triplets drawn side by side.

The images are chosen without looking at any prediction: the first test images (in file order)
that hold an interaction of an unseen class, for half of the gallery, then the first other images.
Each picture has one panel per source (ground truth, then the recogniser on each detector's boxes),
drawn with :func:`~hoi_mllm.visualize.draw_triplets`. ``no_interaction`` triplets are left out of
every panel; a prediction panel shows as many triplets as the image has annotated interactions (at
least one), best first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from hoi_mllm.data.sample import HOISample
from hoi_mllm.io import atomic_path
from hoi_mllm.prompts.vocabulary import Vocabulary
from hoi_mllm.records import HOITriplets
from hoi_mllm.visualize import draw_triplets

PANEL_SIDE = 320
TITLE_HEIGHT = 26


def truth_triplets(sample: HOISample, vocab: Vocabulary) -> HOITriplets:
    """The annotated interactions of one image as triplets (score 1), ``no_interaction`` left out.

    Returns:
        :class:`HOITriplets`: boxes ``[T, 4]`` xyxy pixels, objects ``[T]``, verbs ``[T]``, scores ``[T]`` = 1.
    """
    pair, verbs, _ = sample.triplets()  # [T], [T], [T]
    keep = verbs != vocab.no_interaction_verb
    pair, verbs = pair[keep], verbs[keep]
    return HOITriplets.create(sample.human_boxes[pair], sample.object_boxes[pair], sample.object_labels[pair],
                              verbs, np.ones(len(verbs)), sample.file_name, sample.image_size)


def shown_predictions(pred: HOITriplets | None, vocab: Vocabulary, k: int) -> HOITriplets:
    """The ``k`` best predicted triplets that are not ``no_interaction`` (empty when ``pred`` is None)."""
    if pred is None:
        return HOITriplets.empty()
    pred = pred.numpy()
    return pred[np.asarray(pred.verbs) != vocab.no_interaction_verb].top_k(k)


def pick_images(samples: Sequence[HOISample], unseen: set[int], n: int) -> list[int]:
    """Indices of ``n`` gallery images: the first half with an unseen-class interaction, then the first others."""
    with_unseen = [i for i, s in enumerate(samples) if unseen & {c for cs in s.pair_classes for c in cs}]
    first = with_unseen[: (n + 1) // 2]
    rest = [i for i in range(len(samples)) if i not in set(first)][: n - len(first)]
    return sorted(first + rest)


def titled(panel: Image.Image, title: str) -> Image.Image:
    """``panel`` resized to :data:`PANEL_SIDE` wide, under a white strip holding ``title``."""
    scale = PANEL_SIDE / panel.width
    panel = panel.resize((PANEL_SIDE, round(panel.height * scale)), Image.Resampling.BILINEAR)
    out = Image.new("RGB", (panel.width, panel.height + TITLE_HEIGHT), (255, 255, 255))
    out.paste(panel, (0, TITLE_HEIGHT))
    ImageDraw.Draw(out).text((6, 5), title, fill=(0, 0, 0), font=ImageFont.load_default(size=15))
    return out


def side_by_side(panels: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """Panels left to right on a white background."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), (255, 255, 255))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def write_gallery(samples: Sequence[HOISample], vocab: Vocabulary, unseen: set[int],
                  predictions: Mapping[str, Mapping[str, HOITriplets]], folder: str | Path, n: int,
                  progress: bool = True) -> list[dict]:
    """Draw the gallery into ``folder/gallery_NN.png``.

    Args:
        samples: the test annotations (images read from ``sample.path``).
        unseen: the split's unseen class ids.
        predictions: panel title -> file name -> predicted :class:`HOITriplets` (the recogniser's).
        n: number of images.
    Returns:
        One entry per image: ``file_name``, ``path`` (the picture), ``unseen`` (it holds an unseen
        interaction), and per panel the drawn triplets as text.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    chosen = pick_images(samples, unseen, n)
    for rank, i in enumerate(tqdm(chosen, desc="report gallery", unit="img", disable=not progress)):
        s = samples[i]
        image = s.load_image()
        truth = truth_triplets(s, vocab)
        k = max(1, len(truth))
        panels = {"ground truth": truth}
        panels.update({title: shown_predictions(p.get(s.file_name), vocab, k) for title, p in predictions.items()})
        picture = side_by_side([titled(draw_triplets(image, t, vocab, top_k=None), title) for title, t in panels.items()])
        path = folder / f"gallery_{rank:02d}.png"
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
        described = {title: [f"{vocab.verb_name(int(v))} {vocab.object_name(int(o))} {float(sc):.2f}"
                             for v, o, sc in zip(t.numpy().verbs, t.numpy().objects, t.numpy().scores)]
                     for title, t in panels.items()}
        classes = {c for cs in s.pair_classes for c in cs}
        out.append({"file_name": s.file_name, "path": str(path), "unseen": bool(unseen & classes),
                    "panels": described})
    return out
