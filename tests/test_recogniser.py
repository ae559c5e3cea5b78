"""One-pass deterministic matching on tiny presets: shared prefix == unshared == packed, both placements."""
import numpy as np
import pytest
import torch

from hoi_mllm.models.loading import load_backbone
from hoi_mllm.models.matching import (PAD_LOGIT, RowTooLargeError, candidate_lists, length_chunks, pad_candidates,
                                      run_chunks, token_positions)
from hoi_mllm.models.prompting import load_templates
from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
from hoi_mllm.models.sap import SAPConfig
from hoi_mllm.prompts import VocabularyError, load_vocabulary
from hoi_mllm.records import Detections
from hoi_mllm.pairs import propose_pairs

VOCAB = load_vocabulary("hico-det")


def make_pairs(n_extra_objects: int = 0):
    """Two persons, a bicycle and a cup (+ extra objects): person-object and person-person pairs."""
    person, bicycle, cup = VOCAB.human_object, VOCAB.object_index("bicycle"), VOCAB.object_index("cup")
    boxes = [[10, 10, 100, 190], [200, 100, 290, 190], [120, 30, 250, 150], [60, 60, 80, 90]]
    labels = [person, person, bicycle, cup]
    rng = np.random.default_rng(1)
    for _ in range(n_extra_objects):
        x, y = rng.uniform(0, 250), rng.uniform(0, 150)
        boxes.append([x, y, x + 40, y + 40])
        labels.append(int(rng.choice([bicycle, cup])))
    dets = Detections.create(boxes, np.linspace(0.9, 0.5, len(boxes)), labels, (300, 200))
    return propose_pairs(dets, person)


def recogniser(backbone, placement, k=1, **kw):
    config = RecogniserConfig(sap=SAPConfig(num_pair_tokens=k, hidden_size=32), candidate_placement=placement, **kw)
    return HOIRecogniser(backbone, VOCAB, config).eval()


@pytest.mark.parametrize("placement,k,grounded", [("suffix", 1, False), ("suffix", 3, False), ("prefix", 1, False),
                                                  ("prefix", 3, False), ("suffix", 1, True), ("prefix", 3, True)])
@torch.no_grad()
def test_one_pass_equals_unshared_and_packed(tiny_qwen2_vl, noise_image, placement, k, grounded):
    rec = recogniser(tiny_qwen2_vl, placement, k, max_pairs_per_pass=4, grounded=grounded)
    pairs = make_pairs()
    enc = rec.encode(noise_image)
    cached = rec(enc, pairs, mode="cache")
    unshared = rec(enc, pairs, mode="unshared")  # every pair with its own full prompt
    packed = rec(enc, pairs, mode="packed")
    valid = cached.valid
    assert valid.sum() > 0
    assert torch.equal(cached.candidates, unshared.candidates) and torch.equal(cached.candidates, packed.candidates)
    assert (cached.verb_logits - unshared.verb_logits)[valid].abs().max() < 1e-4
    assert (cached.verb_logits - packed.verb_logits)[valid].abs().max() < 1e-4
    assert (cached.verb_logits[~valid] == PAD_LOGIT).all() and (cached.verb_scores[~valid] == 0).all()
    assert torch.allclose(cached.interactiveness, unshared.interactiveness)
    # the scores vary across candidates and pairs (not a constant)
    assert cached.verb_logits[valid].std() > 1e-4
    via_image = rec.recognise(noise_image, pairs)
    assert torch.allclose(via_image.verb_logits, cached.verb_logits, atol=1e-5)


def test_placements_score_different_prompts(tiny_qwen2_vl, noise_image):
    pairs = make_pairs()
    a = recogniser(tiny_qwen2_vl, "suffix").recognise(noise_image, pairs)
    b = recogniser(tiny_qwen2_vl, "prefix").recognise(noise_image, pairs)
    assert torch.equal(a.candidates, b.candidates)
    assert not torch.allclose(a.verb_logits, b.verb_logits)


def test_candidates_follow_the_prior(tiny_qwen2_vl, noise_image):
    rec = recogniser(tiny_qwen2_vl, "suffix")
    pairs = make_pairs()
    out = rec.recognise(noise_image, pairs)
    for p, obj in enumerate(pairs.object_labels.tolist()):
        expected = list(VOCAB.classes_for_object(obj))  # ordered by verb id
        row = out.candidates[p]
        assert row[: len(expected)].tolist() == expected and (row[len(expected):] == -1).all()
        verbs = [VOCAB.classes[c][1] for c in expected]
        assert verbs == sorted(verbs)


