"""``hoi-mllm data targets``: targets.jsonl written by the trainer's code, summary checks, bad input."""
import json
from pathlib import Path

import pytest

from hoi_mllm.cli import main
from hoi_mllm.finetune.config import MatcherConfig
from hoi_mllm.finetune.targets_file import write_targets
from hoi_mllm.prompts import load_vocabulary

VOCAB = load_vocabulary("hico-det")
CUP, BALL = VOCAB.object_index("cup"), VOCAB.object_index("sports_ball")
HICO_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "hicodet" / "instances_test2015.json"


def verb(name):
    return VOCAB.verbs.index(name)


def row(h, o, obj, v):
    return h, o, obj, v, int(VOCAB.class_table[obj, v])


def upt_file(path, images, bad=None):
    """A UPT-format file; ``images``: list of row lists ``(human box, object box, object, verb, class)``."""
    ann = [{"boxes_h": [r[0] for r in rows], "boxes_o": [r[1] for r in rows], "object": [r[2] for r in rows],
            "verb": [r[3] for r in rows], "hoi": [r[4] for r in rows]} for rows in images]
    if bad:
        ann[bad[0]][bad[1]][0] = bad[2]
    data = {"annotation": ann, "filenames": [f"HICO_train2015_{i:08d}.jpg" for i in range(len(images))],
            "size": [[300, 200]] * len(images)}
    path.write_text(json.dumps(data))
    return path


H, H_DUP = [0, 0, 60, 150], [2, 1, 61, 148]
C, C_DUP, B = [70, 60, 100, 90], [71, 61, 101, 92], [200, 100, 230, 130]
H2 = [150, 0, 210, 150]


def world(tmp_path, bad=None):
    return upt_file(tmp_path / "instances_train2015.json", [
        # one person with a cup, two verbs on two rows of jittered boxes, and a ball nobody touches
        [row(H, C, CUP, verb("hold")), row(H_DUP, C_DUP, CUP, verb("drink_with")), row(H2, B, BALL, verb("no_interaction"))],
        [row(H, B, BALL, verb("kick"))],
    ], bad)


def lines(folder):
    return [json.loads(x) for x in (folder / "targets.jsonl").read_text().splitlines()]


def test_targets_file_has_the_union_verbs_and_interactiveness(tmp_path):
    s = write_targets(world(tmp_path), tmp_path / "out", progress=False).as_dict()
    rows = lines(tmp_path / "out")
    assert [r["file_name"] for r in rows] == ["HICO_train2015_00000000.jpg", "HICO_train2015_00000001.jpg"]
    first = rows[0]["proposals"]
    assert set(first[0]) == {"human_box", "object_box", "object", "role", "verbs", "interactiveness"}
    cup = [p for p in first if p["object"] == "cup" and p["role"] == "seen"]
    assert len(cup) == 1  # the two rows' boxes merged into one person and one cup (DA-HOI merge_gt)
    assert all(p["verbs"] == sorted([verb("hold"), verb("drink_with")]) and p["interactiveness"] == 1 for p in cup)
    every = write_targets(world(tmp_path), tmp_path / "rows", progress=False, merge_duplicates=False)
    cup = [p for p in lines(tmp_path / "rows")[0]["proposals"] if p["object"] == "cup" and p["role"] == "seen"]
    assert len(cup) == 4  # every row's boxes proposed: both person boxes x both cup boxes, each with both verbs
    assert all(p["verbs"] == sorted([verb("hold"), verb("drink_with")]) for p in cup)
    assert every.as_dict()["missing_verbs"] == 0
    idle = [p for p in first if p["human_box"] == H2 and p["object"] == "sports_ball"]
    assert idle[0]["role"] == "seen" and idle[0]["verbs"] == [verb("no_interaction")] and idle[0]["interactiveness"] == 0
    assert all(p["interactiveness"] is None for p in first if p["role"] == "ignored")
    assert s["missing_verbs"] == 0 and s["expected_verbs"] > 0
    assert s["duplicates_not_interacting"] == 0 and s["potential_duplicates"] == 0 and s["potential_self_pairs"] == 0
    assert sum(s["roles"].values()) == s["proposals"] == sum(len(r["proposals"]) for r in rows)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rule"] == "union" and summary["interactiveness"].startswith("taken as 1")


def test_the_earlier_rule_loses_verbs_and_mines_duplicates(tmp_path):
    s = write_targets(world(tmp_path), tmp_path / "old", matcher=MatcherConfig(targets="one-to-one"),
                      progress=False).as_dict()
    assert s["missing_verbs"] > 0 and s["duplicates_not_interacting"] > 0
    assert s["potential_duplicates"] + s["potential_self_pairs"] > 0


def test_cli_prints_the_summary(tmp_path, capsys):
    assert main(["data", "targets", str(world(tmp_path)), "--output", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "annotated verbs missing from targets" in out and "0 of" in out
    assert main(["data", "targets", str(world(tmp_path)), "--rule", "one-to-one", "--json",
                 "--output", str(tmp_path / "o2")]) == 0
    assert json.loads(capsys.readouterr().out)["rule"] == "one-to-one"


def test_a_split_that_empties_an_image_gives_no_seen_proposal(tmp_path):
    split = next(n for n, sp in VOCAB.splits.items() if any(VOCAB.class_table[BALL, verb("kick")] == c for c in sp.unseen))
    write_targets(world(tmp_path), tmp_path / "z", split=split, progress=False)
    second = lines(tmp_path / "z")[1]["proposals"]
    assert second and all(p["role"] != "seen" for p in second)


@pytest.mark.parametrize("bad, field", [((0, "verb", 999), "annotation[0].verb[0]"),
                                        ((0, "object", -3), "annotation[0].object[0]")])
def test_bad_indices_name_file_image_and_field(tmp_path, capsys, bad, field):
    path = world(tmp_path, bad)
    assert main(["data", "targets", str(path), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert str(path.name) in err and "HICO_train2015_00000000.jpg" in err and field in err
    assert not (tmp_path / "o" / "targets.jsonl").exists()


def test_an_unknown_split_names_the_allowed_ones(tmp_path, capsys):
    assert main(["data", "targets", str(world(tmp_path)), "--split", "nope", "--output", str(tmp_path / "o")]) == 1
    assert "rare_first" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HICO_TEST.is_file(), reason="the real HICO-DET test file is not here")
def test_real_hicodet_test_file_keeps_every_verb_and_mines_no_duplicate(tmp_path):
    s = write_targets(HICO_TEST, tmp_path / "hico", progress=False).as_dict()
    assert s["images"] == 9658 and s["expected_verbs"] > 25_000  # 29,808 labels on merged proposals (README)
    assert s["missing_verbs"] == 0 and s["potential_duplicates"] == 0 and s["potential_self_pairs"] == 0


@pytest.mark.parametrize("hoi, field", [({"subject_id": 0, "object_id": 5, "category_id": 1}, "hoi_annotation[0].object_id"),
                                        ({"subject_id": 7, "object_id": 1, "category_id": 1}, "hoi_annotation[0].subject_id")])
def test_pairs_referencing_boxes_out_of_range_name_file_image_and_field(tmp_path, capsys, hoi, field):
    path = tmp_path / "trainval_hico.json"
    path.write_text(json.dumps([{"file_name": "HICO_train2015_00000007.jpg",
                                 "annotations": [{"bbox": H, "category_id": 1}, {"bbox": C, "category_id": 47}],
                                 "hoi_annotation": [hoi]}]))
    assert main(["data", "targets", str(path), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert path.name in err and "HICO_train2015_00000007.jpg" in err and field in err and "outside" in err
