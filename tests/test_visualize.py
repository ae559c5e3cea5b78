"""Drawing detections and HOI triplets: new images, colours per class / pair, top-k, small images."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import scene_image
from PIL import Image

from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections, HOITriplets
from hoi_mllm.visualize import colour, draw_detections, draw_triplets, verb_label

VOCAB = load_vocabulary("hico-det")
PERSON, BICYCLE, CUP = VOCAB.human_object, VOCAB.object_index("bicycle"), VOCAB.object_index("cup")
RIDE, HOLD = VOCAB.verb_index("ride"), VOCAB.verb_index("hold")


def flat(size=(400, 300), value=(100, 100, 100)) -> Image.Image:
    return Image.new("RGB", size, value)


def px(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((int(round(x)), int(round(y))))


def test_colours_are_distinct():
    colours = [colour(i) for i in range(24)]
    assert len(set(colours)) == 24
    arr = np.array(colours, dtype=float)
    dist = np.sqrt(((arr[:, None] - arr[None]) ** 2).sum(-1))
    assert dist[np.triu_indices(8, 1)].min() > 40  # the first pairs are far apart


def test_draw_detections_outlines_boxes_in_class_colours_and_keeps_the_input():
    image = flat()
    before = np.asarray(image).copy()
    dets = Detections.create([[50, 60, 150, 250], [200, 100, 350, 200]], [0.98, 0.5], [PERSON, CUP], image.size)
    out = draw_detections(image, dets, VOCAB)
    assert out is not image and out.size == image.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(image), before)  # input untouched
    assert px(out, 100, 250) == colour(0)  # person: bottom edge
    assert px(out, 350, 150) == colour(CUP + 1)  # cup: right edge
    assert px(out, 100, 150) == (100, 100, 100)  # inside the person box: untouched
    # the label sits above the box: that band changed
    band = np.asarray(out)[40:58, 52:120]
    assert (band != 100).any()


def test_small_images_are_enlarged_for_readable_labels():
    image = scene_image((64, 48))
    dets = Detections.create([[4, 4, 30, 40]], [0.9], [PERSON], image.size)
    out = draw_detections(image, dets, VOCAB, min_side=384)
    assert out.size == (512, 384)
    assert px(out, 4 * 8, 40 * 8 - 1) == colour(0)  # box scaled by 8
    same = draw_detections(flat(), dets, VOCAB, min_side=100)
    assert same.size == (400, 300)


def _triplets():
    h = [60, 60, 140, 260]
    bike, cup = [200, 150, 380, 280], [220, 20, 280, 80]
    return HOITriplets.create([h, h, h], [bike, bike, cup], [BICYCLE, BICYCLE, CUP], [RIDE, HOLD, HOLD],
                              [0.91, 0.8, 0.3], file_name="x.jpg", image_size=(400, 300))


def test_draw_triplets_one_colour_per_pair_with_a_centre_line():
    out = draw_triplets(flat(), _triplets(), VOCAB, top_k=None)
    hc, bc, cc = (100, 160), (290, 215), (250, 50)
    mid_bike = ((hc[0] + bc[0]) / 2, (hc[1] + bc[1]) / 2)
    mid_cup = ((hc[0] + cc[0]) / 2, (hc[1] + cc[1]) / 2)
    assert px(out, *mid_bike) == colour(0)  # best pair (ride/hold bicycle)
    assert px(out, *mid_cup) == colour(1)  # second pair (hold cup)
    assert px(out, 380, 215) == colour(0) and px(out, 280, 60) == colour(1)  # object box edges
    # two verbs of one pair: a two-line label above the bicycle, taller than the cup's one-line label
    rows = np.flatnonzero((np.asarray(out)[:150, 200:260] == colour(0)).all(-1).any(1))
    assert rows.max() - rows.min() > 20


def test_draw_triplets_top_k_and_empty():
    out = draw_triplets(flat(), _triplets(), VOCAB, top_k=2)
    assert px(out, 280, 60) == (100, 100, 100)  # the cup pair (third triplet) is not drawn
    empty = draw_triplets(flat(), HOITriplets.empty("x.jpg"), VOCAB)
    assert np.array_equal(np.asarray(empty), np.asarray(flat()))


def test_draw_triplets_without_an_object_box_draws_the_person():
    t = HOITriplets.create([[10, 10, 100, 200]], [[np.nan] * 4], [CUP], [HOLD], [0.7])
    out = draw_triplets(flat(), t, VOCAB)
    assert px(out, 100, 100) == colour(0)


def test_vcoco_verbs_show_without_their_role():
    vcoco = load_vocabulary("vcoco")
    assert verb_label(vcoco, vcoco.verbs.index("hold obj")) == "hold"
    assert verb_label(VOCAB, VOCAB.verb_index("no_interaction")) == "no interaction"
    with pytest.raises(ValueError):
        verb_label(VOCAB, VOCAB.num_verbs)