def test_restricted_candidates(tiny_qwen2_vl, noise_image):
    rec = recogniser(tiny_qwen2_vl, "prefix")
    pairs = make_pairs()
    seen = VOCAB.seen_classes("rare_first") if "rare_first" in VOCAB.splits else frozenset(range(0, VOCAB.num_classes, 2))
    out = rec.recognise(noise_image, pairs, allowed_classes=seen)
    got = set(out.candidates[out.valid].tolist())
    assert got and got <= set(seen)
    rec.allowed_classes = frozenset(VOCAB.classes_for_object(VOCAB.object_index("cup"))[:2])
    out = rec.recognise(noise_image, pairs)
    cup = pairs.object_labels == VOCAB.object_index("cup")
    assert out.valid[cup].sum(1).tolist() == [2] * int(cup.sum())
    assert out.valid[~cup].sum() == 0  # no allowed candidate for the other objects: empty rows
    assert (out.verb_scores[~cup] == 0).all()


def test_shuffle_only_in_training_and_seeded(tiny_qwen2_vl, noise_image):
    rec = recogniser(tiny_qwen2_vl, "suffix", shuffle_candidates=True, seed=3)
    pairs = make_pairs()[:2]
    enc = rec.encode(noise_image)
    ordered = rec.recognise(enc, pairs)
    rec.train()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        s1 = rec(enc, pairs, mode="packed", generator=g1)
        s2 = rec(enc, pairs, mode="packed", generator=g2)
    rec.eval()
    assert torch.equal(s1.candidates, s2.candidates)
    assert not torch.equal(s1.candidates, ordered.candidates)
    for p in range(len(pairs)):  # a permutation of the same candidates
        assert sorted(s1.candidates[p].tolist()) == sorted(ordered.candidates[p].tolist())
    assert torch.equal(rec.recognise(enc, pairs).candidates, ordered.candidates)  # inference: in order


@pytest.mark.parametrize("placement", ["suffix", "prefix"])
def test_gradients_through_packed_and_cache(tiny_qwen2_vl, noise_image, placement):
    rec = recogniser(tiny_qwen2_vl, placement, k=2)
    pairs = make_pairs()[:3]
    for mode in ("packed", "cache"):
        rec.zero_grad()
        out = rec(noise_image, pairs, mode=mode)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            out.verb_logits[out.valid], torch.ones(int(out.valid.sum()))) + out.interactiveness.sum()
        loss.backward()
        for name in ("match_head.scale", "match_head.bias", "sap.to_tokens.weight", "sap.cell_proj.1.weight"):
            grad = dict(rec.named_parameters())[name].grad
            assert grad is not None and grad.abs().sum() > 0, (mode, name)
        special = rec.match_embedding if placement == "suffix" else rec.answer_embedding
        assert special.grad is not None and special.grad.abs().sum() > 0
        assert rec.match_embedding.grad.abs().sum() > 0
    rec.zero_grad()


def test_chunking_and_out_of_memory_fallback(tiny_qwen2_vl, noise_image, monkeypatch):
    pairs = make_pairs(n_extra_objects=4)
    assert len(pairs) > 8
    big = recogniser(tiny_qwen2_vl, "suffix", max_pairs_per_pass=64).recognise(noise_image, pairs)
    rec = recogniser(tiny_qwen2_vl, "suffix", max_pairs_per_pass=3)
    chunked = rec.recognise(noise_image, pairs)
    assert (big.verb_logits - chunked.verb_logits)[big.valid].abs().max() < 1e-4
    run = rec.backbone.run_suffixes
    calls = []

    def limited(state, embeds, *a, **kw):  # "memory" for at most 2 suffixes at a time
        calls.append(embeds.shape[0])
        if embeds.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return run(state, embeds, *a, **kw)

    monkeypatch.setattr(rec.backbone, "run_suffixes", limited)
    survived = rec.recognise(noise_image, pairs)
    assert max(calls) == 3  # some chunk was too large and was split
    assert sum(c for c in calls if c <= 2) == len(pairs)  # every pair ran exactly once
    assert (big.verb_logits - survived.verb_logits)[big.valid].abs().max() < 1e-4


