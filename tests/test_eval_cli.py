"""``hoi-mllm evaluate hico-det|vcoco`` on small annotation files written here, and on the real test sets."""
from __future__ import annotations

import json

import pytest

from hoi_mllm.cli import main
from hoi_mllm.predictions import PredictionsFile, write_predictions
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import HOITriplets

HICO = load_vocabulary("hico-det")
VCOCO = load_vocabulary("vcoco")
RIDE, BIKE = HICO.verb_index("ride"), HICO.object_index("bicycle")
HOLD, CUP = HICO.verb_index("hold"), HICO.object_index("cup")
H, O = [10.0, 10.0, 60.0, 120.0], [5.0, 60.0, 90.0, 130.0]


@pytest.fixture
def hico_files(tmp_path):
    """A two-image UPT-style HICO-DET annotation file and perfect predictions for it."""
    rows = [(H, O, BIKE, RIDE), ([100.0, 10.0, 150.0, 120.0], [120.0, 40.0, 140.0, 60.0], CUP, HOLD)]
    ann = {"annotation": [{"boxes_h": [r[0] for r in rows], "boxes_o": [r[1] for r in rows],
                           "object": [r[2] for r in rows], "verb": [r[3] for r in rows],
                           "hoi": [HICO.class_of(r[3], r[2]) for r in rows]},
                          {"boxes_h": [H], "boxes_o": [O], "object": [BIKE], "verb": [RIDE],
                           "hoi": [HICO.class_of(RIDE, BIKE)]}],
           "filenames": ["HICO_test2015_00000001.jpg", "HICO_test2015_00000002.jpg"], "size": [[640, 480]] * 2}
    annotations = tmp_path / "instances_test2015.json"
    annotations.write_text(json.dumps(ann))
    images = [HOITriplets.create([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                 [r[3] for r in rows], [0.9, 0.8], "HICO_test2015_00000001.jpg"),
              HOITriplets.create([H], [O], [BIKE], [RIDE], [0.7], "HICO_test2015_00000002.jpg")]
    predictions = write_predictions(tmp_path / "predictions.jsonl", PredictionsFile("hico-det", images))
    return annotations, predictions


def evaluate(*args) -> int:
    return main(["evaluate", *map(str, args), "--no-progress"])


def test_hico_det_table_json_and_plots(hico_files, tmp_path, capsys):
    annotations, predictions = hico_files
    out, plots = tmp_path / "out" / "result.json", tmp_path / "plots"
    rc = evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--split", "rare_first",
                  "--missing-classes", "skip", "--json", out, "--plot", plots)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Known-Object" in printed and "100.00" in printed and "U-R@K" in printed
    report = json.loads(out.read_text())
    assert report["split"] == "rare_first" and report["units"] == "percent"
    for setting in ("default", "known_object"):
        assert report[setting]["full"] == pytest.approx(100.0)
        assert len(report[setting]["ap"]) == HICO.num_classes and len(report[setting]["recall"]) == HICO.num_classes
        assert {"rare", "non_rare", "unseen", "seen"} <= set(report[setting])
    assert {"u_r@3", "u_r@5", "u_r@10"} <= set(report)
    assert sorted(p.name for p in plots.iterdir()) == [
        "default_pr_best.png", "default_pr_worst.png", "known_object_pr_best.png", "known_object_pr_worst.png"]
    assert (plots / "default_pr_best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hico_det_official_default_counts_missing_classes_as_zero(hico_files, tmp_path):
    annotations, predictions = hico_files
    out = tmp_path / "r.json"
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--setting", "default",
                    "--json", out) == 0
    report = json.loads(out.read_text())
    assert "known_object" not in report and "u_r@3" not in report
    assert report["default"]["full"] == pytest.approx(100.0 * 2 / HICO.num_classes)
    assert report["counts"]["classes_without_ground_truth"] == HICO.num_classes - 2


def write_raw(path, header: dict, images: list[dict]):
    path.write_text("\n".join(json.dumps(x) for x in [header, *images]) + "\n")
    return path


