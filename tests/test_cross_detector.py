"""Cross-detector evaluation on a generated synthetic world: table, box recall, caches, resume, bad input, CLI."""
import json

import numpy as np
import pytest
from helpers import scene_image

from hoi_mllm.cli import main
from hoi_mllm.data import load_annotations
from hoi_mllm.data.sample import HOISample
from hoi_mllm.data.synthetic import generate_world
from hoi_mllm.detectors import build_detector, split_detector_specs
from hoi_mllm.eval import cross_detector
from hoi_mllm.eval.baselines import RandomBaseline
from hoi_mllm.eval.cross_detector import plan_detectors, run_cross_detector
from hoi_mllm.eval.detector_recall import detector_box_recall
from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
from hoi_mllm.models.sap import SAPConfig
from hoi_mllm.predictions import read_predictions
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections

SPLIT = "uc_a"
STRONG_JITTER = "jitter:box_noise=0.3,drop_rate=0.3,seed=1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 training and 6 test images of 128 px (seed 0: the test images hold pairs of unseen uc_a classes)."""
    info = generate_world(tmp_path_factory.mktemp("world"), 12, 6, seed=0, image_size=128, progress=False, workers=1)
    vocab = load_vocabulary(info.vocabulary)
    test = load_annotations(info.annotations["test"], vocab)
    assert any(c in vocab.unseen_classes(SPLIT) for s in test for cs in s.pair_classes for c in cs)
    return info, vocab, test, load_annotations(info.annotations["train"], vocab)


@pytest.fixture(scope="module")
def recogniser(world, tiny_qwen2_vl):
    config = RecogniserConfig(sap=SAPConfig(num_pair_tokens=2, hidden_size=32), candidate_placement="prefix")
    return HOIRecogniser(tiny_qwen2_vl, world[1], config).eval()


class Counting:
    """Wraps ``build_detector`` in the runner: records the image names every built detector is run on;
    ``stop_after`` batches, raise KeyboardInterrupt (an interrupted run)."""

    def __init__(self, monkeypatch, stop_after=None):
        self.calls: list[tuple[str, list[str]]] = []
        self.stop_after = stop_after
        real = cross_detector.build_detector

        def build(spec, **kwargs):
            det = real(spec, **kwargs)
            inner = det.detect_batch

            def detect_batch(images, names):
                if self.stop_after is not None and len(self.calls) >= self.stop_after:
                    raise KeyboardInterrupt
                self.calls.append((spec, list(names)))
                return inner(images, names)

            det.detect_batch = detect_batch
            return det

        monkeypatch.setattr(cross_detector, "build_detector", build)

    def images(self, spec=None):
        return [n for s, names in self.calls if spec in (None, s) for n in names]


class CountingScorer:
    """A scorer that counts its calls (and may stop the run), delegating to a seeded random baseline."""

    def __init__(self, vocabulary, stop_after=None):
        self.inner = RandomBaseline(vocabulary, seed=5)
        self.vocabulary = self.inner.vocabulary
        self.calls = 0
        self.stop_after = stop_after

    def identity(self):
        return {"counting": self.inner.identity()}

    def recognise(self, image, pairs):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.recognise(image, pairs)