def test_bad_input(tiny_qwen2_vl, noise_image):
    rec = recogniser(tiny_qwen2_vl, "suffix")
    pairs = make_pairs()[:2]
    pairs.object_labels[1] = VOCAB.num_objects + 5
    with pytest.raises(VocabularyError, match="outside the hico-det vocabulary"):
        rec.recognise(noise_image, pairs)
    empty = rec.recognise(noise_image, make_pairs()[[]])
    assert empty.candidates.shape[0] == 0 and empty.verb_scores.shape[0] == 0
    zero = make_pairs()[:2]
    zero.object_boxes[0] = torch.tensor([50.0, 50.0, 50.0, 50.0])  # a zero-area object box
    zero.human_boxes[1] = torch.tensor([300.0, 10.0, 300.0, 10.0])  # a point on the border
    out = rec.recognise(noise_image, zero)
    assert torch.isfinite(out.verb_logits).all() and torch.isfinite(out.interactiveness).all()
    with pytest.raises(ValueError, match="mode"):
        rec(noise_image, zero, mode="fast")
    with pytest.raises(ValueError, match="candidate_placement"):
        RecogniserConfig(candidate_placement="middle")
    with pytest.raises(ValueError, match="pair tokens"):
        recogniser(tiny_qwen2_vl, "suffix", k=tiny_qwen2_vl.num_pair_tokens + 1)


def test_matching_helpers():
    lists = candidate_lists(VOCAB, [VOCAB.object_index("cup"), VOCAB.human_object])
    table = pad_candidates(lists)
    assert table.shape == (2, max(len(c) for c in lists))
    ids = torch.tensor([[5, 9, 7, 9, 0], [9, 1, 1, 1, 1]])
    assert token_positions(ids, 9).tolist() == [[1, 3], [0, -1]]
    with pytest.raises(VocabularyError):
        candidate_lists(VOCAB, [VOCAB.num_objects])
    lengths = torch.tensor([10, 40, 11, 12, 41, 10, 39])
    chunks = length_chunks(lengths, max_rows=2)
    assert sorted(torch.cat(chunks).tolist()) == list(range(7))
    assert all(len(c) <= 2 for c in chunks)
    assert [sorted(c.tolist()) for c in length_chunks(lengths, max_rows=8)] == [[0, 2, 3, 5], [1, 4, 6]]
    calls = []

    def fn(rows):  # fails on chunks of more than one row, returns row ids times 2
        calls.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("simulated")
        return rows.float() * 2
    assert run_chunks(fn, length_chunks(lengths, max_rows=8)).tolist() == (lengths.new_tensor(range(7)) * 2).tolist()
    assert calls.count(1) == 7

    def cpu_fn(rows):  # the CPU allocator's failure is a plain RuntimeError: split as well
        if len(rows) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return rows.float()
    assert run_chunks(cpu_fn, length_chunks(lengths, max_rows=8)).tolist() == list(range(7))

    def never_fits(rows):
        raise torch.OutOfMemoryError("simulated")
    with pytest.raises(RowTooLargeError, match="even alone"):
        run_chunks(never_fits, [torch.tensor([0])])

    def other_error(rows):  # any other RuntimeError is not memory: raised as it is, not split
        calls.append(len(rows))
        raise RuntimeError("shape mismatch")
    calls.clear()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_chunks(other_error, length_chunks(lengths, max_rows=8))
    assert calls == [4]


@torch.no_grad()
def test_grounded_prompt_states_the_boxes_in_the_suffix(tiny_qwen2_vl, noise_image):
    pairs = make_pairs()
    plain, grounded = recogniser(tiny_qwen2_vl, "suffix"), recogniser(tiny_qwen2_vl, "suffix", grounded=True)
    enc = plain.encode(noise_image)
    assert torch.equal(enc.input_ids, grounded.encode(noise_image).input_ids)  # the shared prefix is unchanged
    objects = plain.check_objects(pairs.object_labels)
    g = grounded._groundings(enc, pairs, objects)
    assert all(x.numel() == 0 for x in plain._groundings(enc, pairs, objects))
    text = tiny_qwen2_vl.tokenizer.decode(g[0])
    assert tiny_qwen2_vl.box_text(torch.as_tensor(pairs.human_boxes[0]), enc) in text
    assert tiny_qwen2_vl.box_text(torch.as_tensor(pairs.object_boxes[0]), enc) in text
    a, b = plain(enc, pairs), grounded(enc, pairs)
    assert torch.equal(a.candidates, b.candidates)
    assert (a.verb_logits - b.verb_logits)[a.valid].abs().max() > 1e-4  # the question reaches the scores
    # moving one pair's box changes its grounding text and hence its scores, not only SAP's input
    moved = make_pairs()
    moved.object_boxes[0] = torch.as_tensor(moved.object_boxes[0]) + 3
    g2 = grounded._groundings(enc, moved, objects)
    assert not torch.equal(g[0], g2[0]) and torch.equal(g[1], g2[1])


