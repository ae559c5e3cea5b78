"""New interactions as text: parsing, bad input, reuse of existing classes, files, and an added
class scored by ``detect`` (both modes) and evaluated."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers import make_sample
from test_detect_cli import SCENES, write_annotations

from hoi_mllm.cli import main
from hoi_mllm.interactions import add_interactions, read_interactions
from hoi_mllm.predictions import read_predictions
from hoi_mllm.prompts import Vocabulary, load_vocabulary
from hoi_mllm.prompts.vocabulary import VocabularyError

VOCAB = load_vocabulary("hico-det")
NEW_VERB = "polish"  # not a HICO-DET verb
assert NEW_VERB not in VOCAB.verbs


def test_phrases_become_classes_with_ids_kept():
    ext, report = add_interactions(VOCAB, [f"{NEW_VERB} bicycle, cup, hair drier", "repair a bicycle",
                                           "paint motorcycle"])
    assert ext.name == f"{VOCAB.name}+{len(ext.classes) - len(VOCAB.classes)}"
    assert ext.classes[:len(VOCAB.classes)] == VOCAB.classes and ext.verbs[:len(VOCAB.verbs)] == VOCAB.verbs
    polish = ext.verb_index(NEW_VERB)
    assert polish == len(VOCAB.verbs) and ext.num_verbs == VOCAB.num_verbs + 1  # one verb over three objects
    for obj in ("bicycle", "cup", "hair drier"):
        cls = ext.class_of(polish, ext.object_index(obj))
        assert cls is not None and ext.phrase(cls) == f"{NEW_VERB} {obj}"
    # "repair bicycle" is a HICO-DET class already: reused and said so, not added again
    assert VOCAB.class_of(VOCAB.verb_index("repair"), VOCAB.object_index("bicycle")) is not None
    assert any("'repair bicycle' is already class" in r for r in report.reused)
    paint_moto = VOCAB.class_of(VOCAB.verb_index("paint"), VOCAB.object_index("motorcycle"))
    assert (paint_moto is None) == any("paint motorcycle" in a for a in report.added)
    again, report2 = add_interactions(ext, [f"{NEW_VERB} cup"])
    assert again is ext and report2.added == [] and len(report2.reused) == 1
    assert Vocabulary.from_dict(ext.to_dict()).to_dict() == ext.to_dict()  # it saves and loads


def test_bad_interactions_are_clear_errors(tmp_path):
    with pytest.raises(VocabularyError, match=r"object 'giraff' is not in the hico-det vocabulary \(close names: giraffe"):
        add_interactions(VOCAB, ["feed giraff"])
    with pytest.raises(VocabularyError, match="empty phrase"):
        add_interactions(VOCAB, ["  "])
    with pytest.raises(VocabularyError, match="needs a verb and an object"):
        add_interactions(VOCAB, ["giraffe"])
    with pytest.raises(VocabularyError, match=r"unknown key\(s\) \['verbs'\]"):
        add_interactions(VOCAB, [{"verbs": "feed", "object": "giraffe"}])
    with pytest.raises(VocabularyError, match="'phrase' is empty"):
        add_interactions(VOCAB, [{"verb": "feed", "object": "giraffe", "phrase": ""}])
    bad = tmp_path / "bad.yaml"
    bad.write_text("feed: giraffe\n")
    with pytest.raises(VocabularyError, match="expected a list of interactions"):
        read_interactions(bad)


def test_interaction_files_yaml_and_json(tmp_path):
    (tmp_path / "new.yaml").write_text(f"- {NEW_VERB} bicycle\n- verb: {NEW_VERB}\n  objects: [cup, bowl]\n"
                                       "  phrase: '{verb}ing a {object}'\n")
    (tmp_path / "new.json").write_text(json.dumps({"interactions": [f"{NEW_VERB} bicycle"]}))
    ext, _ = add_interactions(VOCAB, read_interactions(tmp_path / "new.yaml"))
    polish = ext.verb_index(NEW_VERB)
    assert ext.phrase(ext.class_of(polish, ext.object_index("bowl"))) == f"{NEW_VERB}ing a bowl"
    assert add_interactions(VOCAB, read_interactions(tmp_path / "new.json"))[0].num_classes == VOCAB.num_classes + 1


@pytest.mark.parametrize("mode", ["matching", "training-free"])
def test_an_added_interaction_is_scored_by_detect_and_evaluated(tmp_path, capsys, mode):
    from hoi_mllm.eval import evaluate_hicodet

    images = tmp_path / "images"
    annotations = write_annotations(images)
    out = tmp_path / "out"
    args = ["detect", str(images), "--model", "tiny-qwen2-vl", "--output", str(out), "--no-vis", "--mode", mode,
            "--detector", "ground-truth", "--detector-option", f"annotations={annotations}", "--top-k", "1000",
            "--interaction", f"{NEW_VERB} bicycle", "--interaction", "ride bicycle"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"added interaction: '{NEW_VERB} bicycle'" in err and "reused: 'ride bicycle' is already class" in err
    ext = Vocabulary.load(out / "vocabulary.json")
    polish = ext.verb_index(NEW_VERB)
    bicycle = ext.object_index("bicycle")
    preds = read_predictions(out / "predictions.json")
    assert preds.vocabulary == ext.name and preds.meta["settings"]["interactions"] == [f"'{NEW_VERB} bicycle' (class "
                                                                                      f"{ext.num_classes - 1})"]
    two = preds.by_file_name()["two.jpg"]
    new = (two.verbs == polish) & (two.objects == bicycle)
    assert new.sum() == 1 and two.scores[new][0] > 0  # the new class was scored on the person-bicycle pair
    # and it is evaluated: a ground truth of the new class on that pair gives it an AP (the only such pair: 1.0)
    size, inst, _ = SCENES["two.jpg"]
    sample = make_sample("two.jpg", size, [b for b, _ in inst], [lab for _, lab in inst], [(0, 1)], [(polish,)])
    sample = dataclasses.replace(sample, pair_classes=[(ext.class_of(polish, bicycle),)])
    result = evaluate_hicodet([sample], preds, ext, missing_classes="skip", settings=("default",),
                              unknown_images="ignore")
    default = result.settings["default"]
    assert default.npos[ext.num_classes - 1] == 1 and default.ap[ext.num_classes - 1] == pytest.approx(1.0)
    assert np.isfinite(default.summary["full"])