@pytest.mark.slow
def test_table_rows_recall_and_cache_reuse(world, recogniser, tmp_path, monkeypatch):
    info, vocab, test, train = world
    counting = Counting(monkeypatch)
    specs = ["ground-truth", STRONG_JITTER]
    out = tmp_path / "cross"
    result = run_cross_detector(recogniser, specs, test, out, split=SPLIT, baselines=("random", "prior"),
                                train_samples=train, missing_classes="skip", progress=False)
    assert [(r.detector, r.scorer) for r in result.rows] == [(d, s) for d in specs for s in ("recogniser", "random", "prior")]
    for r in result.rows:
        assert r.images == len(test) and r.triplets > 0
        for value in [*r.metrics.values(), *r.unseen_recall.values(), r.detector_ms, r.scorer_ms]:
            assert value is not None and np.isfinite(value)
        assert set(r.metrics) >= {"unseen", "seen", "full"} and set(r.unseen_recall) == {3, 5, 10}
    gt, jit = result.detectors
    assert (gt.recall.humans, gt.recall.objects, gt.recall.pairs) == (1.0, 1.0, 1.0)
    assert jit.recall.objects < 0.8 and jit.recall.pairs < gt.recall.pairs and jit.recall.humans < 1.0
    assert result.row("ground-truth", "prior").box_recall["pairs"] == 100.0
    for scorer in ("recogniser", "random", "prior"):  # U-R@K grows with K; the oracle boxes recover at least as much
        ur_gt, ur_jit = result.row("ground-truth", scorer).unseen_recall, result.row(STRONG_JITTER, scorer).unseen_recall
        assert ur_gt[3] <= ur_gt[5] <= ur_gt[10] and all(ur_gt[k] >= ur_jit[k] for k in (3, 5, 10))
    assert sorted(set(counting.images())) == sorted(s.file_name for s in test)
    assert len(counting.images()) == 2 * len(test) + 2  # each image once per detector, plus one warm-up each

    doc = json.loads((out / "cross_detector.json").read_text())
    assert doc["format"] == "hoi-mllm/cross-detector" and len(doc["rows"]) == 6 and doc["metrics"] == ["unseen", "seen", "full"]
    markdown = (out / "cross_detector.md").read_text()
    assert markdown.count("\n| ground-truth |") == 3 and "U-R@5" in markdown and "pair R" in markdown
    # the cache is a detections file the `file` detector reads back
    file_det = build_detector(f"file:path={gt.folder / 'detections.json'}", vocabulary=vocab)
    image = test[0].load_image()
    assert np.allclose(file_det([image], [test[0].file_name])[0].boxes.numpy(), test[0].boxes, atol=0.01)

    # a rerun reuses every detection and prediction: neither the detector nor the recogniser runs
    calls = []
    monkeypatch.setattr(recogniser, "recognise", lambda *a, **k: calls.append(1))
    counting.calls.clear()
    again = run_cross_detector(recogniser, specs, test, out, split=SPLIT, baselines=("random", "prior"),
                               train_samples=train, missing_classes="skip", progress=False)
    assert counting.calls == [] and calls == []
    assert [d.reused for d in again.detectors] == [len(test)] * 2 and [d.computed for d in again.detectors] == [0, 0]
    assert again.to_json()["rows"] == result.to_json()["rows"]
    # a changed spec is another detector: it is computed; the unchanged one is not
    changed = "jitter:box_noise=0.31,drop_rate=0.3,seed=1"
    monkeypatch.undo()
    counting = Counting(monkeypatch)
    third = run_cross_detector(None, ["ground-truth", changed], test, out, vocabulary=vocab, baselines=("random",),
                               split=SPLIT, missing_classes="skip", progress=False)
    assert set(counting.images(changed)) == {s.file_name for s in test} and counting.images("ground-truth") == []
    assert third.row("ground-truth", "random").metrics == result.row("ground-truth", "random").metrics
    assert third.detectors[1].folder != jit.folder


