"""An auxiliary language-modelling loss on the recogniser's own prompts, for language models never pretrained.

One-pass matching compares a pair's query state with the state at each candidate's ``<|match|>``
token. A pretrained LM writes the preceding phrase into that state; a *random* one (the tiny
presets) does not: its attention is nearly uniform over the whole prompt, so the match states of
different candidates differ mostly by position, and matching can pick only the first or the last
candidate until attention has learnt to look back (measured: hundreds of steps even to memorise
8 images). Next-token prediction on the candidate lists teaches exactly that look-back: to predict
the word after a ``<|match|>`` the state there must know which phrase it closes (the lists are in a
fixed order). With ``loss.lm_weight > 0`` the trainer adds this term; it reads only the vocabulary's
text (every class's phrase, unseen ones included, as text), never an annotation.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from hoi_mllm.models.matching import pad_ids


def prompt_rows(recogniser, objects: Iterable[int]) -> list[Tensor]:
    """One id row per object, laid out as a matching suffix: the pair tokens, the question, and every
    candidate of the object, each followed by ``<|match|>``."""
    ids = recogniser.prompt_ids
    match = torch.tensor([ids.match_id])
    head = torch.tensor(ids.pair_ids[: recogniser.config.sap.num_pair_tokens])
    rows = []
    for o in sorted(set(int(x) for x in objects)):
        cands = recogniser.vocabulary.classes_for_object(o)
        rows.append(torch.cat([head, ids.question(o), *[t for c in cands for t in (ids.candidate(c), match)]]))
    return rows


def prompt_lm_loss(recogniser, objects: Iterable[int], separation: float = 0.0) -> Tensor:
    """Mean next-token cross-entropy of the LM over :func:`prompt_rows` (text only, no image), the
    softmax over the token ids that occur in those rows.

    The ``<|match|>`` positions take the recogniser's own match embedding, as in matching; the pair
    tokens, whose content SAP decides, take random vectors of the size SAP gives them. Returns
    a scalar (0 for no objects) with gradients into the language model (LoRA or full) and that embedding.
    """
    rows = prompt_rows(recogniser, objects)
    backbone = recogniser.backbone
    if not rows:
        return recogniser.match_embedding.sum() * 0.0
    pad = recogniser.pad_id
    ids, lengths = pad_ids(rows, pad)  # [B, L], [B]
    ids = ids.to(backbone.device)
    embeds = backbone.embed(ids)  # [B, L, D]
    is_match = (ids == recogniser.prompt_ids.match_id)[..., None]
    embeds = torch.where(is_match, recogniser.match_embedding.to(embeds.dtype), embeds)
    is_pair = torch.isin(ids, torch.tensor(recogniser.prompt_ids.pair_ids, device=ids.device))[..., None]
    gain = recogniser.sap.token_norm.weight.detach().abs().mean()
    noise = torch.randn(embeds.shape, device=embeds.device, dtype=embeds.dtype) * gain  # [B, L, D]
    embeds = torch.where(is_pair, noise, embeds)
    b, length = ids.shape
    positions = backbone.text_positions(0, length, b)  # [R, B, L]
    positions = positions if backbone.position_rank > 1 else positions[0]
    hidden = backbone.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
    valid = torch.arange(length - 1, device=ids.device)[None, :] < (lengths.to(ids.device) - 1)[:, None]  # [B, L-1]
    valid &= ~is_pair[:, :-1, 0]  # no prediction from the pair tokens: their state is the query, it must follow SAP
    # the softmax runs over the tokens this corpus holds, not the whole vocabulary: the warm-up only
    # has to tell the corpus's next tokens apart, and the real Qwen vocabulary (151,936 rows) would make
    # the head ~75x the cost of the rest of a tiny model's step
    corpus = torch.unique(ids)  # [K] sorted
    targets = torch.searchsorted(corpus, ids[:, 1:][valid])  # [N] index into corpus
    logits = backbone.logits(hidden[:, :-1][valid], corpus).float()  # [N, K]
    loss = F.cross_entropy(logits, targets)
    if separation:
        keys = F.normalize(hidden.float(), dim=-1)  # [B, L, D]
        sep = []
        for row in range(b):
            k = keys[row][is_match[row, :, 0]]  # [C, D] the match states of one object's candidates
            cos = k @ k.T
            off = ~torch.eye(k.shape[0], dtype=torch.bool, device=k.device)
            sep.append((cos[off] ** 2).mean())
        loss = loss + separation * torch.stack(sep).mean()
    return loss


def pretrain_language_model(recogniser, steps: int, lr: float = 1e-2, separation: float = 0.0,
                            progress: bool = False) -> list[float]:
    """Give a random language model the look-back a pretrained one has: ``steps`` of AdamW on
    :func:`prompt_lm_loss` over every object's prompt, training the whole LM, its head and the
    ``<|match|>`` embedding. Deterministic (no sampling). Returns the loss of each step.

    For tiny random presets only (``model.pretrain_steps``): a real checkpoint is pretrained already.
    """
    from tqdm.auto import tqdm

    backbone = recogniser.backbone
    vocab = recogniser.vocabulary
    objects = [o for o in range(vocab.num_objects) if vocab.classes_for_object(o)]
    params = ([p for p in backbone.language_model.parameters()] + list(backbone.model.get_output_embeddings().parameters())
              + [recogniser.match_embedding])
    params = list({id(p): p for p in params}.values())  # tied embeddings appear once
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    was_training = backbone.training
    backbone.train()
    losses = []
    for _ in tqdm(range(steps), desc="language warm-up", unit="step", disable=not progress, leave=False):
        loss = prompt_lm_loss(recogniser, objects, separation)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
    backbone.train(was_training)
    return losses
