"""Training-free mode: a pretrained MLLM scores each candidate phrase by its likelihood as the answer.

For every pair, a question names the person and the object in the family's grounding syntax
(``Backbone.box_text``: for Qwen2-VL ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, for Qwen2.5-VL
``x1,y1,x2,y2`` in pixels of the resized input, as DA-HOI writes them); the assistant turn then holds a candidate phrase, and the phrase's score
is its length-normalised log-likelihood (mean log-probability of its tokens). Rows are
(pair, candidate) combinations, all of an image in one batched pass over the shared cached image
prefix, chunked by ``max_rows_per_pass``. Nothing is generated.

Scores become probabilities (:func:`likelihood_probabilities`) by a softmax over a pair's
candidates or by ``exp``, each with a temperature, usable by post-processing and as a teacher.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from hoi_mllm.models.backbone import Backbone, ImageEncoding
from hoi_mllm.models.matching import (
    PAD_LOGIT,
    RecognitionOutput,
    candidate_lists,
    gather_states,
    length_chunks,
    pad_candidates,
    pad_ids,
    run_chunks,
)
from hoi_mllm.models.prompting import PromptIds, load_templates
from hoi_mllm.prompts.vocabulary import VocabularyError, load_vocabulary
from hoi_mllm.records import Pairs

NORMALISATIONS = ("softmax", "exp")
MODES = ("cache", "unshared")


@dataclass(frozen=True)
class LikelihoodConfig:
    """Training-free scoring.

    Attributes:
        template: prompt template, built-in name or JSON path (its ``training_free`` section).
        normalisation: ``softmax`` (over a pair's candidates) or ``exp`` (``exp(loglik / T)``, the
            geometric-mean token probability when ``T = 1``).
        temperature: ``T`` of the normalisation (higher: softer; for teacher targets).
        length_normalise: mean (True) or sum (False) of the answer's token log-probabilities.
        max_rows_per_pass: (pair, candidate) rows per forward; on out-of-memory a chunk is halved.
    """

    template: str = field(default="default", metadata={"help": "prompt template name or path"})
    normalisation: str = field(default="softmax", metadata={"help": "softmax | exp"})
    temperature: float = field(default=1.0, metadata={"help": "temperature of the normalisation"})
    length_normalise: bool = field(default=True, metadata={"help": "mean instead of sum of log-probs"})
    max_rows_per_pass: int = field(default=64, metadata={"help": "rows per forward (chunking)"})

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation {self.normalisation!r} not allowed; allowed: {', '.join(NORMALISATIONS)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if int(self.max_rows_per_pass) < 1:
            raise ValueError(f"max_rows_per_pass must be >= 1, got {self.max_rows_per_pass}")


def likelihood_probabilities(loglik: Tensor, valid: Tensor, normalisation: str = "softmax",
                             temperature: float = 1.0) -> Tensor:
    """``loglik [P, C]``, ``valid [P, C]`` -> probabilities ``[P, C]`` in ``[0, 1]``, 0 where invalid.

    ``softmax``: over each pair's valid candidates of ``loglik / T`` (a row without candidates is
    all zeros); ``exp``: ``exp(loglik / T)`` elementwise (log-likelihoods are <= 0).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r} not allowed; allowed: {', '.join(NORMALISATIONS)}")
    x = (loglik.float() / temperature).masked_fill(~valid, float("-inf"))
    if normalisation == "exp":
        return torch.exp(x).clamp(0.0, 1.0)
    probs = torch.softmax(x, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)  # rows with no valid candidate


def answer_logprobs(backbone: Backbone, hidden: Tensor, ids: Tensor, starts: Tensor, lengths: Tensor) -> Tensor:
    """Log-probability of each row's answer tokens under the LM head.

    Args:
        hidden: ``[N, L, D]`` last hidden states of the rows.
        ids: ``[N, L]`` the rows' token ids.
        starts: ``[N]`` position of each row's first answer token (>= 1: the token before it predicts it).
        lengths: ``[N]`` answer lengths (>= 1); the answer ends the row.
    Returns:
        ``[N, A]`` float32 log-probabilities of answer token ``j`` (0 beyond the answer), ``A = max(lengths)``.
    """
    steps = torch.arange(int(lengths.max()), device=hidden.device)  # [A]
    starts, lengths, ids = starts.to(hidden.device), lengths.to(hidden.device), ids.to(hidden.device)
    valid = steps[None] < lengths[:, None]  # [N, A]
    before = torch.where(valid, starts[:, None] - 1 + steps[None], -1)  # [N, A] states that predict
    logits = backbone.logits(gather_states(hidden, before)).float()  # [N, A, V]
    targets = torch.gather(ids, 1, (before + 1).clamp(min=0, max=ids.shape[1] - 1))  # [N, A]
    logp = torch.gather(logits, -1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)  # [N, A]
    return logp * valid