def test_interrupted_run_resumes_where_it_stopped(world, tmp_path, monkeypatch):
    _, vocab, test, _ = world
    spec = "ground-truth:batch_size=2"
    folder = tmp_path / "a"
    # 1. stopped in the detector: warm-up, the first batch of two, then the second batch stops
    Counting(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_cross_detector(CountingScorer(vocab), [spec], test, folder, progress=False)
    cached = next(folder.glob("ground-truth-*"))
    assert len(read_predictions(cached / "predictions_recogniser.jsonl").images) == 2
    # 2. resumed, then stopped in the scorer: warm-up and three images
    monkeypatch.undo()
    counting = Counting(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_cross_detector(CountingScorer(vocab, stop_after=4), [spec], test, folder, progress=False)
    assert counting.images()[1:] == [s.file_name for s in test[2:]]  # after the warm-up image: only the rest
    assert len(read_predictions(cached / "predictions_recogniser.jsonl").images) == 5
    # 3. resumed to the end: no detection at all, the scorer on the one image left (and its warm-up)
    counting.calls.clear()
    scorer = CountingScorer(vocab)
    resumed = run_cross_detector(scorer, [spec], test, folder, progress=False)
    assert counting.calls == [] and scorer.calls == 2
    fresh = run_cross_detector(CountingScorer(vocab), [spec], test, tmp_path / "b", progress=False)
    assert resumed.rows[0].metrics == fresh.rows[0].metrics
    a = read_predictions(cached / "predictions_recogniser.jsonl").by_file_name()
    b = read_predictions(next((tmp_path / "b").glob("ground-truth-*")) / "predictions_recogniser.jsonl").by_file_name()
    assert sorted(a) == sorted(b) == sorted(s.file_name for s in test)
    for name in a:
        assert np.allclose(a[name].scores, b[name].scores) and np.array_equal(a[name].verbs, b[name].verbs)


def test_spec_lists_and_bad_input(world, tmp_path):
    _, vocab, test, _ = world
    assert split_detector_specs("ground-truth,yolo:model=a.pt,score_threshold=0.3,hf:model=x/y") == [
        "ground-truth", "yolo:model=a.pt,score_threshold=0.3", "hf:model=x/y"]
    assert split_detector_specs("gt; jitter:box_noise=0.2 ;yolo:model=a.pt,classes=[1,2]") == [
        "gt", "jitter:box_noise=0.2", "yolo:model=a.pt,classes=[1,2]"]
    with pytest.raises(ValueError, match="empty detector spec"):
        split_detector_specs("gt;;jitter")
    with pytest.raises(ValueError, match=r"unknown detector 'yolox'.*allowed: .*ground-truth"):
        plan_detectors(["yolox:model=a.pt"], vocab, test, tmp_path)
    with pytest.raises(ValueError, match=r"unknown option 'noise' for detector 'jitter'; allowed: .*box_noise"):
        plan_detectors(["jitter:noise=0.1"], vocab, test, tmp_path)
    with pytest.raises(ValueError, match="same detector"):
        plan_detectors(["gt", "ground-truth"], vocab, test, tmp_path)
    with pytest.raises(ValueError, match="no detector"):
        plan_detectors([], vocab, test, tmp_path)
    rnd = RandomBaseline(vocab)
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        run_cross_detector(rnd, ["gt"], test, tmp_path, split="nope", progress=False)
    with pytest.raises(ValueError, match="allowed: random, prior"):
        run_cross_detector(rnd, ["gt"], test, tmp_path, baselines=("coin",), progress=False)
    with pytest.raises(ValueError, match="protocol 'coco' not allowed; allowed: hico-det, vcoco"):
        run_cross_detector(rnd, ["gt"], test, tmp_path, protocol="coco", progress=False)
    moved = [HOISample(**{**s.__dict__, "image_root": tmp_path / "nowhere"}) for s in test]
    with pytest.raises(FileNotFoundError, match=f"{len(test)} of {len(test)} images not found"):
        run_cross_detector(rnd, ["gt"], moved, tmp_path, progress=False)


def test_box_recall_hand_made():
    vocab = load_vocabulary("hico-det")
    person, cup, bike = vocab.human_object, vocab.object_index("cup"), vocab.object_index("bicycle")
    gt = HOISample("a.jpg", (100, 100), np.array([[0, 0, 40, 90], [50, 20, 90, 60], [45, 60, 95, 99], [60, 0, 99, 19]],
                                                  dtype=np.float32),
                   np.array([person, cup, bike, person]), np.array([0, 0, 0]), np.array([1, 2, 3]),
                   [(0,), (0,), (0,)], [(-1,), (-1,), (-1,)])
    dets = Detections.create([[1, 1, 40, 90], [50, 20, 90, 60], [45, 60, 65, 99]], [0.9, 0.2, 0.9],
                             [person, bike, bike], (100, 100))  # cup labelled bicycle; bicycle IoU 0.41
    r = detector_box_recall([gt], {"a.jpg": dets}, vocab.num_objects, person)
    assert (r.num_humans, r.num_objects, r.num_pairs) == (1, 3, 3)
    assert (r.humans, r.objects, r.pairs) == (1.0, 0.0, 0.0)
    right = Detections.create([[1, 1, 40, 90], [50, 20, 90, 60], [47, 60, 95, 99]], [1, 1, 1], [person, cup, bike], (100, 100))
    r = detector_box_recall([gt], [right], vocab.num_objects, person)
    assert (r.covered_humans, r.covered_objects, r.covered_pairs) == (1, 2, 2)  # the second person is not detected
    none = detector_box_recall([gt], {}, vocab.num_objects, person)
    assert (none.humans, none.pairs, none.detections) == (0.0, 0.0, 0)


def vcoco_samples(folder):
    """Two V-COCO images (24 action-roles), written to ``folder``."""
    vocab = load_vocabulary("vcoco")
    person, cup, bike = vocab.human_object, vocab.object_index("cup"), vocab.object_index("bicycle")
    hold, ride = vocab.verb_index("hold obj"), vocab.verb_index("ride instr")
    out = []
    for i, (obj, verb) in enumerate([(cup, hold), (bike, ride)]):
        boxes = np.array([[5, 5, 40, 90], [45, 30, 90, 80]], dtype=np.float32)
        scene_image((100, 100), i, boxes).save(folder / f"v{i}.jpg")
        out.append(HOISample(f"v{i}.jpg", (100, 100), boxes, np.array([person, obj]), np.array([0]), np.array([1]),
                             [(verb,)], [(vocab.class_of(verb, obj),)], image_root=folder))
    return vocab, out


def test_vcoco_protocol_baselines_only(tmp_path):
    vocab, samples = vcoco_samples(tmp_path)
    result = run_cross_detector(None, "gt;jitter:box_noise=0.05,drop_rate=0,spurious_rate=0", samples, tmp_path / "o",
                                vocabulary="vcoco", baselines=("random", "prior"), train_samples=samples, progress=False)
    assert result.protocol == "vcoco" and result.metric_keys == ["scenario_1", "scenario_2"]
    prior = result.row("gt", "prior")
    assert prior.metrics["scenario_1"] == pytest.approx(100.0)  # the prior of these very pairs ranks them first
    assert all(np.isfinite(v) for r in result.rows for v in r.metrics.values())
    assert "Role AP S1" in result.to_table()


@pytest.mark.slow
def test_cli_cross_detector(world, tmp_path, capsys):
    info, _, test, _ = world
    out = tmp_path / "cli"
    args = ["evaluate", "cross-detector", "--model", "tiny-qwen2-vl", "--dataset", "hico-det",
            "--annotations", str(info.annotations["test"]), "--split", SPLIT, "--output", str(out),
            "--detectors", f"gt;{STRONG_JITTER}", "--baselines", "random,prior", "--limit", "3",
            "--train-annotations", str(info.annotations["train"]), "--missing-classes", "skip", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "U-R@5" in printed and STRONG_JITTER in printed
    doc = json.loads((out / "cross_detector.json").read_text())
    assert len(doc["rows"]) == 6 and doc["images"] == 3 and (out / "cross_detector.md").exists()
    assert main(args[:-5] + ["--no-progress"]) == 1  # prior without training annotations
    assert "needs --train-annotations" in capsys.readouterr().err
    assert main(args[:8] + ["--output", str(out), "--detector", "nope"]) == 1
    assert "unknown detector 'nope'; allowed:" in capsys.readouterr().err
    assert main(["evaluate", "cross-detector", "--model", "tiny-qwen2-vl", "--dataset", "vcoco", "--annotations",
                 str(info.annotations["test"]), "--detector", "gt"]) == 1
    assert "use --dataset hico-det" in capsys.readouterr().err


def test_a_changed_image_is_detected_and_scored_again(world, tmp_path, monkeypatch):
    _, vocab, test, _ = world
    images = tmp_path / "images"
    images.mkdir()
    samples = []
    for s in test[:3]:
        (images / s.file_name).write_bytes(s.path.read_bytes())
        samples.append(HOISample(**{**s.__dict__, "image_root": images}))
    run_cross_detector(CountingScorer(vocab), ["gt"], samples, tmp_path / "o", progress=False)
    target = images / samples[1].file_name
    target.write_bytes(target.read_bytes() + b"\0")  # another version of the file (size and time change)
    counting = Counting(monkeypatch)
    scorer = CountingScorer(vocab)
    result = run_cross_detector(scorer, ["gt"], samples, tmp_path / "o", progress=False)
    assert counting.images() == [samples[1].file_name] * 2  # warm-up, then the image itself
    assert scorer.calls == 2 and result.detectors[0].computed == 1 and result.rows[0].images == 3
