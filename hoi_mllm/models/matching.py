"""One-pass deterministic matching: candidates, suffix layout, scaled-cosine scores.

Small pure functions the recogniser composes:

* :func:`candidate_lists` / :func:`pad_candidates`: the candidate classes of each pair (the
  vocabulary's prior for the pair's object, ordered by verb id; optionally restricted to a set,
  optionally shuffled with a seeded generator) as a ``[P, Cmax]`` table padded with ``-1``;
* :func:`pad_ids`: per-row id sequences to a right-padded ``[P, L]`` batch with lengths;
* :func:`token_positions`: where a special token sits in each row, in order (``-1`` padded);
* :func:`gather_states`: hidden states at given positions;
* :func:`length_chunks` / :func:`run_chunks`: rows batched by similar length, run chunk by chunk
  (a chunk that runs out of memory is split), results back in row order;
* :class:`MatchHead`: ``logit = scale * cos(query, key) + bias`` with a learned, clamped scale.

A :class:`RecognitionOutput` is what every recogniser (matching or training-free) returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD_LOGIT = -1.0e4  # logit at padded candidate slots: sigmoid and softmax give 0


@dataclass
class RecognitionOutput:
    """Scores of every candidate class of every pair of one image.

    Attributes:
        candidates: ``[P, Cmax]`` int64 class ids of the vocabulary, ``-1`` at padding.
        verb_logits: ``[P, Cmax]`` float logits (matching: ``scale * cos + bias``; training-free:
            length-normalised log-likelihood); :data:`PAD_LOGIT` at padding.
        verb_scores: ``[P, Cmax]`` probabilities in ``[0, 1]``, ``0`` at padding.
        interactiveness: ``[P]`` logits, or ``None`` when the recogniser has no such head.
        sap_verb_logits: ``[P, Cmax]`` logits of the second (SAP) branch, or ``None`` when off.
    """

    candidates: Tensor
    verb_logits: Tensor
    verb_scores: Tensor
    interactiveness: Tensor | None = None
    sap_verb_logits: Tensor | None = None

    @property
    def valid(self) -> Tensor:
        """``[P, Cmax]`` True at real candidates."""
        return self.candidates >= 0

    def __len__(self) -> int:
        return int(self.candidates.shape[0])

    def detach(self) -> "RecognitionOutput":
        return RecognitionOutput(self.candidates, self.verb_logits.detach(), self.verb_scores.detach(),
                                 None if self.interactiveness is None else self.interactiveness.detach(),
                                 None if self.sap_verb_logits is None else self.sap_verb_logits.detach())

    def cpu(self) -> "RecognitionOutput":
        return RecognitionOutput(self.candidates.cpu(), self.verb_logits.cpu(), self.verb_scores.cpu(),
                                 None if self.interactiveness is None else self.interactiveness.cpu(),
                                 None if self.sap_verb_logits is None else self.sap_verb_logits.cpu())

    @classmethod
    def cat(cls, parts: Sequence["RecognitionOutput"]) -> "RecognitionOutput":
        """Concatenate along pairs, re-padding candidates to the widest part."""
        width = max((p.candidates.shape[1] for p in parts), default=0)

        def pad(x: Tensor, value) -> Tensor:
            return F.pad(x, (0, width - x.shape[1]), value=value)

        inter = [p.interactiveness for p in parts]
        sap = [p.sap_verb_logits for p in parts]
        return cls(torch.cat([pad(p.candidates, -1) for p in parts]),
                   torch.cat([pad(p.verb_logits, PAD_LOGIT) for p in parts]),
                   torch.cat([pad(p.verb_scores, 0.0) for p in parts]),
                   None if any(i is None for i in inter) else torch.cat(inter),
                   None if any(x is None for x in sap) else torch.cat([pad(x, PAD_LOGIT) for x in sap]))

    @classmethod
    def empty(cls, device=None) -> "RecognitionOutput":
        z = torch.zeros(0, 0, device=device)
        return cls(z.long(), z, z.clone(), torch.zeros(0, device=device))


def candidate_lists(vocabulary, objects: Iterable[int], allowed: frozenset[int] | set[int] | None = None,
                    generator: torch.Generator | None = None) -> list[list[int]]:
    """One candidate list per entry of ``objects``: the vocabulary's classes for that object.

    Args:
        vocabulary: a :class:`~hoi_mllm.prompts.Vocabulary`.
        objects: object ids (raises ``VocabularyError`` naming the range for one outside it).
        allowed: keep only these class ids (e.g. the seen classes of a zero-shot split).
        generator: when given, each list is permuted with it (training); else ordered by verb id.
    """
    out = []
    for obj in objects:
        classes = [c for c in vocabulary.classes_for_object(int(obj)) if allowed is None or c in allowed]
        if generator is not None and len(classes) > 1:
            order = torch.randperm(len(classes), generator=generator).tolist()
            classes = [classes[i] for i in order]
        out.append(classes)
    return out


def pad_candidates(lists: Sequence[Sequence[int]]) -> Tensor:
    """Candidate lists -> ``[P, Cmax]`` int64, ``-1`` padded (``Cmax`` = longest list, may be 0)."""
    width = max((len(c) for c in lists), default=0)
    table = torch.full((len(lists), width), -1, dtype=torch.long)
    for i, c in enumerate(lists):
        table[i, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    return table


def pad_ids(rows: Sequence[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """Id sequences -> ``(ids [P, L], lengths [P])``, right-padded with ``pad_id``."""
    lengths = torch.tensor([int(r.numel()) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : r.numel()] = r
    return ids, lengths


def token_positions(ids: Tensor, token_id: int, width: int | None = None) -> Tensor:
    """``ids [P, L]`` -> ``[P, W]`` positions of ``token_id`` in each row, in order, ``-1`` padded."""
    hit = ids == token_id  # [P, L]
    counts = hit.sum(1)
    width = int(counts.max()) if width is None and ids.shape[0] else (width or 0)
    out = torch.full((ids.shape[0], width), -1, dtype=torch.long, device=ids.device)
    rows, cols = hit.nonzero(as_tuple=True)  # row-major: in order within a row
    rank = torch.arange(rows.numel(), device=ids.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    out[rows, rank] = cols
    return out


def gather_states(hidden: Tensor, index: Tensor) -> Tensor:
    """``hidden [P, L, D]``, ``index [P, C]`` (``-1`` = padding) -> ``[P, C, D]`` (zeros at padding)."""
    safe = index.clamp(min=0).to(hidden.device)
    out = torch.gather(hidden, 1, safe[..., None].expand(-1, -1, hidden.shape[-1]))
    return out * (index >= 0).to(hidden.device)[..., None].to(hidden.dtype)


def length_chunks(lengths: Tensor, max_rows: int, max_padding: float = 0.25) -> list[Tensor]:
    """Group rows for batched runs: by ascending length, at most ``max_rows`` a chunk, and a chunk
    closes before padding would exceed ``max_padding`` of its padded tokens.

    Args:
        lengths: ``[N]`` real lengths of the rows.
    Returns:
        int64 index tensors whose concatenation is a permutation of ``0..N-1``.
    """
    order = torch.argsort(torch.as_tensor(lengths).cpu(), stable=True).tolist()
    sizes = torch.as_tensor(lengths).cpu().tolist()
    chunks, current, total = [], [], 0
    for i in order:
        n = sizes[i]
        padded = (len(current) + 1) * n  # rows are ascending: the new row is the longest
        if current and (len(current) >= max_rows or padded - (total + n) > max_padding * padded):
            chunks.append(torch.tensor(current, dtype=torch.long))
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        chunks.append(torch.tensor(current, dtype=torch.long))
    return chunks


# what the CPU allocator says when it cannot allocate (a plain RuntimeError, not OutOfMemoryError)
_CPU_OOM_MESSAGES = ("can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's ``torch.OutOfMemoryError`` and for the CPU allocator's out-of-memory ``RuntimeError``."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(m in str(exc) for m in _CPU_OOM_MESSAGES))


class RowTooLargeError(ValueError):
    """A single row did not fit in memory (a ValueError, so a per-image loop reports and skips it)."""


def run_chunks(fn: Callable[[Tensor], Tensor], chunks: Sequence[Tensor]) -> Tensor:
    """``fn(rows) -> [n, ...]`` for each chunk of row indices; results returned in row order.

    A chunk that runs out of memory (on CUDA or on the CPU, see :func:`is_out_of_memory`) is split in
    two and retried, so more rows than memory allows never crash; a single row that does not fit
    raises :class:`RowTooLargeError`. ``cat(chunks)`` must be a permutation of ``0..N-1``.
    """
    queue = list(chunks)
    parts, done = [], []
    while queue:
        rows = queue.pop(0)
        try:
            parts.append(fn(rows))
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            if rows.numel() == 1:
                raise RowTooLargeError(f"one row does not fit in memory even alone ({exc})") from exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = rows.numel() // 2
            queue[:0] = [rows[:half], rows[half:]]
            continue
        done.append(rows)
    out = torch.cat(parts)
    order = torch.cat(done)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return out[inverse.to(out.device)]


class MatchHead(nn.Module):
    """``logit = clamp(scale) * cos(query, key) + bias``, computed in float32.

    Args:
        scale_init: initial scale (a cosine in ``[-1, 1]`` needs a scale to reach confident logits).
        scale_min, scale_max: the clamp applied in forward.
        bias_init: initial bias (negative: candidates start unlikely, as most are).
    """

    def __init__(self, scale_init: float = 10.0, scale_min: float = 1.0, scale_max: float = 100.0,
                 bias_init: float = 0.0):
        super().__init__()
        if not scale_min <= scale_init <= scale_max:
            raise ValueError(f"scale_init {scale_init} must lie in [scale_min {scale_min}, scale_max {scale_max}]")
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.bias = nn.Parameter(torch.tensor(float(bias_init)))

    def forward(self, query: Tensor, keys: Tensor, valid: Tensor) -> Tensor:
        """``query [P, D]``, ``keys [P, C, D]``, ``valid [P, C]`` -> logits ``[P, C]`` (float32, PAD_LOGIT where invalid)."""
        cos = F.cosine_similarity(query.float()[:, None, :], keys.float(), dim=-1, eps=1e-6)  # [P, C]
        logits = self.scale.clamp(self.scale_min, self.scale_max) * cos + self.bias
        return logits.masked_fill(~valid.to(logits.device), PAD_LOGIT)
