"""The language warm-up of tiny random presets: a softmax over the corpus's own tokens, and it learns."""
from __future__ import annotations

import torch

from hoi_mllm.finetune.language import pretrain_language_model, prompt_lm_loss
from hoi_mllm.models.loading import load_backbone
from hoi_mllm.models.recogniser import HOIRecogniser


def test_head_rows_equal_the_full_head_at_those_ids():
    bb = load_backbone("tiny-qwen2-vl")
    hidden = torch.randn(3, 5, bb.hidden_size)
    ids = torch.tensor([7, 151643, 9707, 0])
    full = bb.logits(hidden)
    assert full.shape[-1] >= 151643  # the real vocabulary
    torch.testing.assert_close(bb.logits(hidden, ids), full[..., ids])


def test_warm_up_lowers_the_corpus_loss():
    torch.manual_seed(0)
    rec = HOIRecogniser(load_backbone("tiny-qwen2-vl"), "hico-det")
    objects = [0, 1, 2]
    torch.manual_seed(1)
    before = float(prompt_lm_loss(rec, objects))
    losses = pretrain_language_model(rec, steps=12, lr=1e-2)
    torch.manual_seed(1)
    after = float(prompt_lm_loss(rec, objects))
    assert len(losses) == 12 and after < 0.7 * before
