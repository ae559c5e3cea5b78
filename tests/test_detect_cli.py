"""``hoi-mllm detect`` end to end on generated images: ground-truth and YOLO (yaml) detectors, resume, bad input."""
import json

from helpers import scene_image

from hoi_mllm.cli import main
from hoi_mllm.predictions import read_predictions
from hoi_mllm.prompts import load_vocabulary

VOCAB = load_vocabulary("hico-det")
PERSON, BICYCLE, CUP = VOCAB.human_object, VOCAB.object_index("bicycle"), VOCAB.object_index("cup")
RIDE = VOCAB.verb_index("ride")

# file name -> (size (w, h), instances [(box, label)], annotated pairs [(human row, object row)])
SCENES = {
    "two.jpg": ((160, 120), [([10, 10, 60, 110], PERSON), ([70, 40, 150, 110], BICYCLE), ([40, 20, 55, 35], CUP)],
                [(0, 1)]),
    "objects_only.jpg": ((128, 96), [([20, 20, 90, 80], BICYCLE)], []),
    "people.png": ((96, 128), [([5, 5, 40, 120], PERSON), ([50, 10, 90, 120], PERSON)], [(0, 1)]),
}


def write_annotations(folder):
    """A HICO-DET (UPT-style) annotation file for SCENES, and the images."""
    folder.mkdir(parents=True, exist_ok=True)
    ann, names, sizes = [], [], []
    for seed, (name, (size, inst, pairs)) in enumerate(SCENES.items()):
        scene_image(size, seed, [b for b, _ in inst]).save(folder / name)
        boxes_h = [inst[h][0] for h, _ in pairs]
        boxes_o = [inst[o][0] for _, o in pairs]
        objects = [inst[o][1] for _, o in pairs]
        verbs = [RIDE if inst[o][1] == BICYCLE else VOCAB.verb_index("hug") for _, o in pairs]
        hoi = [VOCAB.class_of(v, o) for v, o in zip(verbs, objects)]
        ann.append({"boxes_h": boxes_h, "boxes_o": boxes_o, "object": objects, "verb": verbs, "hoi": hoi})
        names.append(name)
        sizes.append(list(size))
    data = {"annotation": ann, "filenames": names, "size": sizes, "empty": [], "objects": list(VOCAB.objects),
            "verbs": list(VOCAB.verbs), "correspondence": [[i, o, v] for i, (o, v) in enumerate(VOCAB.classes)]}
    path = folder / "instances_test.json"
    path.write_text(json.dumps(data))
    return path


def run_detect(images, out, *extra, model="tiny-qwen2-vl"):
    return main(["detect", *map(str, images), "--model", model, "--output", str(out), *extra])


