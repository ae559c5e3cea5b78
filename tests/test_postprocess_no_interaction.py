"""No-interaction classes at inference: scored with 1 - interactiveness, since interactiveness means "interacts"."""
import numpy as np
import pytest
import torch

from hoi_mllm.models.matching import RecognitionOutput
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.postprocess import PostprocessConfig, to_triplets, triplet_scores
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")
PERSON, CUP = VOCAB.human_object, VOCAB.object_index("cup")


def two_people_one_cup():
    """Person 0 holds the cup (interactiveness high), person 1 stands beside it (interactiveness low)."""
    dets = Detections.create([[10, 10, 100, 190], [200, 10, 290, 190], [110, 60, 140, 90]], [1.0, 1.0, 1.0],
                             [PERSON, PERSON, CUP], (300, 200))
    pairs = propose_pairs(dets, PERSON)
    keep = np.flatnonzero(np.asarray(pairs.object_labels) == CUP)
    pairs = pairs[keep]
    classes = list(VOCAB.classes_for_object(CUP))
    no_int = next(c for c in classes if VOCAB.class_verbs[c] == VOCAB.no_interaction_verb)
    hold = next(c for c in classes if VOCAB.verbs[VOCAB.class_verbs[c]] == "hold")
    cands = torch.tensor([[hold, no_int]] * len(pairs))
    human = np.asarray(pairs.human_index)
    inter = torch.tensor([3.0 if h == 0 else -3.0 for h in human])  # logits
    scores = torch.full(cands.shape, 0.5)  # the verb head does not tell them apart: interactiveness must
    out = RecognitionOutput(cands, torch.logit(scores), scores, inter)
    return pairs, out, human, hold, no_int


def test_no_interaction_triplets_rank_the_non_interacting_pair_first():
    pairs, out, human, hold, no_int = two_people_one_cup()
    t = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=None))
    by = {(int(np.flatnonzero((np.asarray(pairs.human_boxes) == t.human_boxes[i]).all(1))[0]), int(t.verbs[i])):
          float(t.scores[i]) for i in range(len(t))}
    p_hold = int(np.flatnonzero(human == 0)[0])
    p_idle = int(np.flatnonzero(human == 1)[0])
    ni = VOCAB.no_interaction_verb
    hold_verb = int(VOCAB.class_verbs[hold])
    assert by[(p_idle, ni)] > by[(p_hold, ni)]           # no interaction: the idle person first
    assert by[(p_hold, hold_verb)] > by[(p_idle, hold_verb)]  # hold: the person holding the cup first
    assert by[(p_idle, ni)] == pytest.approx(0.5 * (1 - torch.sigmoid(torch.tensor(-3.0)).item()))
    # the earlier factor ranks the no-interaction triplet of the holding person first: the wrong way round
    same = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=None, no_interaction="same"))
    by_same = {(int(np.flatnonzero((np.asarray(pairs.human_boxes) == same.human_boxes[i]).all(1))[0]),
                int(same.verbs[i])): float(same.scores[i]) for i in range(len(same))}
    assert by_same[(p_hold, ni)] > by_same[(p_idle, ni)]


def test_triplet_scores_complement_only_at_no_interaction_slots():
    verb = torch.tensor([[0.5, 0.5]])
    inter = torch.tensor([1.0])
    mask = torch.tensor([[False, True]])
    s = triplet_scores(verb, torch.ones(1), torch.ones(1), inter, PostprocessConfig(interactiveness_exponent=2.0), mask)
    p = torch.sigmoid(inter)
    assert torch.allclose(s, torch.tensor([[0.5 * p.item() ** 2, 0.5 * (1 - p.item()) ** 2]]))
    assert torch.allclose(triplet_scores(verb, torch.ones(1), torch.ones(1), None, PostprocessConfig(), mask), verb)


def test_bad_no_interaction_setting_is_named():
    with pytest.raises(ValueError, match="complement, same"):
        PostprocessConfig(no_interaction="inverse")


def test_separate_cap_keeps_the_interactions_a_shared_cap_would_drop():
    pairs, out, human, hold, no_int = two_people_one_cup()
    ni, hold_verb = VOCAB.no_interaction_verb, int(VOCAB.class_verbs[hold])
    # the idle person's no-interaction triplet (0.5 x 0.95) outranks every hold triplet but the holder's
    shared = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=1, no_interaction_cap="shared"))
    assert len(shared) == 1 and int(shared.verbs[0]) in (ni, hold_verb)
    assert PostprocessConfig().no_interaction_cap == "shared"  # top_k: the triplets a caller gets
    separate = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=1, no_interaction_cap="separate"))
    assert sorted(int(v) for v in separate.verbs) == sorted([ni, hold_verb])  # one of each kind
    assert list(separate.scores) == sorted(separate.scores, reverse=True)
    everything = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=None))
    for verb in (ni, hold_verb):  # each kind's best triplet, the same as without any cap
        best = max(float(s) for s, v in zip(everything.scores, everything.verbs) if int(v) == verb)
        assert float(separate.scores[separate.verbs == verb][0]) == pytest.approx(best)
    # a cap wide enough for every interaction equals no cap on the interactions
    wide = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=len(pairs), no_interaction_cap="separate"))
    assert (wide.verbs == hold_verb).sum() == (everything.verbs == hold_verb).sum()


def test_bad_no_interaction_cap_is_named():
    with pytest.raises(ValueError, match="shared, separate"):
        PostprocessConfig(no_interaction_cap="both")
