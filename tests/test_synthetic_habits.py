"""The synthetic world with HICO-DET's annotation habits (habits="hico") against the clean one."""
import json

import numpy as np
import pytest
import torch

from hoi_mllm.boxes import box_iou
from hoi_mllm.data.synthetic import HABITS, generate_world, jitter_box


def test_jitter_matches_the_measured_spread_of_real_near_duplicate_rows():
    rng = np.random.default_rng(0)
    box = [40.0, 30.0, 100.0, 180.0]
    a = torch.tensor([jitter_box(box, (256, 256), rng) for _ in range(3000)])
    b = torch.tensor([jitter_box(box, (256, 256), rng) for _ in range(3000)])
    iou = box_iou(a, b).diagonal().numpy()
    p5, p25, p50, p90 = np.percentile(iou, [5, 25, 50, 90])
    # real HICO-DET test rows (module constants): 0.58 / 0.76 / 0.86 / 0.96 for human boxes
    assert 0.5 < p5 < 0.66 and 0.72 < p25 < 0.82 and 0.82 < p50 < 0.9 and 0.93 < p90 < 0.98
    assert (a[:, 2] > a[:, 0]).all() and (a[:, 3] > a[:, 1]).all() and (a >= 0).all() and (a <= 256).all()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("habits")
    return {h: generate_world(root / h, 40, 0, seed=5, image_size=160, progress=False, workers=1, habits=h)
            for h in HABITS}


def test_hico_habits_give_every_row_its_own_boxes_and_the_targets_merge_them(worlds, tmp_path):
    from hoi_mllm.finetune.config import MatcherConfig
    from hoi_mllm.finetune.targets_file import write_targets

    clean = json.loads(worlds["clean"].annotations["train"].read_text())
    hico = json.loads(worlds["hico"].annotations["train"].read_text())
    rows = lambda d: sum(len(a["verb"]) for a in d["annotation"])  # noqa: E731
    distinct = lambda d: sum(len({tuple(b) for b in a["boxes_h"]}) for a in d["annotation"])  # noqa: E731
    assert distinct(hico) == rows(hico)  # one human box per row: a person with two objects is two boxes
    assert distinct(clean) < rows(clean)
    people = {h: [len(r["persons"]) for r in json.loads(w.world.read_text())["records"]["train"]] for h, w in worlds.items()}
    assert max(people["hico"]) == 4 and max(people["clean"]) <= 3  # crowded scenes: several people near the objects
    old = write_targets(worlds["hico"].annotations["train"], tmp_path / "old", matcher=MatcherConfig(targets="one-to-one"),
                        progress=False).as_dict()
    new = write_targets(worlds["hico"].annotations["train"], tmp_path / "new", progress=False).as_dict()
    assert old["duplicates_not_interacting"] > 0 and old["potential_self_pairs"] + old["potential_duplicates"] > 0
    assert new["missing_verbs"] == 0 and new["duplicates_not_interacting"] == 0
    assert new["potential_self_pairs"] == new["potential_duplicates"] == 0
    # the clean world has exact boxes: the two rules agree on what is lost there (nothing)
    clean_old = write_targets(worlds["clean"].annotations["train"], tmp_path / "c", progress=False,
                              matcher=MatcherConfig(targets="one-to-one")).as_dict()
    assert clean_old["missing_verbs"] == 0


def test_unknown_habits_are_named(tmp_path):
    with pytest.raises(ValueError, match="allowed: clean, hico"):
        generate_world(tmp_path / "w", 2, 0, seed=0, image_size=128, progress=False, habits="upt")