class LikelihoodScorer(nn.Module):
    """Scores candidate phrases with a pretrained MLLM, no fine-tuning (see the module docstring).

    Same call shape as :class:`~hoi_mllm.models.recogniser.HOIRecogniser`: :meth:`recognise`
    returns a :class:`RecognitionOutput` (``verb_logits`` = log-likelihoods, ``verb_scores`` =
    probabilities, ``interactiveness = None``).
    """

    def __init__(self, backbone: Backbone, vocabulary, config: LikelihoodConfig = LikelihoodConfig()):
        super().__init__()
        self.backbone = backbone
        self.vocabulary = load_vocabulary(vocabulary)
        self.config = config
        self.templates = load_templates(config.template)
        if not self.templates.training_free.question:
            raise ValueError("the training-free question template must not be empty")
        self.prompt_ids = PromptIds(backbone, self.vocabulary, self.templates)
        self.allowed_classes: frozenset[int] | None = None
        self.pad_id = int(backbone.tokenizer.pad_token_id if backbone.tokenizer.pad_token_id is not None else 0)

    def encode(self, image) -> ImageEncoding:
        tpl = self.templates.training_free
        return self.backbone.encode_prefix(image, tpl.text_before_image, tpl.instruction)

    def question(self, enc: ImageEncoding, human_box: Tensor, object_box: Tensor, obj: int) -> str:
        """The per-pair question, then the end of the user turn and the start of the assistant turn."""
        name = self.vocabulary.object_name(obj)
        text = self.templates.training_free.question.format(
            person=self.backbone.box_text(human_box, enc),
            object=self.backbone.box_text(object_box, enc), object_name=name)
        return text + self.backbone.chat.user_end + self.backbone.chat.assistant_start

    def build_rows(self, enc: ImageEncoding, pairs: Pairs, allowed=None):
        """Rows of (pair, candidate): ``(ids [N, L], starts [N], answer_lengths [N], candidates [P, C],
        row_index [N, 2])`` where ``row_index`` holds (pair, candidate slot) of each row."""
        objects = [int(o) for o in torch.as_tensor(pairs.object_labels).tolist()]
        bad = [o for o in objects if not 0 <= o < self.vocabulary.num_objects]
        if bad:
            raise VocabularyError(f"pair object label(s) {sorted(set(bad))} outside the {self.vocabulary.name} "
                                  f"vocabulary (0..{self.vocabulary.num_objects - 1})")
        lists = candidate_lists(self.vocabulary, objects, allowed)
        rows, starts, alens, index = [], [], [], []
        hb, ob = torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes)
        for p, (obj, cands) in enumerate(zip(objects, lists)):
            q = self.backbone.tokenize(self.question(enc, hb[p], ob[p], obj))
            for slot, cls in enumerate(cands):
                a = self.prompt_ids.training_free_answer(cls)
                if a.numel() == 0:
                    raise ValueError(f"class {cls} ({self.vocabulary.class_name(cls)}): empty answer text")
                rows.append(torch.cat([q, a]))
                starts.append(q.numel())
                alens.append(a.numel())
                index.append((p, slot))
        ids, _ = pad_ids(rows, self.pad_id)
        return (ids, torch.tensor(starts, dtype=torch.long), torch.tensor(alens, dtype=torch.long),
                pad_candidates(lists), torch.tensor(index, dtype=torch.long).view(-1, 2))

    @torch.no_grad()
    def forward(self, image, pairs: Pairs, mode: str = "cache", allowed_classes=None) -> RecognitionOutput:
        """Log-likelihood of every candidate of every pair; ``mode="unshared"`` gives every row its
        own full prompt (the reference). ``image`` may be an :class:`ImageEncoding` from :meth:`encode`."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
        if len(pairs) == 0:
            return RecognitionOutput(torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0), torch.zeros(0, 0), None)
        enc = image if isinstance(image, ImageEncoding) else self.encode(image)
        allowed = self.allowed_classes if allowed_classes is None else frozenset(int(c) for c in allowed_classes)
        ids, starts, alens, candidates, index = self.build_rows(enc, pairs, allowed)
        valid = candidates >= 0
        loglik = torch.full(candidates.shape, PAD_LOGIT)
        if ids.shape[0]:
            state = self.backbone.run_prefix(enc) if mode == "cache" else None

            def score(rows: Tensor) -> Tensor:
                width = int((starts[rows] + alens[rows]).max())  # trim the chunk's padding
                chunk = ids[rows, :width]
                embeds = self.backbone.embed(chunk)
                hidden = (self.backbone.run_suffixes(state, embeds) if state is not None
                          else self.backbone.run_unshared(enc, embeds))
                logp = answer_logprobs(self.backbone, hidden, chunk, starts[rows], alens[rows]).sum(1).cpu()
                return logp / alens[rows] if self.config.length_normalise else logp

            chunks = length_chunks(starts + alens, self.config.max_rows_per_pass)
            per_row = run_chunks(score, chunks)  # [N]
            loglik[index[:, 0], index[:, 1]] = per_row
        probs = likelihood_probabilities(loglik, valid, self.config.normalisation, self.config.temperature)
        return RecognitionOutput(candidates, loglik, probs, None)

    def recognise(self, image, pairs: Pairs, allowed_classes=None) -> RecognitionOutput:
        """Inference: the cached prefix, rows chunked by ``max_rows_per_pass``."""
        return self.forward(image, pairs, mode="cache", allowed_classes=allowed_classes)
