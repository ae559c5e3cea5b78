"""Training-free mode: batched likelihoods over the shared prefix equal per-candidate full-prompt scoring."""
import pytest
import torch

from hoi_mllm.models.likelihood import LikelihoodConfig, LikelihoodScorer, likelihood_probabilities
from hoi_mllm.models.matching import PAD_LOGIT
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.prompts import VocabularyError, load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")


def make_pairs():
    person, kite = VOCAB.human_object, VOCAB.object_index("kite")
    dets = Detections.create([[10, 10, 100, 190], [120, 30, 250, 150]], [0.9, 0.8], [person, kite], (300, 200))
    return propose_pairs(dets, person)


def full_prompt_loglik(scorer, image, pairs, p, cls):
    """Reference: one candidate in its own complete prompt, encoded from text and run in one forward."""
    bb, tpl = scorer.backbone, scorer.templates.training_free
    enc = scorer.encode(image)
    question = scorer.question(enc, pairs.human_boxes[p], pairs.object_boxes[p], int(pairs.object_labels[p]))
    answer = tpl.answer.format(phrase=VOCAB.phrase(cls), verb="", object="")
    full = bb.encode_prefix(image, tpl.text_before_image, tpl.instruction + question + answer)
    a = bb.tokenize(answer)
    n = a.numel()
    assert torch.equal(full.input_ids[-n:].cpu(), a)  # the answer ends the prompt, tokenised alike
    hidden = bb.run_prefix(full).hidden[-n - 1:-1]  # states that predict the answer tokens
    logp = torch.log_softmax(bb.logits(hidden).float(), -1)[torch.arange(n), a]
    return logp.mean().item()


@torch.no_grad()
def test_batched_scores_equal_per_candidate_scoring(tiny_qwen2_vl, noise_image):
    scorer = LikelihoodScorer(tiny_qwen2_vl, VOCAB, LikelihoodConfig(max_rows_per_pass=2))
    pairs = make_pairs()
    scorer.allowed_classes = frozenset(VOCAB.classes_for_object(VOCAB.object_index("kite"))[1:6])  # 5 candidates
    out = scorer.recognise(noise_image, pairs)
    assert out.interactiveness is None
    assert out.candidates.shape[0] == len(pairs)
    n = 0
    for p in range(len(pairs)):
        for slot, cls in enumerate(out.candidates[p].tolist()):
            if cls < 0:
                assert out.verb_logits[p, slot] == PAD_LOGIT
                continue
            ref = full_prompt_loglik(scorer, noise_image, pairs, p, cls)
            assert out.verb_logits[p, slot].item() == pytest.approx(ref, abs=1e-4)
            n += 1
    assert n >= 5
    assert out.verb_logits[out.valid].std() > 1e-4  # a real score, not a constant
    unshared = scorer(noise_image, pairs, mode="unshared")
    assert (unshared.verb_logits - out.verb_logits)[out.valid].abs().max() < 1e-4


@torch.no_grad()
def test_chunking_and_sum_mode(tiny_qwen2_vl, noise_image):
    pairs = make_pairs()
    a = LikelihoodScorer(tiny_qwen2_vl, VOCAB, LikelihoodConfig(max_rows_per_pass=1)).recognise(noise_image, pairs)
    b = LikelihoodScorer(tiny_qwen2_vl, VOCAB, LikelihoodConfig(max_rows_per_pass=64)).recognise(noise_image, pairs)
    assert (a.verb_logits - b.verb_logits)[a.valid].abs().max() < 1e-4
    summing = LikelihoodScorer(tiny_qwen2_vl, VOCAB, LikelihoodConfig(length_normalise=False))
    total = summing.recognise(noise_image, pairs)
    lengths = torch.zeros(a.candidates.shape)  # answer tokens of each candidate
    for (p, slot), cls in zip(a.valid.nonzero().tolist(), a.candidates[a.valid].tolist()):
        lengths[p, slot] = summing.prompt_ids.training_free_answer(cls).numel()
    assert (lengths[a.valid] > 1).any()  # some answers have several tokens: sum and mean differ there
    assert torch.allclose(total.verb_logits[a.valid], a.verb_logits[a.valid] * lengths[a.valid], atol=1e-4)


def test_question_names_the_boxes(tiny_qwen2_vl, noise_image):
    scorer = LikelihoodScorer(tiny_qwen2_vl, VOCAB)
    enc = scorer.encode(noise_image)
    q = scorer.question(enc, torch.tensor([10.0, 10, 100, 190]), torch.tensor([120.0, 30, 250, 150]),
                        VOCAB.object_index("kite"))
    assert tiny_qwen2_vl.box_text(torch.tensor([10.0, 10, 100, 190]), enc) in q
    assert tiny_qwen2_vl.box_text(torch.tensor([120.0, 30, 250, 150]), enc) in q
    assert "<|box_start|>" in q and "kite" in q
    assert q.endswith(tiny_qwen2_vl.chat.assistant_start)


def test_probabilities():
    loglik = torch.tensor([[-0.5, -1.0, -3.0, PAD_LOGIT], [PAD_LOGIT] * 4])
    valid = torch.tensor([[True, True, True, False], [False] * 4])
    p = likelihood_probabilities(loglik, valid, "softmax")
    assert p[0].sum() == pytest.approx(1.0) and p[0, 3] == 0 and (p[1] == 0).all()
    assert p[0, 0] > p[0, 1] > p[0, 2]
    hot = likelihood_probabilities(loglik, valid, "softmax", temperature=10.0)
    assert hot[0, 0] < p[0, 0] and hot[0, 2] > p[0, 2]  # a higher temperature flattens
    e = likelihood_probabilities(loglik, valid, "exp")
    assert torch.allclose(e[0, :3], torch.exp(loglik[0, :3])) and e[0, 3] == 0
    with pytest.raises(ValueError, match="normalisation"):
        likelihood_probabilities(loglik, valid, "sigmoid")
    with pytest.raises(ValueError, match="temperature"):
        LikelihoodConfig(temperature=0)


def test_bad_input(tiny_qwen2_vl, noise_image):
    scorer = LikelihoodScorer(tiny_qwen2_vl, VOCAB)
    pairs = make_pairs()
    assert len(scorer.recognise(noise_image, pairs[[]])) == 0
    pairs.object_labels[0] = -1
    with pytest.raises(VocabularyError, match="outside"):
        scorer.recognise(noise_image, pairs)
