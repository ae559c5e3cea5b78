"""The backbone adapter interface: the only layer that knows a model family.

Everything above it (spatial-aware pooling, the recogniser, training) speaks in token ids,
embeddings and hidden states. An adapter wraps a real transformers MLLM and answers:

* how an image and the text around it become a prompt prefix (:meth:`Backbone.encode_prefix`),
  including the visual token grid that spatial-aware pooling reads;
* how token ids become embeddings (:meth:`Backbone.embed`);
* how a batch of per-pair suffixes runs after one shared prefix, three ways that must agree:
  over a key-value cache of the prefix computed once (:meth:`Backbone.run_prefix` +
  :meth:`Backbone.run_suffixes`, inference), as one packed sequence with a block attention mask
  (:meth:`Backbone.run_packed`, training: works with gradient checkpointing), and as the unshared
  reference where every suffix gets its own full prompt (:meth:`Backbone.run_unshared`);
* the chat format of the family (:attr:`Backbone.chat`) and its box-grounding syntax for the
  training-free mode (:meth:`Backbone.box_text`).

Shapes: ``T`` prefix length, ``P`` number of suffixes (pairs or pair-candidate rows), ``L`` the
longest suffix (shorter ones are right-padded: with causal attention, padding after a token never
changes that token's hidden state, so no suffix mask is needed), ``D`` the language model width,
``R`` the rank of position ids (3 for Qwen2-VL's multimodal rotary positions, 1 otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class ChatFormat:
    """Strings that open and close turns in the family's chat template."""

    user_start: str
    user_end: str
    assistant_start: str


@dataclass
class ImageEncoding:
    """A prompt prefix with one image, ready to run.

    Attributes:
        input_ids: ``[T]`` token ids of the prefix (image placeholders expanded).
        inputs_embeds: ``[T, D]`` embeddings with the visual features in place of the placeholders.
        position_ids: ``[R, T]`` positions of the prefix tokens.
        next_position: position of the first suffix token (for Qwen2-VL, max position + 1, which is
            *not* the token count: an image of ``h x w`` merged tokens advances by ``max(h, w)``).
        grid: ``[D, Hg, Wg]`` the visual token grid (language-model width) for spatial pooling.
        image_size: ``(width, height)`` of the original image, in pixels.
        grid_scale: ``(sx, sy)`` multiply pixel x / y of the original image to get grid coordinates.
        extra: family-specific inputs the model needs (e.g. ``image_grid_thw``).
    """

    input_ids: Tensor
    inputs_embeds: Tensor
    position_ids: Tensor
    next_position: int
    grid: Tensor
    image_size: tuple[int, int]
    grid_scale: tuple[float, float]
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class PrefixState:
    """The key-value cache of a prefix computed once, to be shared by many suffixes."""

    cache: Any
    length: int
    next_position: int


class Backbone(nn.Module):
    """Base class of backbone adapters. Subclasses wrap one transformers model family.

    Attributes:
        family: e.g. ``"qwen2-vl"``, ``"qwen2.5-vl"``, ``"llava"``, ``"llava-onevision"``.
        model: the transformers ``...ForConditionalGeneration`` model.
        tokenizer: the tokenizer, with the special tokens of :data:`SPECIAL_TOKENS` added.
        processor: the family's processor (image processing), configured so boxes map linearly
            from the original image to the visual grid (no centre crop).
        hidden_size: ``D``.
        position_rank: ``R``.
        chat: the :class:`ChatFormat` of the family.
    """

    family: str = ""
    position_rank: int = 1

    # names of special tokens added to every tokenizer; pair tokens are numbered
    PAIR_TOKEN = "<|pair_{i}|>"
    MATCH_TOKEN = "<|match|>"
    ANSWER_TOKEN = "<|answer|>"

    def special_token_id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def tokenize(self, text: str) -> Tensor:
        """``text`` -> ``[L]`` token ids, no BOS/EOS added."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def embed(self, ids: Tensor) -> Tensor:
        """``[..., L]`` ids -> ``[..., L, D]`` embeddings of the language model."""
        raise NotImplementedError

    def encode_prefix(self, image, text_before: str, text_after: str) -> ImageEncoding:
        """Prefix = chat opening + ``text_before`` + the image + ``text_after``."""
        raise NotImplementedError

    def run_prefix(self, enc: ImageEncoding) -> PrefixState:
        raise NotImplementedError

    def run_suffixes(self, state: PrefixState, embeds: Tensor) -> Tensor:
        """``embeds [P, L, D]`` after the cached prefix -> ``[P, L, D]`` last hidden states."""
        raise NotImplementedError

    def run_packed(self, enc: ImageEncoding, embeds: Tensor, lengths: Tensor) -> Tensor:
        """One sequence ``[prefix, suffix_1, ..., suffix_P]``, each suffix attending to the prefix and
        itself only, with the positions it would have after the prefix. ``[P, L, D]`` -> ``[P, L, D]``."""
        raise NotImplementedError

    def run_unshared(self, enc: ImageEncoding, embeds: Tensor) -> Tensor:
        """Reference: each suffix with its own full copy of the prefix, ``[P, L, D]`` -> ``[P, L, D]``."""
        raise NotImplementedError

    def logits(self, hidden: Tensor) -> Tensor:
        """``[..., D]`` hidden states -> ``[..., V]`` next-token logits (the LM head)."""
        raise NotImplementedError

    def box_text(self, box: Tensor, enc: ImageEncoding, label: str) -> str:
        """Refer to a box (xyxy pixels of the original image) in the family's grounding syntax."""
        raise NotImplementedError

    chat: ChatFormat