def test_grounded_needs_box_placeholders(tmp_path, tiny_qwen2_vl):
    import json

    data = load_templates("default").to_dict()
    data["matching"]["grounding"] = " The person is at {person}."
    path = tmp_path / "no_object_box.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"no_object_box.json: matching.grounding must contain.*missing \{object\}"):
        recogniser(tiny_qwen2_vl, "suffix", template=str(path), grounded=True)
    recogniser(tiny_qwen2_vl, "suffix", template=str(path), grounded=False)  # ungrounded does not need them
    del data["matching"]["grounding"]  # optional in a file: templates written before it still load
    path.write_text(json.dumps(data))
    assert load_templates(path).matching.grounding == ""
    with pytest.raises(ValueError, match="matching.grounding must contain"):
        recogniser(tiny_qwen2_vl, "suffix", template=str(path), grounded=True)


def test_match_init_mean(tiny_qwen2_vl):
    rec = recogniser(tiny_qwen2_vl, "suffix", match_init="mean")
    mean = tiny_qwen2_vl.model.get_input_embeddings().weight.detach().float().mean(0)
    assert torch.allclose(rec.match_embedding.detach().float().cpu(), mean.cpu())
    with pytest.raises(ValueError, match="match_init 'avg' not allowed; allowed: random, mean"):
        RecogniserConfig(match_init="avg")


def test_templates_are_data_and_validated(tmp_path):
    t = load_templates("default")
    assert "{object}" in t.matching.question
    bad = t.to_dict()
    bad["matching"]["question"] = "What about {subject}?"
    path = tmp_path / "t.json"
    import json

    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="placeholders"):
        load_templates(path)
    with pytest.raises(FileNotFoundError, match="built-in"):
        load_templates("nope")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny-qwen2.5-vl", "tiny-llava", "tiny-llava-onevision"])
@torch.no_grad()
def test_one_pass_equals_unshared_other_families(preset, noise_image):
    bb = load_backbone(preset)
    pairs = make_pairs()
    for placement in ("suffix", "prefix"):
        rec = recogniser(bb, placement, k=2, max_pairs_per_pass=4)
        enc = rec.encode(noise_image)
        cached, unshared = rec(enc, pairs, mode="cache"), rec(enc, pairs, mode="unshared")
        packed = rec(enc, pairs, mode="packed")
        valid = cached.valid
        assert (cached.verb_logits - unshared.verb_logits)[valid].abs().max() < 1e-4, placement
        assert (cached.verb_logits - packed.verb_logits)[valid].abs().max() < 1e-4, placement


@pytest.mark.parametrize("placement", ["suffix", "prefix"])
@torch.no_grad()
def test_second_branch_average_is_the_mean_of_the_two_sigmoids(tiny_qwen2_vl, noise_image, placement):
    """DA-HOI's sap_verb_projector branch: its logits exist, scores are (sigmoid(mllm) + sigmoid(sap)) / 2,
    the same in every run mode; branch_scores=mllm / sap report one branch alone."""
    pairs = make_pairs()
    config = RecogniserConfig(sap=SAPConfig(hidden_size=32, context_layers=2, context_heads=4),
                              candidate_placement=placement, sap_branch=True)
    rec = HOIRecogniser(tiny_qwen2_vl, VOCAB, config).eval()
    enc = rec.encode(noise_image)
    out = rec(enc, pairs, mode="cache")
    valid = out.valid
    assert out.sap_verb_logits is not None and out.sap_verb_logits.shape == out.verb_logits.shape
    expected = (torch.sigmoid(out.verb_logits) + torch.sigmoid(out.sap_verb_logits)) / 2
    torch.testing.assert_close(out.verb_scores[valid], expected[valid])
    assert not torch.allclose(out.verb_logits[valid], out.sap_verb_logits[valid])  # two different branches
    unshared = rec(enc, pairs, mode="unshared")
    torch.testing.assert_close(unshared.verb_scores, out.verb_scores, atol=2e-5, rtol=1e-4)
    for how, logits in (("mllm", out.verb_logits), ("sap", out.sap_verb_logits)):
        rec.config = RecogniserConfig(**{**rec.config.to_dict(), "branch_scores": how})
        torch.testing.assert_close(rec(enc, pairs, mode="cache").verb_scores[valid], torch.sigmoid(logits)[valid])
    off = recogniser(tiny_qwen2_vl, placement)(enc, pairs, mode="cache")
    assert off.sap_verb_logits is None
    with pytest.raises(ValueError, match="branch_scores"):
        RecogniserConfig(branch_scores="max")