@pytest.mark.parametrize("hoi, message", [
    ({"human_box": [0, 0, "NaN", 1], "object_box": [0, 0, 1, 1], "object": 0, "verb": 0, "score": 0.5}, "non-finite"),
    ({"human_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "object": 0, "verb": 0, "score": 1.5}, "score 1.5"),
    ({"human_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "object": 0, "verb": 0, "score": "NaN"}, "score nan"),
    ({"human_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "object": 0, "verb": 500, "score": 0.5}, "verb 500"),
])
def test_bad_predictions_are_one_line_errors_naming_the_entry(hico_files, tmp_path, capsys, hoi, message):
    annotations, _ = hico_files
    raw = json.dumps(hoi).replace('"NaN"', "NaN")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det"}) + "\n"
                    + '{"file_name": "HICO_test2015_00000001.jpg", "hois": [' + raw + "]}\n")
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", path) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hoi-mllm evaluate: error:") and "HICO_test2015_00000001.jpg" in err and message in err


def test_unknown_images_other_vocabulary_and_unknown_split(hico_files, tmp_path, capsys):
    annotations, predictions = hico_files
    header = {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det"}
    stray = write_raw(tmp_path / "stray.jsonl", header, [{"file_name": "nowhere.jpg", "hois": []}])
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", stray) == 1
    assert "'nowhere.jpg'" in capsys.readouterr().err
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", stray, "--ignore-unknown-images") == 0
    other = write_raw(tmp_path / "other.jsonl", {**header, "vocabulary": "vcoco"}, [])
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", other) == 1
    assert "vocabulary 'vcoco'" in capsys.readouterr().err
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--split", "nope") == 1
    assert "unknown split 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse names the allowed settings
        evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--setting", "ko")
    assert "choose from 'default', 'known-object', 'both'" in capsys.readouterr().err
    assert evaluate("hico-det", "--annotations", tmp_path / "missing.json", "--predictions", predictions) == 1
    assert "not found" in capsys.readouterr().err
    assert evaluate("vcoco", "--annotations", annotations, "--predictions", predictions) == 1
    assert "use `hoi-mllm evaluate hico-det`" in capsys.readouterr().err
    assert main(["evaluate"]) == 1


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty (0 bytes"), ("  \n", "the file is empty"), ("HEADER", "holds no predicted image")])
def test_an_empty_predictions_file_is_an_error_not_zeros(hico_files, tmp_path, capsys, content, message):
    """A run that crashed before its first image leaves such a file: evaluating it is refused."""
    annotations, _ = hico_files
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det"}) + "\n"
                    if content == "HEADER" else content)
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", path) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"object_box": None}, "hoi #1 has an empty object_box"),
    ({"object_box": [0, 0, 0, 0]}, "hoi #1 has an empty object_box"),
    ({"human_box": [60.0, 10.0, 10.0, 120.0]}, "hoi #1 has a reversed human_box"),
    ({"object_box": [5.0, 130.0, 90.0, 60.0]}, "hoi #1 has a reversed object_box"),
    ({"object": 80}, "hoi #1 has object 80, outside"),
])
def test_hico_det_refuses_empty_and_reversed_boxes_naming_the_entry(hico_files, tmp_path, capsys, change, message):
    annotations, _ = hico_files
    good = {"human_box": H, "object_box": O, "object": BIKE, "verb": RIDE, "score": 0.5}
    path = write_raw(tmp_path / "p.jsonl", {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det"},
                     [{"file_name": "HICO_test2015_00000002.jpg", "hois": [good, {**good, **change}]}])
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", path) == 1
    err = capsys.readouterr().err
    assert "HICO_test2015_00000002.jpg" in err and message in err


def test_hico_det_da_hoi_protocol_through_the_cli(hico_files, tmp_path, capsys):
    annotations, predictions = hico_files
    out = tmp_path / "r.json"
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--protocol", "da-hoi",
                    "--json", out) == 0
    printed = capsys.readouterr().out
    assert "DA-HOI protocol" in printed and "not the official 600-class figure" in printed
    report = json.loads(out.read_text())
    assert report["protocol_name"] == "da-hoi" and report["protocol"]["name"] == "da-hoi"
    assert report["da_hoi"]["full"] == pytest.approx(100.0) and "default" not in report  # 2 classes averaged
    assert report["counts"]["classes_averaged"] == 2
    assert evaluate("hico-det", "--annotations", annotations, "--predictions", predictions, "--protocol", "da-hoi",
                    "--setting", "known-object") == 1
    assert "no Known-Object setting" in capsys.readouterr().err


def test_vcoco_with_role_less_ground_truth(tmp_path, capsys):
    """A CDN-style V-COCO file (roles may be absent) where Scenario 1 and 2 differ."""
    cdn = ["hold_obj", "stand", "sit_instr", "ride_instr", "walk", "look_obj", "hit_instr", "hit_obj", "eat_obj"]
    ann = [{"file_name": "COCO_val2014_000000000001.jpg",
            "annotations": [{"bbox": H, "category_id": 1}, {"bbox": O, "category_id": 53}],  # person, apple
            "hoi_annotation": [{"subject_id": 0, "object_id": -1, "category_id": cdn.index("eat_obj")},
                               {"subject_id": 0, "object_id": 1, "category_id": cdn.index("hold_obj")}]}]
    annotations = tmp_path / "test_vcoco.json"
    annotations.write_text(json.dumps(ann))
    eat, hold, apple = VCOCO.verbs.index("eat obj"), VCOCO.verbs.index("hold obj"), VCOCO.object_index("apple")
    eat_instr = VCOCO.verbs.index("eat instr")
    # the person eats with neither role object: eat obj predicted with a box, eat instr with an empty one
    preds = PredictionsFile("vcoco", [HOITriplets.create([H, H, H], [O, O, [0, 0, 0, 0]], [apple, apple, -1],
                                                         [eat, hold, eat_instr], [0.9, 0.8, 0.7],
                                                         "COCO_val2014_000000000001.jpg")])
    path = write_predictions(tmp_path / "p.json", preds)
    out = tmp_path / "v.json"
    assert evaluate("vcoco", "--annotations", annotations, "--predictions", path, "--json", out,
                    "--plot", tmp_path / "plots") == 0
    report = json.loads(out.read_text())
    assert sum(report["role_less_ground_truth"]) == 2  # eat obj and eat instr
    assert report["num_ground_truth"][eat] == report["num_ground_truth"][eat_instr] == 1
    # Scenario 1: eat obj wrong (a role box where none is annotated), eat instr and hold right
    assert report["scenario_1"]["role_ap"] == pytest.approx(200.0 / 3)
    assert report["scenario_2"]["role_ap"] == pytest.approx(100.0)
    assert report["scenario_1"]["role_ap_vsrl_slots"] == pytest.approx(200.0 / 25)
    assert "Scenario 1 credits them only with an empty role box" in capsys.readouterr().out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4


@pytest.mark.parametrize("role_box, message", [
    ([5.0, 60.0, 90.0], "hoi #1 has object_box [5.0, 60.0, 90.0]; it must be 4 numbers"),
    ([90.0, 60.0, 5.0, 130.0], "hoi #1 has a reversed object_box"),
    (None, None), ([0, 0, 0, 0], None),  # no role object: fine for V-COCO
])
def test_vcoco_role_boxes_from_a_file(tmp_path, capsys, role_box, message):
    ann = {"annotations": [{"boxes_h": [H], "boxes_o": [O], "actions": [VCOCO.verbs.index("eat obj")],
                            "objects": [48], "file_name": "COCO_val2014_000000000001.jpg"}],  # 48: apple
           "classes": list(VCOCO.verbs), "images": [1]}
    annotations = tmp_path / "instances_vcoco_test.json"
    annotations.write_text(json.dumps(ann))
    eat_obj, eat_instr = VCOCO.verbs.index("eat obj"), VCOCO.verbs.index("eat instr")
    hois = [{"human_box": H, "object_box": O, "object": VCOCO.object_index("apple"), "verb": eat_obj, "score": 0.9},
            {"human_box": H, "object_box": role_box, "object": -1, "verb": eat_instr, "score": 0.8}]
    path = write_raw(tmp_path / "p.jsonl", {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "vcoco"},
                     [{"file_name": "COCO_val2014_000000000001.jpg", "hois": hois}])
    out = tmp_path / "r.json"
    rc = evaluate("vcoco", "--annotations", annotations, "--predictions", path, "--json", out)
    if message is not None:
        assert rc == 1 and message in capsys.readouterr().err
        return
    assert rc == 0
    report = json.loads(out.read_text())  # the person eats with no instrument, and an empty box says so
    assert report["scenario_1"]["ap"][eat_instr] == pytest.approx(100.0) and report["scenario_1"]["role_ap"] == 100.0


def test_real_vcoco_ground_truth_through_the_cli(shared_data, tmp_path):
    from hoi_mllm.data import load_annotations
    from hoi_mllm.eval.inputs import ground_truth_predictions

    annotations = shared_data / "vcoco" / "instances_vcoco_test.json"
    path = write_predictions(tmp_path / "gt.jsonl", ground_truth_predictions(load_annotations(annotations), "vcoco"))
    out = tmp_path / "v.json"
    assert evaluate("vcoco", "--annotations", annotations, "--predictions", path, "--json", out) == 0
    report = json.loads(out.read_text())
    assert report["scenario_1"]["role_ap"] == pytest.approx(100.0) and sum(report["role_less_ground_truth"]) == 550
    assert report["scenario_1"]["role_ap_vsrl_slots"] == pytest.approx(96.0)
    assert "550 ground-truth positives are role-less" in report["note"]
