"""Training augmentation (DA-HOI's): exact flips, boxes inside the image, annotated boxes never cut, seeded."""
import numpy as np
import pytest
from PIL import Image

from hoi_mllm.data.sample import HOISample
from hoi_mllm.finetune.augment import augment, crop_window, flip_boxes, resize_shorter
from hoi_mllm.finetune.config import DAHOI_SCALES, AugmentConfig, load_config
from hoi_mllm.finetune.schema import ConfigError
from hoi_mllm.records import Detections


def scene(seed=0, size=(640, 480)):
    rng = np.random.default_rng(seed)
    w, h = size
    xy = rng.uniform(0, [w * 0.7, h * 0.7], (5, 2))
    wh = rng.uniform(10, [w * 0.3, h * 0.3], (5, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    sample = HOISample("a.jpg", size, boxes[:3], np.array([0, 1, 2]), np.array([0]), np.array([1]), [(3,)], [(7,)])
    dets = Detections.create(boxes, np.linspace(0.9, 0.3, 5), [0, 1, 2, 0, 3], size)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return image, sample, dets


def test_flip_is_exact_and_an_involution():
    image, sample, dets = scene()
    seed = next(k for k in range(100) if np.random.default_rng(k).random() < 0.5)  # a draw that flips
    flipped_image, s, d = augment(image, sample, dets, AugmentConfig(flip=True), np.random.default_rng(seed))
    keep_seed = next(k for k in range(100) if np.random.default_rng(k).random() >= 0.5)
    _, unflipped, _ = augment(image, sample, dets, AugmentConfig(flip=True), np.random.default_rng(keep_seed))
    assert np.array_equal(unflipped.boxes, sample.boxes)
    w = image.width
    expected = np.stack([w - sample.boxes[:, 2], sample.boxes[:, 1], w - sample.boxes[:, 0], sample.boxes[:, 3]], 1)
    assert np.array_equal(s.boxes, expected.astype(np.float32))
    assert np.array_equal(np.asarray(flipped_image), np.asarray(image)[:, ::-1])
    assert np.array_equal(np.asarray(d.boxes), flip_boxes(np.asarray(dets.boxes), w))
    assert np.allclose(flip_boxes(flip_boxes(sample.boxes, w), w), sample.boxes, atol=1e-4)  # float32 rounding


@pytest.mark.parametrize("seed", range(25))
def test_every_box_stays_inside_and_annotated_boxes_are_never_cut(seed):
    image, sample, dets = scene(seed, size=[(640, 480), (300, 500), (1000, 200)][seed % 3])
    config = AugmentConfig(flip=True, color_jitter=0.4, scales=list(DAHOI_SCALES), crop=True)
    out, s, d = augment(image, sample, dets, config, np.random.default_rng(seed))
    w, h = out.size
    assert s.image_size == (w, h) and d.image_size == (w, h)
    assert max(w, h) <= 1333 and (min(w, h) in DAHOI_SCALES or max(w, h) == 1333)
    for boxes in (s.boxes, np.asarray(d.boxes)):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # annotated boxes keep their aspect ratio (scaled, never cut by the crop)
    ratio = lambda b: (b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])
    assert np.allclose(ratio(s.boxes), ratio(sample.boxes), rtol=0.02)
    again = augment(image, sample, dets, config, np.random.default_rng(seed))  # seeded: the same draw
    assert np.array_equal(again[1].boxes, s.boxes) and np.array_equal(np.asarray(again[0]), np.asarray(out))


@pytest.mark.parametrize("seed", range(6))
def test_the_dropped_labels_of_a_detection_only_image_move_with_it(seed):
    """The annotations oracle matches pairs to a detection-only image's dropped labels by box: flip, crop and
    resize move those boxes exactly as the image's own (they were left in the original frame before)."""
    from dataclasses import replace

    image, labelled, dets = scene(seed)
    bare = replace(labelled, pair_human=np.zeros(0, np.int64), pair_object=np.zeros(0, np.int64), pair_verbs=[],
                   pair_classes=[], extra={"detection_only": True, "dropped_labels": labelled})
    config = AugmentConfig(flip=True, color_jitter=0.4, scales=list(DAHOI_SCALES), crop=True)
    _, s, _ = augment(image, bare, dets, config, np.random.default_rng(seed))
    _, plain, _ = augment(image, labelled, dets, config, np.random.default_rng(seed))
    moved = s.extra["dropped_labels"]
    assert np.array_equal(moved.boxes, s.boxes) and np.array_equal(s.boxes, plain.boxes)  # same draw, same frame
    assert moved.image_size == s.image_size and moved.pair_verbs == labelled.pair_verbs
    assert bare.extra["dropped_labels"] is labelled  # the source sample is not changed in place


def test_crop_window_holds_the_boxes_and_resize_bounds():
    rng = np.random.default_rng(0)
    keep = np.array([[50.0, 60, 500, 300]])
    for _ in range(50):
        x0, y0, x1, y1 = crop_window((600, 400), keep, rng)
        assert x0 <= 50 and y0 <= 60 and x1 >= 500 and y1 >= 300 and x1 <= 600 and y1 <= 400
    assert resize_shorter((640, 480), 800) == (1067, 800)
    assert resize_shorter((2000, 400), 800) == (1333, 267)  # the longer side caps at 1333


def test_config_and_recipes():
    assert not AugmentConfig().active
    with pytest.raises(ConfigError, match="augment.color_jitter"):
        load_config("hico_det", {"augment.color_jitter": 2})
    for name in ("hico_det", "vcoco", "rare_first"):
        a = load_config(name).augment
        assert a.flip and a.color_jitter == 0.4 and tuple(a.scales) == DAHOI_SCALES and a.crop, name
    assert not load_config("synthetic").augment.active
