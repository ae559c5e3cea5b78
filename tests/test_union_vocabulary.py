"""The union action set (prompts/union.py): HICO-DET's verbs plus the V-COCO actions it lacks (EoID's 123 verbs),
its split, bad mappings, and V-COCO evaluation of union predictions as Full / seen / unseen actions."""
import json

import numpy as np
import pytest

from hoi_mllm.cli import main
from hoi_mllm.predictions import PredictionsFile, write_predictions
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.prompts.union import action_split, map_predictions, union_vocabulary, verb_mapping
from hoi_mllm.prompts.vocabulary import VocabularyError
from hoi_mllm.records import HOITriplets

HICO, VCOCO = load_vocabulary("hico-det"), load_vocabulary("vcoco")
UNION = load_vocabulary("hico-det+vcoco")
SPLIT = "detection_only_actions"


def test_the_union_keeps_hico_ids_and_adds_eoids_six_verbs_and_nine_classes():
    assert UNION.verbs[: HICO.num_verbs] == HICO.verbs and UNION.classes[: HICO.num_classes] == HICO.classes
    assert UNION.verbs[HICO.num_verbs:] == ("surf", "ski", "snowboard", "skateboard", "eat_with", "work_on")
    assert UNION.num_classes == HICO.num_classes + 9 and UNION.objects == HICO.objects
    split = UNION.split(SPLIT)
    assert split.kind == "unseen_verb" and split.unseen == frozenset(range(HICO.num_classes, UNION.num_classes))
    assert UNION.seen_classes(SPLIT) == frozenset(range(HICO.num_classes))  # actions from labelled data
    assert UNION.phrases[UNION.class_of(UNION.verb_index("surf"), UNION.object_index("surfboard"))] == \
        "surfing on a surfboard"
    assert UNION.extra["verb_map_outside"] == ["point instr"]  # in EoID's map, not in the 24-role files


def test_verb_mapping_and_the_seen_and_unseen_actions_of_vcoco():
    m = verb_mapping(UNION, VCOCO)
    assert VCOCO.verbs[m[UNION.verb_index("sit_at")]] == VCOCO.verbs[m[UNION.verb_index("sit_on")]] == "sit instr"
    assert m[UNION.verb_index("point")] == -1 and m[UNION.verb_index("adjust")] == -1
    seen, unseen = action_split(UNION, VCOCO)
    assert {VCOCO.verbs[v] for v in unseen} == {"surf instr", "ski instr", "snowboard instr", "skateboard instr",
                                                 "eat instr", "work_on_computer instr"}
    assert len(seen) + len(unseen) == VCOCO.num_verbs and not seen & unseen


def spec(**change):
    out = json.loads((__import__("pathlib").Path(__file__).parents[1] / "prompts/data/hico_vcoco_union.json")
                     .read_text())
    out.update(change)
    return out


def test_bad_unions_are_named():
    with pytest.raises(VocabularyError, match="'fly_kite'.*neither hico-det nor the new verbs"):
        union_vocabulary(spec(verb_map={"fly_kite": "hold obj"}))
    with pytest.raises(VocabularyError, match="maps 'hold' to 'grasp obj', a verb vcoco lacks"):
        union_vocabulary(spec(verb_map={"hold": "grasp obj"}))
    with pytest.raises(VocabularyError, match="new verb 'ride' is already a verb of hico-det"):
        union_vocabulary(spec(new_verbs=["ride"]))
    with pytest.raises(VocabularyError, match="names an object hico-det lacks"):
        union_vocabulary(spec(new_classes=[["surf", "wave"]]))
    with pytest.raises(VocabularyError, match="needs a phrase"):
        union_vocabulary(spec(new_classes=[["eat_with", "bowl"]]))


def vcoco_file(path):
    objects = ["background", "person", "bicycle", "surfboard"]
    classes = list(VCOCO.verbs)
    h, b, s = [10, 10, 100, 200], [50, 100, 300, 220], [0, 150, 200, 230]
    data = {"classes": classes, "objects": objects, "images": [42], "action_to_object": [],
            "annotations": [{"file_name": "COCO_val2014_000000000042.jpg", "boxes_h": [h, h, h],
                             "boxes_o": [b, b, s], "objects": [2, 2, 3],
                             "actions": [classes.index("sit instr"), classes.index("ride instr"),
                                         classes.index("surf instr")]}]}
    path.write_text(json.dumps(data))
    return path, h, b, s


def test_union_predictions_evaluated_on_vcoco_as_full_seen_and_unseen(tmp_path, capsys):
    gt, h, b, s = vcoco_file(tmp_path / "instances_vcoco_test.json")
    v, o = UNION.verb_index, UNION.object_index
    rows = [(b, "bicycle", "sit_on", 0.3), (b, "bicycle", "sit_at", 0.6), (b, "bicycle", "ride", 0.9),
            (b, "bicycle", "adjust", 0.5), (s, "surfboard", "surf", 0.8)]
    t = HOITriplets.create([h] * len(rows), [r[0] for r in rows], [o(r[1]) for r in rows],
                           [v(r[2]) for r in rows], [r[3] for r in rows], "COCO_val2014_000000000042.jpg")
    mapped, counts = map_predictions(PredictionsFile(UNION.name, [t]), UNION, VCOCO)
    assert counts == {"kept": 3, "merged": 1, "unmapped": {"adjust": 1}}
    out = mapped.images[0]
    sit = VCOCO.verb_index("sit instr")
    assert out.scores[out.verbs == sit].tolist() == [0.6]  # sit_on and sit_at: one sit instr, the higher score
    pred = write_predictions(tmp_path / "preds.json", PredictionsFile(UNION.name, [t]))
    report = tmp_path / "report.json"
    assert main(["evaluate", "vcoco", "--annotations", str(gt), "--predictions", str(pred),
                 "--union", "hico-det+vcoco", "--no-progress", "--json", str(report)]) == 0
    text = capsys.readouterr().out
    split = json.loads(report.read_text())["action_split"]  # the JSON carries the printed seen / unseen block
    assert split["scenarios"]["scenario_1"] == {"full": 100.0, "seen": 100.0, "unseen": 100.0}
    assert "surf instr" in split["unseen_actions"] and "ride instr" in split["seen_actions"]
    assert not set(split["seen_actions"]) & set(split["unseen_actions"])
    row = next(line for line in text.splitlines() if line.startswith("scenario_1"))
    assert [float(x) for x in row.split()[1:]] == [100.0, 100.0, 100.0]
    assert "unseen: eat instr" in text and np.isclose(float(row.split()[3]), 100.0)
