"""Unseen-pair recall U-R@K on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval import HICODetConfig, UnseenPairRecall, evaluate_hicodet, unseen_pair_recall
from hoi_mllm.eval.inputs import flatten_predictions, image_index
from hoi_mllm.eval.recall import ranked_pairs
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import HOITriplets

# objects: person 0, ball 1; verbs: hold 0, kick 1; classes: 0 hold ball (seen), 1 kick ball (unseen)
VOCAB = Vocabulary.from_dict({
    "format": "hoi-mllm/vocabulary", "name": "tiny-recall", "objects": ["person", "ball"], "verbs": ["hold", "kick"],
    "human_object": 0, "classes": [[1, 0], [1, 1]], "phrases": ["holding a ball", "kicking a ball"],
    "splits": {"u": {"kind": "unseen_combination", "unseen": [1]}},
})
H1, O1 = [0.0, 0.0, 50.0, 100.0], [60.0, 60.0, 90.0, 90.0]  # the unseen pair
H2, O2 = [200.0, 0.0, 250.0, 100.0], [260.0, 60.0, 290.0, 90.0]  # a seen pair


def box(k: int) -> list[float]:
    """A box far from everything, distinct for each k."""
    return [400.0 + 20 * k, 400.0, 410.0 + 20 * k, 410.0]


def sample(name, pairs):
    boxes = [b for hb, ob, _ in pairs for b in (hb, ob)]
    labels = [l for _ in pairs for l in (0, 1)]
    return HOISample(name, (640, 480), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                     np.asarray(labels, dtype=np.int64), np.arange(0, 2 * len(pairs), 2, dtype=np.int64),
                     np.arange(1, 2 * len(pairs), 2, dtype=np.int64),
                     [tuple(VOCAB.classes[c][1] for c in cls) for _, _, cls in pairs], [tuple(cls) for _, _, cls in pairs])


def image(name, rows):
    """rows: (human box, object box, verb, score)."""
    hb, ob, v, s = zip(*rows)
    return HOITriplets.create(hb, ob, [1] * len(rows), v, s, name)


GT = [sample("a.jpg", [(H1, O1, (1,)), (H2, O2, (0,))]), sample("b.jpg", [(H1, O1, (0, 1))]), sample("c.jpg", [])]


def test_u_r_at_k_counts_distinct_pairs_ranked_by_their_best_triplet():
    # a.jpg: four unrelated pairs score above the unseen pair; the first of them has three triplets,
    # which count once: the unseen pair is the 5th distinct pair (would be 7th counting triplets)
    rows_a = [(box(0), box(1), 0, 0.95), (box(0), box(1), 1, 0.94), (box(0), box(1), 0, 0.3),
              (box(2), box(3), 0, 0.9), (box(4), box(5), 1, 0.8), (box(6), box(7), 0, 0.7),
              (H1, O1, 0, 0.2), (H1, O1, 1, 0.6), (H2, O2, 0, 0.99)]
    # b.jpg: the unseen pair recovered first, with a jittered box (IoU >= 0.5 on both)
    rows_b = [([2.0, 3.0, 52.0, 101.0], [61.0, 59.0, 91.0, 92.0], 0, 0.9)]
    r = unseen_pair_recall(GT, PredictionsFile(VOCAB.name, [image("a.jpg", rows_a), image("b.jpg", rows_b)]),
                           VOCAB, "u", ks=(3, 5, 10))
    # unseen ground-truth pairs: a.jpg's (H1, O1) and b.jpg's (H1, O1) -> 2
    assert r == {3: pytest.approx(0.5), 5: pytest.approx(0.5), 10: pytest.approx(1.0)}
    flat, _ = flatten_predictions([image("a.jpg", rows_a)], image_index(GT), VOCAB)
    img, hb, ob, rank = ranked_pairs(flat, 10)
    assert rank.tolist() == [0, 1, 2, 3, 4, 5] and hb[0].tolist() == H2 and hb[5].tolist() == H1


def test_both_boxes_must_be_recovered_and_missing_images_count_as_misses():
    rows = [(H1, [0.0, 0.0, 10.0, 10.0], 1, 0.9)]  # the human right, the object wrong
    metric = UnseenPairRecall(GT, VOCAB.unseen_classes("u"), ks=(3,))
    assert metric.total == 2
    flat, _ = flatten_predictions([image("a.jpg", rows)], image_index(GT), VOCAB)
    metric.update(flat)
    assert metric.compute() == {3: 0.0}
    flat, _ = flatten_predictions([image("b.jpg", [(H1, O1, 0, 0.1)])], image_index(GT), VOCAB)
    metric.update(flat)
    assert metric.compute() == {3: 0.5}  # a.jpg missed, b.jpg recovered (any verb counts)


def test_hicodet_result_carries_u_r_for_a_split_only():
    preds = PredictionsFile(VOCAB.name, [image("b.jpg", [(H1, O1, 1, 0.9)])])
    with_split = evaluate_hicodet(GT, preds, VOCAB, HICODetConfig(split="u"))
    assert with_split.unseen_recall == {3: 0.5, 5: 0.5, 10: 0.5}
    assert with_split.to_dict()["u_r@10"] == pytest.approx(50.0)
    assert evaluate_hicodet(GT, preds, VOCAB).unseen_recall is None
    with pytest.raises(ValueError, match="K values >= 1"):
        UnseenPairRecall(GT, [1], ks=(0,))


def test_no_interaction_triplets_do_not_rank_pairs_unless_counted():
    # verbs: hold 0, kick 1, no_interaction 2; the unseen pair (kick ball) sits below three pairs that
    # score high only as "no interaction"
    vocab = Vocabulary.from_dict({
        "format": "hoi-mllm/vocabulary", "name": "tiny-recall-ni", "objects": ["person", "ball"],
        "verbs": ["hold", "kick", "no_interaction"], "human_object": 0, "no_interaction_verb": 2,
        "classes": [[1, 0], [1, 1], [1, 2]], "phrases": ["holding a ball", "kicking a ball", "no interaction with a ball"],
        "splits": {"u": {"kind": "unseen_combination", "unseen": [1]}},
    })
    gt = [HOISample("a.jpg", (640, 480), np.asarray([H1, O1], dtype=np.float32), np.asarray([0, 1]), np.asarray([0]),
                    np.asarray([1]), [(1,)], [(1,)])]
    rows = [(box(0), box(1), 2, 0.99), (box(2), box(3), 2, 0.98), (box(4), box(5), 2, 0.97),
            (box(0), box(1), 0, 0.10), (H1, O1, 1, 0.5)]
    preds = PredictionsFile(vocab.name, [image("a.jpg", rows)])
    assert unseen_pair_recall(gt, preds, vocab, "u", ks=(1, 2, 3)) == {1: 1.0, 2: 1.0, 3: 1.0}
    counted = unseen_pair_recall(gt, preds, vocab, "u", ks=(1, 3, 4), count_no_interaction=True)
    assert counted == {1: 0.0, 3: 0.0, 4: 1.0}
    # the HICO-DET evaluator uses the same convention, and its option
    for count, expected in ((False, 1.0), (True, 0.0)):
        result = evaluate_hicodet(gt, preds, vocab, HICODetConfig(split="u", recall_ks=(3,),
                                                                 recall_count_no_interaction=count))
        assert result.unseen_recall == {3: expected}


@pytest.mark.parametrize("collide", [False, True])
def test_group_rows_groups_identical_rows_exactly_even_when_hashes_collide(monkeypatch, collide):
    import hoi_mllm.eval.matching as m

    if collide:  # every row the same hash: the fallback sorts by every column
        monkeypatch.setattr(m, "_row_hash", lambda cols: np.zeros(cols[0].shape[0], dtype=np.uint64))
    rng = np.random.default_rng(0)
    image = np.sort(rng.integers(0, 5, 400))
    boxes = rng.integers(0, 3, (400, 2)).astype(np.float64)
    boxes[::7, 0] = -0.0  # -0.0 == 0.0
    order, group = m.group_rows(image, boxes[:, 0], boxes[:, 1])
    assert (np.diff(image[order]) >= 0).all() and (np.diff(group) >= 0).all()
    key = list(zip(image[order].tolist(), (boxes[order, 0] + 0.0).tolist(), boxes[order, 1].tolist()))
    assert len(set(key)) == group[-1] + 1  # one group per distinct row ...
    assert all(key[i] == key[i - 1] for i in range(1, 400) if group[i] == group[i - 1])  # ... and only equal rows
