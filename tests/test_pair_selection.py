"""Which proposed pairs the language model sees (issue 12 item 5): the cap by score or by SAP interactiveness,
the interactiveness gate, and the counts of what was left out."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from hoi_mllm.models.loading import load_backbone
from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
from hoi_mllm.models.sap import SAPConfig
from hoi_mllm.pairs import PairProposalConfig, dropped_pairs, propose_pairs, select_pairs
from hoi_mllm.pipeline import HOIPipeline, load_pipeline
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")
H, CUP, BIKE = VOCAB.human_object, VOCAB.object_index("cup"), VOCAB.object_index("bicycle")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def five_pairs():
    """One human (0.9) with objects scoring 0.8 .. 0.4: pairs in proposal order (0,1) .. (0,5)."""
    boxes = [[10, 10, 100, 190]] + [[110 + 30 * i, 20, 135 + 30 * i, 60] for i in range(5)]
    dets = Detections.create(boxes, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [H, CUP, BIKE, CUP, BIKE, CUP], (300, 200))
    return dets, propose_pairs(dets, H, PairProposalConfig(max_pairs=None, human_human=False))


def test_score_selection_is_todays_cap():
    dets, pairs = five_pairs()
    for cap in (1, 3, 5, None):
        sel = select_pairs(pairs, PairProposalConfig(max_pairs=cap))
        capped = propose_pairs(dets, H, PairProposalConfig(max_pairs=cap, human_human=False))
        kept = pairs[sel.index]
        assert torch.equal(kept.object_index, capped.object_index) and torch.equal(kept.human_index, capped.human_index)
        assert sel.capped == 5 - len(capped) and sel.gated == 0 and sel.proposed == 5


def test_interactiveness_selection_keeps_the_top_pairs():
    _, pairs = five_pairs()
    # probabilities: the last two pairs (lowest detector scores) interact most
    probs = [0.1, 0.2, 0.3, 0.9, 0.95]
    sel = select_pairs(pairs, PairProposalConfig(max_pairs=2, select="interactiveness"),
                       torch.tensor([logit(p) for p in probs]))
    # keys p x 0.9 x object score: .072 .126 .162 .405 .342 -> rows 3, 4
    assert sel.index.tolist() == [3, 4] and sel.capped == 3 and sel.gated == 0
    # by score the same cap keeps rows 0, 1
    assert select_pairs(pairs, PairProposalConfig(max_pairs=2)).index.tolist() == [0, 1]


def test_gate_drops_pairs_at_or_below_the_threshold_and_counts_them():
    _, pairs = five_pairs()
    probs = torch.tensor([0.15, 0.1, 0.6, 0.150001, 0.99])  # keys of rows 2, 3, 4: .324 .068 .356
    sel = select_pairs(pairs, PairProposalConfig(max_pairs=None, interactiveness_gate=0.15), torch.logit(probs))
    assert sel.index.tolist() == [2, 3, 4]  # 0.15 itself is dropped (<=), score order kept
    assert sel.gated == 2 and sel.capped == 0
    both = select_pairs(pairs, PairProposalConfig(max_pairs=1, select="interactiveness", interactiveness_gate=0.15),
                        torch.logit(probs))
    assert both.index.tolist() == [4] and both.counts() == {"pairs_proposed": 5, "pairs_gated": 2, "pairs_capped": 2}


def test_no_pair_lost_under_the_cap():
    _, pairs = five_pairs()
    sel = select_pairs(pairs, PairProposalConfig(max_pairs=5, select="interactiveness"), torch.randn(5))
    assert sorted(sel.index.tolist()) == [0, 1, 2, 3, 4] and sel.capped == 0 and sel.gated == 0


def test_bad_settings_and_missing_logits():
    _, pairs = five_pairs()
    with pytest.raises(ValueError, match="select 'best' not allowed; allowed: score, interactiveness"):
        PairProposalConfig(select="best")
    with pytest.raises(ValueError, match="interactiveness_gate must lie in"):
        PairProposalConfig(interactiveness_gate=1.5)
    with pytest.raises(ValueError, match="max_pairs must be >= 1"):
        PairProposalConfig(max_pairs=0)
    with pytest.raises(ValueError, match="needs interactiveness logits"):
        select_pairs(pairs, PairProposalConfig(select="interactiveness"))
    with pytest.raises(ValueError, match="3 interactiveness logits for 5 pairs"):
        select_pairs(pairs, PairProposalConfig(interactiveness_gate=0.1), torch.zeros(3))


# ------------------------------------------------------------------ through the pipeline
@pytest.fixture(scope="module")
def recogniser():
    config = RecogniserConfig(sap=SAPConfig(num_pair_tokens=2, hidden_size=32))
    return HOIRecogniser(load_backbone("tiny-qwen2-vl"), VOCAB, config).eval()


def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))


def test_pipeline_recognises_the_pairs_sap_ranks_first_and_reports_the_rest(recogniser):
    dets, pairs = five_pairs()
    im = image()
    inter = recogniser.pair_interactiveness(im, pairs)
    full = recogniser.recognise(im, pairs)
    assert torch.allclose(inter, full.interactiveness)  # the first pass gives what the full pass reports
    pipe = HOIPipeline(None, recogniser, PairProposalConfig(max_pairs=2, select="interactiveness", human_human=False),
                       post_config=None)
    _, sel, enc = pipe.proposals(im, dets)
    expected = torch.argsort(torch.sigmoid(inter) * pairs.human_scores * pairs.object_scores, descending=True)[:2]
    assert sel.index.tolist() == expected.tolist()
    out = pipe.recognise_detections(im, dets, "a.jpg")
    kept_objects = {tuple(pairs.object_boxes[i].tolist()) for i in expected.tolist()}
    assert {tuple(b) for b in out.object_boxes.tolist()} == kept_objects
    assert out.extra == {"pairs_proposed": 5, "pairs_gated": 0, "pairs_capped": 3}
    # the gate above every pair's probability: nothing recognised, everything counted
    gate = float(torch.sigmoid(inter).max()) + 1e-3
    shut = HOIPipeline(None, recogniser, PairProposalConfig(interactiveness_gate=gate, human_human=False))
    empty = shut.recognise_detections(im, dets, "b.jpg")
    assert len(empty) == 0 and empty.extra == {"pairs_proposed": 5, "pairs_gated": 5, "pairs_capped": 0}
    assert dropped_pairs([out, empty]) == {"pairs_proposed": 10, "pairs_gated": 5, "pairs_capped": 3}
    assert shut.pair_counts == {"pairs_proposed": 5, "pairs_gated": 5, "pairs_capped": 0}


def test_first_pass_in_chunks_equals_one_pass(recogniser, monkeypatch):
    """The first pass runs SAP in chunks (thousands of pairs in a crowded image); the chunks change nothing."""
    import hoi_mllm.models.recogniser as rec_module

    _, pairs = five_pairs()
    im = image()
    whole = recogniser.pair_interactiveness(im, pairs)
    monkeypatch.setattr(rec_module, "SAP_FIRST_PASS_CHUNK", 2)
    chunked = recogniser.pair_interactiveness(im, pairs)
    assert chunked.shape == (5,) and torch.allclose(whole, chunked, atol=1e-6)


def test_select_score_gives_todays_triplets(recogniser):
    dets, pairs = five_pairs()
    im = image()
    pipe = HOIPipeline(None, recogniser, PairProposalConfig(max_pairs=3, human_human=False))
    out = pipe.recognise_detections(im, dets, "a.jpg")
    capped = propose_pairs(dets, H, PairProposalConfig(max_pairs=3, human_human=False))
    from hoi_mllm.postprocess import to_triplets

    today = to_triplets(capped, recogniser.recognise(im, capped), VOCAB, pipe.post_config, "a.jpg", dets.image_size)
    assert np.array_equal(out.scores, today.scores) and np.array_equal(out.verbs, today.verbs)
    assert np.array_equal(out.object_boxes, today.object_boxes)
    assert out.extra["pairs_capped"] == 2


def test_selection_is_saved_and_overridable(recogniser, tmp_path):
    saved = HOIPipeline(None, recogniser, PairProposalConfig(select="interactiveness", interactiveness_gate=0.15))
    saved.save_pretrained(tmp_path / "m")
    again = load_pipeline(tmp_path / "m", device="cpu")
    assert again.pair_config.select == "interactiveness" and again.pair_config.interactiveness_gate == 0.15
    plain = load_pipeline(tmp_path / "m", device="cpu", select="score", interactiveness_gate=None)
    assert plain.pair_config.select == "score" and plain.pair_config.interactiveness_gate is None
    with pytest.raises(ValueError, match="needs an interactiveness head"):
        load_pipeline(tmp_path / "m", device="cpu", mode="training-free")
