"""The one runner: the JSON Lines log (torn last line, resume), the detection cache, batching with
one-by-one retry and skipping, prefetching, EXIF orientation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hoi_mllm.eval.detection_cache import DetectionCache
from hoi_mllm.jsonl_log import JsonlLog, LogError
from hoi_mllm.predictions import PredictionsWriter, read_predictions
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections, HOITriplets
from hoi_mllm.runner import LazyDetector, collect_images, items_from_files, open_image, run_detector

VOCAB = load_vocabulary("hico-det")


class BlobDetector:
    """A real (if simple) detector: the bounding box of the bright pixels (> 200), as a person; counts calls."""

    def __init__(self, reject=()):
        self.calls: list[list[str]] = []
        self.reject = set(reject)

    def __call__(self, images, names):
        self.calls.append(list(names))
        if self.reject & set(names):
            raise ValueError(f"cannot detect {sorted(self.reject & set(names))[0]}")
        out = []
        for im in images:
            a = np.asarray(im).min(axis=2) > 200
            ys, xs = np.nonzero(a)
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(xs) else np.zeros((0, 4))
            out.append(Detections.create(box, [0.9] * len(box), [VOCAB.human_object] * len(box), im.size, VOCAB.name))
        return out


def bright(size, box):
    im = np.full((size[1], size[0], 3), 50, np.uint8)
    x1, y1, x2, y2 = box
    im[y1:y2, x1:x2] = 255
    return Image.fromarray(im)


def write_images(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bright((64, 48), (5 + i, 6, 30 + i, 40)).save(folder / f"im{i}.png")
    return items_from_files(collect_images([folder]))


def test_log_drops_a_torn_last_line_and_resumes(tmp_path):
    path = tmp_path / "log.jsonl"
    parse = lambda raw, where: (raw["k"], raw["v"])  # noqa: E731
    dump = lambda v: {"k": str(v), "v": v}  # noqa: E731
    with JsonlLog(path, {"h": 1}, parse, dump) as log:
        for v in range(3):
            log.append(str(v), v)
    with open(path, "a") as f:  # killed mid-write
        f.write('{"k": "3", "v"')
    log = JsonlLog(path, {"h": 1}, parse, dump)
    assert log.entries == {"0": 0, "1": 1, "2": 2}
    log.append("3", 3)
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"h": 1}] + [{"k": str(v), "v": v} for v in range(4)]
    # a header-only file torn inside its header, and a file another header refuses
    path.write_text('{"h"')
    assert JsonlLog(path, {"h": 1}, parse, dump).entries == {}
    with JsonlLog(path, {"h": 1}, parse, dump) as log:
        log.append("a", 1)
    assert JsonlLog(path, {"h": 2}, parse, dump, accept=lambda old: old == {"h": 2}).entries == {}
    # a bad line that is not the last one is an error naming the line
    path.write_text('{"h": 1}\n{"k": "a", "v": 1}\nnot json\n{"k": "b", "v": 2}\n')
    with pytest.raises(LogError, match=r"log.jsonl: line 3 is not a valid entry"):
        JsonlLog(path, {"h": 1}, parse, dump)


def test_predictions_writer_and_detection_cache_share_the_log(tmp_path):
    path = tmp_path / "p.jsonl"
    with PredictionsWriter(path, "hico-det", meta={"run": 1}) as w:
        for name in ("a.jpg", "b.jpg"):
            w.write(HOITriplets.create([[0, 0, 5, 5]], [[1, 1, 6, 6]], [3], [7], [0.5], name, (10, 10)))
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][:20])  # torn
    w = PredictionsWriter(path, "hico-det", meta={"run": 1})
    assert w.done == {"a.jpg", "b.jpg"}
    w.close()
    assert len(read_predictions(path).images) == 2

    cache = DetectionCache(tmp_path / "det", "key1", VOCAB)
    cache.put("x.png", Detections.create([[1, 2, 3, 4]], [0.5], [1], (10, 10)), "10:1", 3.0)
    cache.close()
    with open(cache.path, "a") as f:
        f.write('{"file_name": "y.png", "boxes": [[1,')
    again = DetectionCache(tmp_path / "det", "key1", VOCAB)
    assert set(again.entries) == {"x.png"} and again.get("x.png", "10:1") is not None
    assert again.get("x.png", "11:1") is None  # another version of the image file
    again.close()
    assert DetectionCache(tmp_path / "det", "key2", VOCAB).entries == {}  # another detector


def test_cache_killed_mid_write_resumes_without_redoing_finished_images(tmp_path):
    items = write_images(tmp_path / "images")
    det = BlobDetector()
    cache = DetectionCache(tmp_path / "cache", "k", VOCAB)

    class Stop(Exception):
        pass

    got = []
    with pytest.raises(Stop):
        for item, image, d in run_detector(det, items, cache=cache, batch_size=2):
            got.append(item.name)
            if len(got) == 3:
                raise Stop
    cache.close()
    assert sorted(cache.entries) == ["im0.png", "im1.png", "im2.png"]  # each image logged as it is handed on
    with open(cache.path, "a") as f:  # and the writer died inside a fourth line
        f.write('{"file_name": "im3.png", "boxes"')
    det2 = BlobDetector()
    with DetectionCache(tmp_path / "cache", "k", VOCAB) as cache2:
        out = {it.name: d for it, _, d in run_detector(det2, items, cache=cache2, batch_size=2)}
    assert det2.calls == [["im3.png"], ["im4.png"]]  # only the images not finished before (batches of the list)
    assert sorted(out) == [f"im{i}.png" for i in range(5)]
    fresh = {it.name: d for it, _, d in run_detector(BlobDetector(), items, batch_size=2)}
    for name, d in fresh.items():
        assert np.allclose(out[name].boxes, d.boxes)
    # every image cached: a lazy detector is never built
    lazy = LazyDetector(lambda: pytest.fail("built although everything is cached"))
    with DetectionCache(tmp_path / "cache", "k", VOCAB) as cache3:
        assert len(list(run_detector(lazy, items, cache=cache3, need_image=lambda it: False))) == 5


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_failing_batch_is_retried_image_by_image_and_bad_images_skipped(tmp_path, prefetch):
    items = write_images(tmp_path / "images", 4)
    (tmp_path / "images" / "broken.png").write_text("not an image")
    items = items_from_files(collect_images([tmp_path / "images"]))
    det = BlobDetector(reject={"im1.png"})
    skipped = []
    out = [it.name for it, _, _ in run_detector(det, items, skipped, batch_size=3, prefetch=prefetch)]
    assert out == ["im0.png", "im2.png", "im3.png"]
    assert [s["file_name"] for s in skipped] == ["broken.png", "im1.png"]
    assert "unreadable image" in skipped[0]["error"] and "cannot detect im1.png" in skipped[1]["error"]
    assert det.calls[0] == ["im0.png", "im1.png"]  # broken.png never reached the detector
    assert ["im0.png"] in det.calls and ["im1.png"] in det.calls  # the one-by-one retry


def test_prefetch_gives_the_same_results_and_reraises_errors(tmp_path):
    items = write_images(tmp_path / "images", 5)
    plain = [(it.name, d.boxes.tolist()) for it, _, d in run_detector(BlobDetector(), items, batch_size=2)]
    ahead = [(it.name, d.boxes.tolist()) for it, _, d in run_detector(BlobDetector(), items, batch_size=2, prefetch=2)]
    assert plain == ahead

    def boom(images, names):
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError, match="out of memory"):
        list(run_detector(boom, items, prefetch=1))


def test_a_portrait_photo_with_exif_orientation_6_is_detected_as_displayed(tmp_path):
    # stored landscape 120 x 80, shown (rotated 90 degrees clockwise) as a portrait 80 x 120
    stored = bright((120, 80), (10, 20, 40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    stored.save(path, exif=exif, quality=95)
    shown = open_image(path)
    assert shown.size == (80, 120) and shown.mode == "RGB"
    (item, image, dets), = run_detector(BlobDetector(), items_from_files([(path, "portrait.jpg")]))
    assert image.size == (80, 120) and dets.image_size == (80, 120)
    # rotating clockwise maps stored (x, y) to displayed (H - 1 - y, x): x 10..40, y 20..30 -> x 50..60, y 10..40
    assert np.allclose(dets.boxes.numpy() if hasattr(dets.boxes, "numpy") else dets.boxes,
                       [[50, 10, 60, 40]], atol=2)
