"""Baselines on the recogniser's interface: the prior (hand-computed, zero-shot filtered) and seeded random scores."""
import numpy as np
import pytest
import torch

from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.baselines import (BASELINES, PriorBaseline, RandomBaseline, build_baselines, pair_candidates,
                                     verb_object_prior)
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.pipeline import HOIPipeline
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")
PERSON, CUP, BICYCLE = VOCAB.human_object, VOCAB.object_index("cup"), VOCAB.object_index("bicycle")
HOLD, DRINK, NONE, RIDE = (VOCAB.verb_index(v) for v in ("hold", "drink_with", "no_interaction", "ride"))
SPLIT = "uc1"  # holds out "drink with cup" (and "fill cup"), keeps "hold cup"


def cls(verb, obj):
    return VOCAB.class_of(verb, obj)


def sample(name, labels, pairs, verbs, with_classes=True) -> HOISample:
    """Instances on a diagonal, pairs ``[(human row, object row)]`` with their verbs (classes from the vocabulary)."""
    boxes = np.array([[10 * i, 10 * i, 10 * i + 8, 10 * i + 8] for i in range(len(labels))], dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    classes = [tuple(cls(v, int(labels[o])) if with_classes else -1 for v in vs) for (_, o), vs in zip(pairs, verbs)]
    return HOISample(name, (100, 100), boxes, labels, np.array([h for h, _ in pairs]), np.array([o for _, o in pairs]),
                     [tuple(sorted(v)) for v in verbs], classes)


def training(with_classes=True):
    """Cup pairs: A (hold, drink_with), B (hold), C (no_interaction), D (drink_with); one bicycle pair (ride)."""
    return [sample("a.jpg", [PERSON, CUP, CUP], [(0, 1), (0, 2)], [(HOLD, DRINK), (HOLD,)], with_classes),
            sample("b.jpg", [PERSON, CUP, BICYCLE, CUP], [(0, 1), (0, 2), (0, 3)], [(NONE,), (RIDE,), (DRINK,)],
                   with_classes)]


def test_prior_without_split_is_verb_frequency_given_object():
    prior = verb_object_prior(training(), VOCAB)
    # four cup pairs: hold on 2, drink_with on 2, no_interaction on 1; one bicycle pair: ride
    assert prior[cls(HOLD, CUP)] == pytest.approx(2 / 4)
    assert prior[cls(DRINK, CUP)] == pytest.approx(2 / 4)
    assert prior[cls(NONE, CUP)] == pytest.approx(1 / 4)
    assert prior[cls(RIDE, BICYCLE)] == pytest.approx(1.0)
    others = [c for c in range(VOCAB.num_classes) if c not in {cls(HOLD, CUP), cls(DRINK, CUP), cls(NONE, CUP),
                                                               cls(RIDE, BICYCLE)}]
    assert (prior[others] == 0).all()


def test_prior_after_zero_shot_filter_never_holds_unseen_labels():
    unseen = VOCAB.unseen_classes(SPLIT)
    assert cls(DRINK, CUP) in unseen and cls(HOLD, CUP) not in unseen
    prior = verb_object_prior(training(), VOCAB, SPLIT)
    # A and D carry the unseen "drink with cup" and leave training whole (A's "hold" too): B and C remain
    assert prior[cls(HOLD, CUP)] == pytest.approx(1 / 2)
    assert prior[cls(NONE, CUP)] == pytest.approx(1 / 2)
    assert prior[cls(RIDE, BICYCLE)] == pytest.approx(1.0)
    assert (prior[sorted(unseen)] == 0).all()
    # annotations that do not name their classes slip past the filter: unseen classes are still zeroed
    leaky = verb_object_prior(training(with_classes=False), VOCAB, SPLIT)
    assert (leaky[sorted(unseen)] == 0).all() and leaky[cls(HOLD, CUP)] > 0


def test_prior_smoothing_is_uniform_over_an_objects_candidates():
    a = 0.5
    prior = verb_object_prior(training(), VOCAB, SPLIT, smoothing=a)
    k = len(VOCAB.classes_for_object(CUP))
    assert prior[cls(HOLD, CUP)] == pytest.approx((1 + a) / (2 + a * k))
    assert prior[cls(DRINK, CUP)] == pytest.approx(a / (2 + a * k))  # unseen: the smoothing only
    assert prior[cls(DRINK, CUP)] == prior[cls(VOCAB.verb_index("fill"), CUP)]  # equal for every unseen class
    person_classes = list(VOCAB.classes_for_object(PERSON))  # never seen in a pair: uniform 1 / K
    assert np.allclose(prior[person_classes], 1 / len(person_classes))
    with pytest.raises(ValueError, match="smoothing"):
        verb_object_prior(training(), VOCAB, smoothing=-1)


def scene():
    dets = Detections.create([[0, 0, 40, 90], [50, 20, 90, 60], [45, 60, 95, 99]], [0.9, 0.5, 0.8],
                             [PERSON, CUP, BICYCLE], (100, 100), VOCAB.name)
    return dets, propose_pairs(dets, PERSON)


def test_prior_baseline_scores_candidates_and_triplets_go_through_postprocessing():
    prior = verb_object_prior(training(), VOCAB, SPLIT)
    baseline = PriorBaseline(VOCAB, prior, SPLIT)
    dets, pairs = scene()
    out = baseline.recognise(None, pairs)
    assert out.interactiveness is None
    cup_row = int(np.flatnonzero(pairs.object_labels.numpy() == CUP)[0])
    cands = out.candidates[cup_row]
    assert cands[cands >= 0].tolist() == list(VOCAB.classes_for_object(CUP))
    expect = torch.from_numpy(prior)[cands.clamp(min=0)].float() * (cands >= 0)
    assert torch.allclose(out.verb_scores[cup_row], expect)
    triplets = HOIPipeline(None, baseline).recognise_detections(None, dets, "x.jpg")
    best = triplets.sorted()
    # the best cup triplet: hold cup, score = prior x human score x object score (interactiveness 1)
    cup = best[best.objects == CUP]
    assert cup.verbs[0] == HOLD and cup.scores[0] == pytest.approx(0.5 * 0.9 * 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="classes"):
        PriorBaseline(VOCAB, prior[:-1])


def test_random_baseline_is_seeded_by_pairs_not_call_order():
    dets, pairs = scene()
    rnd = RandomBaseline(VOCAB, seed=3)
    a = rnd.recognise(None, pairs)
    rnd.recognise(None, pairs[[0]])  # another call in between changes nothing
    b = rnd.recognise(None, pairs)
    assert torch.equal(a.verb_scores, b.verb_scores)
    assert torch.equal(a.candidates, pair_candidates(VOCAB, pairs))
    valid = a.candidates >= 0
    assert ((a.verb_scores[valid] >= 0) & (a.verb_scores[valid] < 1)).all() and (a.verb_scores[~valid] == 0).all()
    assert a.verb_scores[valid].std() > 0.1  # spread over [0, 1), not constant
    other = RandomBaseline(VOCAB, seed=4).recognise(None, pairs)
    assert not torch.equal(a.verb_scores, other.verb_scores)
    with pytest.raises(ValueError, match="seed"):
        RandomBaseline(VOCAB, seed=-1)


def test_build_baselines_names_and_errors():
    built = build_baselines(["prior", "random"], VOCAB, training(), SPLIT, seed=1)
    assert list(built) == ["prior", "random"] and set(BASELINES) == set(built)
    assert built["prior"].identity()["split"] == SPLIT
    with pytest.raises(ValueError, match="allowed: random, prior"):
        build_baselines(["chance"], VOCAB)
    with pytest.raises(ValueError, match="training annotations"):
        build_baselines(["prior"], VOCAB)
    with pytest.raises(ValueError, match="twice"):
        build_baselines(["random", "random"], VOCAB)
