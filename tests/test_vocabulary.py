"""Vocabularies: against the real annotation files (skipped when absent) and their own invariants."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hoi_mllm.cli import main
from hoi_mllm.prompts import Vocabulary, VocabularyError, coco_categories, load_vocabulary, normalise_name

HICO = load_vocabulary("hico-det")
VCOCO = load_vocabulary("vcoco")


# ---------------------------------------------------------------------------------------- the real files
@pytest.fixture(scope="module")
def hico_file(shared_data):
    return json.loads((shared_data / "hicodet" / "instances_test2015.json").read_text())


def test_hico_objects_verbs_and_classes_match_the_annotation_file(hico_file):
    assert list(HICO.objects) == hico_file["objects"]
    assert list(HICO.verbs) == hico_file["verbs"]
    assert HICO.num_classes == len(hico_file["correspondence"])
    for hoi, obj, verb in hico_file["correspondence"]:
        assert HICO.classes[hoi] == (obj, verb)
    assert HICO.objects[HICO.human_object] == "person"
    assert HICO.verbs[HICO.no_interaction_verb] == "no_interaction"


def test_hico_rare_and_non_rare_match(hico_file):
    assert HICO.rare == frozenset(hico_file["rare"])
    assert HICO.non_rare == frozenset(hico_file["non_rare"])
    assert len(HICO.rare) + len(HICO.non_rare) == HICO.num_classes


def test_hico_every_annotation_uses_a_valid_class(hico_file):
    for ann in hico_file["annotation"]:
        for hoi, obj, verb in zip(ann["hoi"], ann["object"], ann["verb"]):
            assert HICO.class_of(verb, obj) == hoi


def test_every_zero_shot_split_matches_the_file(shared_data):
    splits = json.loads((shared_data / "hicodet" / "zero_shot_splits.json").read_text())
    names = [k for k in splits if k != "source"]
    assert sorted(HICO.splits) == sorted(names)
    for name in names:
        assert HICO.unseen_classes(name) == frozenset(splits[name]), name
        assert len(HICO.unseen_classes(name)) == len(splits[name])
    assert HICO.split("unseen_object").kind == "unseen_object" and len(HICO.unseen_objects("unseen_object")) == 12
    assert HICO.split("unseen_verb").kind == "unseen_verb" and len(HICO.unseen_verbs("unseen_verb")) == 20
    assert len(HICO.unseen_verbs("unseen_action")) == 22
    for name in ("rare_first", "non_rare_first", "uc0", "uc4"):
        assert HICO.split(name).kind == "unseen_combination" and not HICO.unseen_objects(name)
    assert HICO.unseen_classes("rare_first") <= HICO.rare
    assert HICO.unseen_classes("non_rare_first") <= HICO.non_rare


@pytest.mark.parametrize("part", ["test", "trainval"])
def test_vcoco_action_roles_and_objects_match_the_file(shared_data, part):
    data = json.loads((shared_data / "vcoco" / f"instances_vcoco_{part}.json").read_text())
    assert list(VCOCO.verbs) == data["classes"]
    expected = {(VCOCO.object_index(data["objects"][o]), a) for a, objs in enumerate(data["action_to_object"]) for o in objs}
    assert set(VCOCO.classes) == expected and VCOCO.num_classes == len(expected)
    assert VCOCO.objects == HICO.objects  # same object ids as HICO-DET
    for ann in data["annotations"][:500]:
        for a, o in zip(ann["actions"], ann["objects"]):
            if o > 0:  # 0 / -1: no role object
                assert VCOCO.class_of(a, VCOCO.object_index(data["objects"][o])) is not None


# ---------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("vocab", [HICO, VCOCO], ids=["hico-det", "vcoco"])
def test_phrases_are_unique_and_written(vocab):
    assert len(vocab.phrases) == vocab.num_classes
    assert len(set(vocab.phrases)) == vocab.num_classes
    for p in vocab.phrases:
        assert p == p.strip() and len(p) > 3 and "_" not in p


def test_every_hico_object_has_a_no_interaction_class():
    for o in range(HICO.num_objects):
        c = HICO.class_of(HICO.no_interaction_verb, o)
        assert c is not None
        assert HICO.phrase(c).startswith("no interaction")


@pytest.mark.parametrize("vocab", [HICO, VCOCO], ids=["hico-det", "vcoco"])
def test_prior_lookups_agree_with_the_class_list(vocab):
    seen = 0
    for o in range(vocab.num_objects):
        classes = vocab.classes_for_object(o)
        verbs = vocab.verbs_for_object(o)
        assert list(verbs) == sorted(verbs)
        assert [vocab.classes[c] for c in classes] == [(o, v) for v in verbs]
        seen += len(classes)
    assert seen == vocab.num_classes
    for c, (o, v) in enumerate(vocab.classes):
        assert vocab.class_of(v, o) == c
        assert vocab.class_table[o, v] == c
    assert (vocab.class_table >= 0).sum() == vocab.num_classes
    assert np.array_equal(vocab.class_objects, [o for o, _ in vocab.classes])


def test_class_of_and_names():
    ride, bicycle = HICO.verb_index("ride"), HICO.object_index("bicycle")
    c = HICO.class_of(ride, bicycle)
    assert HICO.phrase(c) == "riding a bicycle"
    assert HICO.class_name(c) == "ride bicycle"
    assert HICO.class_of(HICO.verb_index("eat"), bicycle) is None  # not a class
    assert HICO.object_name(HICO.object_index("sports_ball")) == "sports ball"


def test_coco_maps_cover_the_objects():
    coco = coco_categories()
    assert len(coco["names"]) == len(coco["category_ids"]) == HICO.num_objects
    m80 = HICO.coco80_to_object
    assert sorted(m80.tolist()) == list(range(HICO.num_objects))  # a permutation: every object covered once
    assert m80[0] == HICO.human_object  # COCO class 0 is person
    m91 = HICO.coco91_to_object
    assert m91[1] == HICO.human_object and len(m91) == HICO.num_objects
    assert max(m91) == max(coco["category_ids"]) and 12 not in m91  # the 91-id scheme has gaps
    for cid, name in zip(coco["category_ids"], coco["names"]):
        assert normalise_name(HICO.objects[m91[cid]]) == normalise_name(name)


def test_names_are_tolerant_and_aliases_map():
    assert HICO.object_index("Sports Ball") == HICO.object_index("sports_ball")
    assert HICO.object_index("motorbike") == HICO.object_index("motorcycle")
    assert HICO.object_index_or_none("unicorn") is None


def test_bad_names_and_indices_raise_with_suggestions():
    with pytest.raises(VocabularyError, match="Did you mean 'person'"):
        HICO.object_index("persn")
    with pytest.raises(VocabularyError, match="Did you mean 'ride'"):
        HICO.verb_index("rdie")
    with pytest.raises(VocabularyError, match=r"unknown split 'rare_frist'.*Did you mean 'rare_first'"):
        HICO.split("rare_frist")
    with pytest.raises(VocabularyError, match=r"outside the hico-det vocabulary \(0\.\.79\)"):
        HICO.classes_for_object(HICO.num_objects)
    with pytest.raises(VocabularyError, match="verb index -1"):
        HICO.class_of(-1, 0)
    with pytest.raises(VocabularyError, match="class index"):
        HICO.phrase(HICO.num_classes)
    with pytest.raises(VocabularyError, match="built-in: hico-det, vcoco"):
        load_vocabulary("hico-dett")


def test_summary_counts():
    s = HICO.summary("non_rare_first")
    assert s["seen_classes"] + s["unseen_classes"] == HICO.num_classes
    assert s["unseen_classes"] == len(HICO.unseen_classes("non_rare_first"))
    assert HICO.seen_classes(None) == frozenset(range(HICO.num_classes))


def test_file_round_trip_and_validation(tmp_path):
    HICO.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.classes == HICO.classes and again.phrases == HICO.phrases and again.splits == HICO.splits
    (tmp_path / "vocabulary.json").write_text((tmp_path / "v.json").read_text())
    assert Vocabulary.load(tmp_path).rare == HICO.rare
    data = HICO.to_dict()
    bad = dict(data, phrases=data["phrases"][:-1])
    with pytest.raises(VocabularyError, match="599 phrases for 600 classes"):
        Vocabulary.from_dict(bad)
    bad = dict(data, classes=data["classes"] + [data["classes"][0]], phrases=data["phrases"] + ["x y z"])
    with pytest.raises(VocabularyError, match="repeats"):
        Vocabulary.from_dict(bad)
    with pytest.raises(VocabularyError, match="'format'"):
        Vocabulary.from_dict({"format": "x"})


def test_vocab_command(capsys):
    assert main(["vocab", "--dataset", "hico-det", "--split", "unseen_verb", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unseen_classes"] == len(HICO.unseen_classes("unseen_verb")) and summary["unseen_verbs"] == 20
    assert main(["vocab", "--dataset", "hico-det", "--split", "nope"]) == 1
    assert "unknown split 'nope'" in capsys.readouterr().err
