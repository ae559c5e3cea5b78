"""The synthetic HOI world: determinism, boxes and labels re-derived from the rendering records and
checked against the pixels, verbs decided by visible geometry, the vocabulary, the files and the CLI."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from hoi_mllm.data.synthetic import (DEFAULT_SPLIT, SPLITS, WorldExistsError, annotation_rows, generate_world, read_world,
                                     world_vocabulary)
from hoi_mllm.data.synthetic_figure import figure_colours, figure_primitives
from hoi_mllm.data.synthetic_render import render_scene
from hoi_mllm.data.synthetic_scene import body_clearance, point_box_distance, ray_entry
from hoi_mllm.data.synthetic_shapes import extent_of, object_primitives, shade
from hoi_mllm.prompts.vocabulary import Vocabulary

N_TRAIN, N_TEST = 40, 12
VERBS = ("hold", "carry", "kick", "sit_on", "ride", "push", "look_at", "throw", "no_interaction")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "world"
    info = generate_world(out, N_TRAIN, N_TEST, seed=7, progress=False, workers=1)
    return info


@pytest.fixture(scope="module")
def occluded(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_occ") / "world"
    return generate_world(out, 24, 0, seed=3, occlusion=True, clutter=True, progress=False, workers=1)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ geometry
def _ray_hits(origin, direction, box) -> bool:
    return ray_entry(origin, direction, box) is not None


def _thrown(fig: dict, box: np.ndarray, effects: list) -> bool:
    """A raised hand, the object in the air away from the body, motion lines behind it pointing at it."""
    j = {k: np.asarray(v, dtype=float) for k, v in fig["joints"].items()}
    if j["hand_f"][1] > j["shoulder"][1] - 0.2 * fig["L"] or body_clearance(fig, box) <= 0.1 * fig["L"]:
        return False
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    way = (centre - j["hand_f"]) / np.linalg.norm(centre - j["hand_f"])
    for kind, (a, b), *_ in effects:  # a capsule from just behind the object back toward the hand
        a, b = np.asarray(a), np.asarray(b)
        back = (a - j["hand_f"]) / np.linalg.norm(a - j["hand_f"])
        if kind == "capsule" and point_box_distance(a, box) < 0.5 * fig["L"] and min(np.dot(a - b, way), np.dot(a - b, back)) > 0.8 * np.linalg.norm(a - b):
            return point_box_distance(j["hand_f"], box) < fig["L"]  # just left this hand
    return False


def verb_evidence(verb: str, fig: dict, box: np.ndarray, effects: list) -> bool:
    """Whether the figure's pose, the object's box and the motion lines show ``verb`` (the world's definitions)."""
    j = {k: np.asarray(v, dtype=float) for k, v in fig["joints"].items()}
    L, f, w = fig["L"], fig["facing"], fig["width"]
    head_top = j["head"][1] - fig["head_r"]
    near = lambda p: point_box_distance(p, box) <= w  # noqa: E731  a hand, foot or hip touching the object
    ahead = lambda p: f * (p[0] - j["hip"][0])  # noqa: E731
    lean = f * (j["neck"][0] - j["hip"][0])
    g = math.radians(fig["gaze"])
    looking = fig["face"] == "profile" and _ray_hits(j["head"], (math.cos(g), math.sin(g)), box)
    if verb == "hold":
        return lean < 0.2 * L and any(near(j[h]) and j["head"][1] < j[h][1] < j["hip"][1] + 0.6 * L for h in ("hand_f", "hand_b"))
    if verb == "carry":
        return all(near(j[h]) and j[h][1] < head_top for h in ("hand_f", "hand_b")) and box[3] <= head_top
    if verb == "kick":
        return near(j["foot_f"]) and ahead(j["foot_f"]) > 0.4 * L and abs(ahead(j["foot_b"])) < 0.3 * L
    if verb == "sit_on":
        return (near(j["hip"]) and ahead(j["foot_f"]) > 0.3 * L and ahead(j["foot_b"]) > 0.3 * L
                and abs(j["knee_f"][1] - j["hip"][1]) < 0.3 * L)
    if verb == "ride":  # hips on it and astride (the object between the feet) or both feet off the ground (pedals)
        cx = (box[0] + box[2]) / 2
        astride = (j["foot_f"][0] - cx) * (j["foot_b"][0] - cx) < 0 and ahead(j["foot_f"]) * ahead(j["foot_b"]) < 0
        pedalling = max(j["foot_f"][1], j["foot_b"][1]) < box[3] - 0.15 * L
        return near(j["hip"]) and (astride or pedalling)
    if verb == "push":
        return lean > 0.2 * L and all(near(j[h]) and head_top < j[h][1] < j["hip"][1] + 0.2 * L for h in ("hand_f", "hand_b"))
    if verb == "throw":
        return _thrown(fig, box, effects)
    if verb == "look_at":
        return looking and body_clearance(fig, box) > 0.1 * L
    if verb == "no_interaction":
        return body_clearance(fig, box) > 0.1 * L and not looking and not _thrown(fig, box, effects)
    raise AssertionError(verb)


# ------------------------------------------------------------------------------------------------ tests
def test_same_seed_gives_identical_files_and_other_seed_differs(world, tmp_path):
    again = generate_world(tmp_path / "again", N_TRAIN, N_TEST, seed=7, progress=False, workers=2)
    for name in ("instances_train.json", "instances_test.json", "vocabulary.json", "world.json"):
        assert _digest(world.output_dir / name) == _digest(again.output_dir / name), name
    first = sorted((world.output_dir / "images" / "train").iterdir())[0]
    assert _digest(first) == _digest(again.output_dir / "images" / "train" / first.name)
    other = generate_world(tmp_path / "other", N_TRAIN, 0, seed=8, progress=False, workers=1)
    assert _digest(other.annotations["train"]) != _digest(world.annotations["train"])


def test_test_split_is_a_separate_stream(world, tmp_path):
    more = generate_world(tmp_path / "more", N_TRAIN + 5, N_TEST, seed=7, progress=False, workers=1)
    test_a = json.loads(world.annotations["test"].read_text())["annotation"]
    test_b = json.loads(more.annotations["test"].read_text())["annotation"]
    assert test_a == test_b  # more training images do not change the test set
    train = json.loads(world.annotations["train"].read_text())["annotation"]
    assert train != test_a[: len(train)]


def test_annotation_matches_records_and_geometry(world):
    vocab = Vocabulary.load(world.vocabulary)
    records = read_world(world.output_dir)["records"]
    for split in SPLITS:
        data = json.loads(world.annotations[split].read_text())
        assert len(data["annotation"]) == len(records[split]) == len(data["filenames"]) == len(data["size"])
        for rec, ann, name, size in zip(records[split], data["annotation"], data["filenames"], data["size"]):
            assert rec["file_name"] == name and size == [256, 256]
            pboxes = [extent_of(figure_primitives(p)) for p in rec["persons"]]
            oboxes = [extent_of(object_primitives(o)) for o in rec["objects"]]
            verbs_of = {}
            for p, o, v in rec["interactions"]:
                verbs_of.setdefault((p, o), set()).add(v)
            expected = sorted((p, o, v) for p in range(len(pboxes)) for o in range(len(oboxes))
                              for v in verbs_of.get((p, o), {"no_interaction"}))
            rows = []
            for bh, bo, hoi, obj, verb in zip(ann["boxes_h"], ann["boxes_o"], ann["hoi"], ann["object"], ann["verb"]):
                p = min(range(len(pboxes)), key=lambda k: np.abs(pboxes[k] - bh).max())
                o = min(range(len(oboxes)), key=lambda k: np.abs(oboxes[k] - bo).max())
                assert np.abs(pboxes[p] - bh).max() <= 1.5 and np.abs(oboxes[o] - bo).max() <= 1.5
                assert 0 <= bh[0] < bh[2] <= size[0] and 0 <= bh[1] < bh[3] <= size[1]
                assert 0 <= bo[0] < bo[2] <= size[0] and 0 <= bo[1] < bo[3] <= size[1]
                assert vocab.objects[obj] == rec["objects"][o]["name"]
                assert vocab.class_of(verb, obj) == hoi
                rows.append((p, o, vocab.verbs[verb]))
            assert sorted(rows) == expected
            for p, fig in enumerate(rec["persons"]):  # the labels of a pair are exactly what the picture shows
                for o, box in enumerate(oboxes):
                    shown = {v for v in VERBS if verb_evidence(v, fig, box, rec["effects"])}
                    assert shown == verbs_of.get((p, o), {"no_interaction"}), (name, p, o, shown)


def test_every_verb_and_object_appears_and_some_people_do_two_things(world):
    records = read_world(world.output_dir)["records"]["train"]
    verbs = {v for r in records for _, _, v in r["interactions"]}
    assert verbs == set(VERBS) - {"no_interaction"}
    assert {o["name"] for r in records for o in r["objects"]} == {"ball", "bicycle", "box", "chair", "cup", "sign", "umbrella"}
    two = [r for r in records if any(sum(i[0] == p for i in r["interactions"]) >= 2 for p in range(len(r["persons"])))]
    assert two
    assert any(len(r["persons"]) >= 2 for r in records)
    assert any(len(r["objects"]) > len({i[1] for i in r["interactions"]}) for r in records)  # distractors


def _edges_touched(img: np.ndarray, box, colours, tol: int = 3, ctol: int = 24) -> int:
    """How many of the box's four sides have a pixel of one of ``colours`` within ``tol`` pixels."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = img[y0:y1, x0:x1].astype(int)
    hit = np.zeros(crop.shape[:2], dtype=bool)
    for c in colours:
        hit |= np.abs(crop - np.asarray(c)).max(-1) <= ctol
    ys, xs = np.nonzero(hit)
    if len(xs) == 0:
        return 0
    h, w = crop.shape[:2]
    return int(xs.min() <= tol) + int(ys.min() <= tol) + int(xs.max() >= w - 1 - tol) + int(ys.max() >= h - 1 - tol)


def test_saved_images_reload_and_boxes_fit_the_pixels(world):
    records = read_world(world.output_dir)["records"]["train"]
    data = json.loads(world.annotations["train"].read_text())
    touched = total = 0
    for rec, ann in zip(records[:20], data["annotation"][:20]):
        path = world.image_dirs["train"] / rec["file_name"]
        with Image.open(path) as im:
            assert im.size == (256, 256) and im.mode == "RGB"
            pixels = np.asarray(im)
        drawn, pb, ob = render_scene(rec)
        assert np.array_equal(np.asarray(drawn), pixels)  # PNG is lossless: what was drawn is what was saved
        assert all(any(np.allclose(b, h) for h in pb) for b in ann["boxes_h"])
        order = [tuple(e) for e in rec["order"]]
        items = [("person", i, b, figure_colours(f)) for i, (f, b) in enumerate(zip(rec["persons"], pb))]
        items += [("object", i, b, [tuple(o["colour"]), tuple(o["accent"]), shade(o["accent"], 0.6), shade(o["accent"], 1.6)])
                  for i, (o, b) in enumerate(zip(rec["objects"], ob))]
        boxes = {(k, i): b for k, i, b, _ in items}
        for kind, i, box, colours in items:
            n = _edges_touched(pixels, box, colours)
            later = order[order.index((kind, i)) + 1:]
            covered = any(np.minimum(box[2:], boxes[e][2:]).tolist() > np.maximum(box[:2], boxes[e][:2]).tolist()
                          for e in later if e in boxes)
            assert n >= (2 if covered else 4), (rec["file_name"], kind, i, n)
            touched, total = touched + n, total + 4
    assert touched / total >= 0.95


def test_vocabulary_validates_and_splits_have_the_right_kinds(world):
    vocab = Vocabulary.load(world.vocabulary)
    assert vocab.name == "synthetic" and vocab.objects[vocab.human_object] == "person"
    assert vocab.verbs[vocab.no_interaction_verb] == "no_interaction"
    assert vocab.extra["default_split"] == DEFAULT_SPLIT and vocab.splits[DEFAULT_SPLIT].kind == "unseen_combination"
    assert vocab.phrase(vocab.class_of(vocab.verb_index("kick"), vocab.object_index("ball"))) == "kicking a ball"
    for o in range(vocab.num_objects):  # several verbs per object: the object does not give the verb away
        assert o == vocab.human_object or len(vocab.verbs_for_object(o)) >= 5
    kinds = {s.kind for s in vocab.splits.values()}
    assert kinds == {"unseen_combination", "unseen_verb", "unseen_object"}
    uc = [n for n, s in vocab.splits.items() if s.kind == "unseen_combination"]
    assert len(uc) >= 3
    for name in uc:
        assert not vocab.unseen_verbs(name) and not vocab.unseen_objects(name), name
        seen = vocab.seen_classes(name)
        for c in vocab.unseen_classes(name):  # composition: the verb and the object are each seen elsewhere
            o, v = vocab.classes[c]
            assert sum(vocab.classes[k][1] == v for k in seen) >= 2
            assert sum(vocab.classes[k][0] == o and vocab.classes[k][1] != vocab.no_interaction_verb for k in seen) >= 2
    assert vocab.unseen_verbs("unseen_verb") and not vocab.unseen_objects("unseen_verb")
    assert vocab.unseen_objects("unseen_object")
    data = json.loads(world.annotations["train"].read_text())
    assert data["objects"] == list(vocab.objects) and data["verbs"] == list(vocab.verbs)
    assert data["correspondence"] == [[c, o, v] for c, (o, v) in enumerate(vocab.classes)]
    counts = np.bincount([h for a in data["annotation"] for h in a["hoi"]], minlength=vocab.num_classes)
    assert sorted(data["rare"]) == sorted(vocab.rare) == [c for c in range(vocab.num_classes) if counts[c] < 10]


def test_loads_with_the_dataset_loader(world):
    from hoi_mllm import data

    if not hasattr(data, "load_annotations"):
        pytest.skip("hoi_mllm.data.load_annotations does not exist yet")
    samples = data.load_annotations(world.annotations["train"])
    assert len(samples) == N_TRAIN
    records = read_world(world.output_dir)["records"]["train"]
    vocab = world_vocabulary()
    for s, rec in zip(samples, records):
        assert s.path.exists() and s.image_size == (256, 256)
        assert len(s.boxes) == len(rec["persons"]) + len(rec["objects"])
        assert s.num_pairs == len(rec["persons"]) * len(rec["objects"])
        assert (s.labels == vocab.human_object).sum() == len(rec["persons"])
        assert s.num_triplets == sum(len(v) for v in s.pair_verbs)
        assert s.load_image().size == (256, 256)


def test_reuse_refuse_and_force(world, tmp_path):
    again = generate_world(world.output_dir, N_TRAIN, N_TEST, seed=7, progress=False)
    assert again.reused and again.counts == world.counts
    with pytest.raises(WorldExistsError, match="--force"):
        generate_world(world.output_dir, N_TRAIN, N_TEST, seed=8, progress=False)
    out = tmp_path / "w"
    generate_world(out, 6, 2, seed=1, progress=False)
    replaced = generate_world(out, 4, 1, seed=2, progress=False, force=True)
    assert not replaced.reused
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [f"synth_train_{i:06d}.png" for i in range(4)]
    other = tmp_path / "not_a_world"
    (other / "images" / "train").mkdir(parents=True)
    (other / "images" / "train" / "mine.jpg").write_bytes(b"x")
    with pytest.raises(WorldExistsError):
        generate_world(other, 2, 1, seed=0, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_train": 0}, "training images"), ({"num_test": -1}, "test images"),
    ({"image_size": 64}, "128 to 2048"), ({"image_format": "gif"}, "allowed: png, jpg"), ({"seed": -3}, "seed"),
])
def test_bad_arguments_name_the_allowed_values(tmp_path, kwargs, message):
    args = {"num_train": 2, "num_test": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_world(tmp_path / "w", progress=False, **args)


def test_occlusion_and_clutter_options(occluded):
    rec = read_world(occluded.output_dir)["records"]["train"]
    assert all(r["clutter"] for r in rec) and all(r["occluders"] for r in rec)
    data = json.loads(occluded.annotations["train"].read_text())
    for r, ann in zip(rec, data["annotation"]):
        for bh, bo in zip(ann["boxes_h"], ann["boxes_o"]):
            assert 0 <= bh[0] < bh[2] <= 256 and 0 <= bo[1] < bo[3] <= 256
        verbs_of = {}
        for p, o, v in r["interactions"]:
            verbs_of.setdefault((p, o), set()).add(v)
        for p, fig in enumerate(r["persons"]):
            for o, obj in enumerate(r["objects"]):
                shown = {v for v in VERBS if verb_evidence(v, fig, extent_of(object_primitives(obj)), r["effects"])}
                assert shown == verbs_of.get((p, o), {"no_interaction"}), (r["file_name"], p, o, shown)


def test_annotation_rows_name_every_pair():
    vocab = world_vocabulary()
    rec = {"persons": [{}, {}], "objects": [{"name": "cup"}, {"name": "ball"}], "interactions": [[0, 1, "kick"], [1, 0, "hold"], [1, 0, "look_at"]]}
    rows = annotation_rows(rec, np.array([[0, 0, 5, 5], [10, 10, 20, 20]]), np.array([[1, 1, 2, 2], [3, 3, 4, 4]]), vocab)
    got = [(vocab.verbs[v], vocab.objects[o]) for v, o in zip(rows["verb"], rows["object"])]
    assert got == [("no_interaction", "cup"), ("kick", "ball"), ("hold", "cup"), ("look_at", "cup"), ("no_interaction", "ball")]
    assert rows["boxes_h"][2] == [10.0, 10.0, 20.0, 20.0] and rows["boxes_o"][1] == [3.0, 3.0, 4.0, 4.0]


def test_cli_generates_reuses_and_refuses(tmp_path, capsys):
    from hoi_mllm.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--output", str(out), "--images", "5", "--test-images", "2", "--seed", "4", "--image-size", "160"]) == 0
    assert (out / "instances_train.json").exists() and len(list((out / "images" / "test").iterdir())) == 2
    assert "reused" not in capsys.readouterr().out
    assert main(["synth", "--output", str(out), "--images", "5", "--test-images", "2", "--seed", "4", "--image-size", "160"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["synth", "--output", str(out), "--images", "5", "--seed", "5"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["synth", "--output", str(out), "--images", "0", "--seed", "5"]) == 1


@pytest.mark.parametrize("detector", ["ground-truth", "jitter"])
def test_cli_detections_on_the_world_take_its_vocabulary(world, tmp_path, capsys, detector):
    """Without --vocabulary, ground-truth and jitter use the vocabulary.json beside their annotation file."""
    from hoi_mllm.cli import main
    from hoi_mllm.detectors import read_detections_file

    vocab = world_vocabulary()
    ann = world.annotations["test"]
    out = tmp_path / "dets"
    assert main(["detections", str(world.image_dirs["test"]), "--detector", f"{detector}:annotations={ann}",
                 "--output", str(out), "--no-vis"]) == 0
    entries, header = read_detections_file(out / "detections.json", world.output_dir / "vocabulary.json")
    assert header["vocabulary"] == vocab.name and len(entries) == N_TEST
    labels = np.concatenate([e["labels"] for e in entries.values()])
    assert labels.size and labels.max() < vocab.num_objects
    # a --vocabulary given by hand still wins (here a wrong one: the world's objects are not HICO-DET's)
    rc = main(["detections", str(world.image_dirs["test"]), "--detector", f"{detector}:annotations={ann}",
               "--vocabulary", "hico-det", "--output", str(tmp_path / "other"), "--no-vis"])
    assert rc == 1 and "hico-det" in capsys.readouterr().err