def test_detect_ground_truth_writes_predictions_pictures_and_resumes(tmp_path, capsys):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    (images / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    args = ("--detector", "ground-truth", "--detector-option", f"annotations={annotations}", "--top-k", "7")
    assert run_detect([images], out, *args) == 0
    preds = read_predictions(out / "predictions.json")
    assert preds.vocabulary == "hico-det" and preds.meta["mode"] == "matching"
    by_name = preds.by_file_name()
    assert set(by_name) == set(SCENES)  # the broken image is reported and skipped
    assert [s["file_name"] for s in preds.meta["skipped"]] == ["broken.jpg"]
    two = by_name["two.jpg"]
    assert len(two) == 7 and (two.scores > 0).all()
    assert set(two.objects.tolist()) <= {BICYCLE, CUP}
    assert all(VOCAB.class_of(int(v), int(o)) is not None for v, o in zip(two.verbs, two.objects))
    assert all(list(h) == [10, 10, 60, 110] for h in two.human_boxes.tolist())  # original pixels
    assert len(by_name["objects_only.jpg"]) == 0  # no person: an empty result
    assert set(by_name["people.png"].objects.tolist()) == {PERSON}
    for name in SCENES:
        assert (out / "vis" / name.rsplit(".", 1)[0]).with_suffix(".jpg").stat().st_size > 0
    jsonl = read_predictions(out / "predictions.jsonl")
    assert [im.file_name for im in jsonl.images] == [im.file_name for im in preds.images]
    # a rerun skips the images already done, and the result is the same
    capsys.readouterr()
    assert run_detect([images], out, *args) == 0
    assert "(0 new)" in capsys.readouterr().out
    again = read_predictions(out / "predictions.json")
    assert [im.file_name for im in again.images] == [im.file_name for im in preds.images]
    # a new image joins; the earlier ones are kept, not recomputed
    scene_image((100, 80), 9, [[10, 10, 50, 70], [60, 20, 90, 60]]).save(images / "late.jpg")
    assert run_detect([images], out, *args) == 0  # late.jpg has no annotation: reported, not fatal
    assert "late.jpg" in capsys.readouterr().err
    assert [im.file_name for im in read_predictions(out / "predictions.json").images] == [
        im.file_name for im in preds.images]


def test_detect_yolo_yaml_and_training_free(tmp_path):
    images = tmp_path / "images"
    write_annotations(images)
    out = tmp_path / "yolo"
    assert run_detect([images / "two.jpg", images / "people.png"], out, "--detector", "yolo",
                      "--detector-option", "model=yolov8n.yaml", "--detector-option", "score_threshold=0.0",
                      "--max-pairs", "6", "--top-k", "50") == 0
    preds = read_predictions(out / "predictions.json")
    assert len(preds) == 2
    for im in preds.images:  # random weights: any boxes, but valid triplets
        assert len(im) <= 50
        for v, o in zip(im.verbs, im.objects):
            assert VOCAB.class_of(int(v), int(o)) is not None
    assert (out / "vis" / "two.jpg").exists() and (out / "vis" / "people.jpg").exists()
    tf = tmp_path / "tf"
    assert run_detect([images / "two.jpg"], tf, "--detector", "ground-truth", "--detector-option",
                      f"annotations={images / 'instances_test.json'}", "--mode", "training-free", "--top-k", "3") == 0
    preds = read_predictions(tf / "predictions.json")
    assert preds.meta["mode"] == "training-free" and len(preds.images[0]) == 3


def test_detect_bad_input(tmp_path, capsys):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    gt = ("--detector", "ground-truth", "--detector-option", f"annotations={annotations}")
    assert run_detect([images], tmp_path / "o", *gt, model=str(tmp_path / "no_such_model")) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "qwen2-vl" in err and "llava" in err  # names the supported families
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert run_detect([images], tmp_path / "o", *gt, model=str(tmp_path / "other")) == 1
    assert "supported" in capsys.readouterr().err
    assert run_detect([tmp_path / "missing.jpg"], tmp_path / "o", *gt) == 1
    assert "no such image" in capsys.readouterr().err
    assert run_detect([images], tmp_path / "o", *gt, "--top-k", "0") == 1
    assert "--top-k" in capsys.readouterr().err


def test_rerun_with_other_settings_is_refused_not_mixed(tmp_path, capsys):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    out = tmp_path / "out"
    gt = ("--detector", "ground-truth", "--detector-option", f"annotations={annotations}", "--no-vis")
    assert run_detect([images / "two.jpg"], out, *gt, "--top-k", "5") == 0
    before = (out / "predictions.jsonl").read_text()
    capsys.readouterr()
    # another mode and top-k into the same folder: refused, naming what differs; nothing lost
    assert run_detect([images], out, *gt, "--top-k", "3", "--mode", "training-free") == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "mode" in err and "top_k" in err and "--force" in err
    assert (out / "predictions.jsonl").read_text() == before
    # the device is not a setting of the result: a rerun on it resumes
    assert run_detect([images], out, *gt, "--top-k", "5", "--detector-option", "device=cpu") == 0
    assert "(2 new)" in capsys.readouterr().out
    # --force starts afresh under the new settings
    assert run_detect([images / "two.jpg"], out, *gt, "--top-k", "3", "--mode", "training-free", "--force") == 0
    preds = read_predictions(out / "predictions.json")
    assert preds.meta["mode"] == "training-free" and [im.file_name for im in preds.images] == ["two.jpg"]
    assert len(preds.images[0]) == 3
    # the separate no-interaction cap: a setting of the result (refused into the same folder), top-k of each kind
    assert run_detect([images / "two.jpg"], out, *gt, "--top-k", "3", "--mode", "training-free",
                      "--no-interaction-cap", "separate") == 1
    assert "no_interaction_cap" in capsys.readouterr().err
    sep = tmp_path / "separate"
    assert run_detect([images / "two.jpg"], sep, *gt, "--top-k", "3", "--no-interaction-cap", "separate") == 0
    image = read_predictions(sep / "predictions.json").images[0]
    from hoi_mllm.prompts import load_vocabulary

    none = load_vocabulary("hico-det").no_interaction_verb
    assert (image.verbs != none).sum() == 3 and 1 <= (image.verbs == none).sum() <= 3


def test_a_strip_image_gets_predictions_and_a_bounded_picture(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (300, 1), (120, 30, 200)).save(images / "strip.png")
    scene_image((160, 120), 1, [[10, 10, 60, 110], [70, 40, 150, 110]]).save(images / "scene.png")
    out = tmp_path / "out"
    assert run_detect([images], out, "--detector", "yolo", "--detector-option", "model=yolov8n.yaml") == 0
    preds = read_predictions(out / "predictions.json")
    assert sorted(im.file_name for im in preds.images) == ["scene.png", "strip.png"]
    with Image.open(out / "vis" / "strip.jpg") as pic:
        assert max(pic.size) <= 4096 and pic.size[0] > pic.size[1]
    assert (out / "vis" / "scene.jpg").exists()


def test_output_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    (tmp_path / "taken").write_text("a file")
    assert run_detect([images], tmp_path / "taken", "--detector", "ground-truth", "--detector-option",
                      f"annotations={annotations}", model=str(tmp_path / "no_such_model")) == 1
    assert "is a file, expected a folder" in capsys.readouterr().err  # not the missing model: checked first
