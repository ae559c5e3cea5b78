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
* the chat format of the family (:attr:`Backbone.chat`) and its box-grounding convention
  (:meth:`Backbone.box_text`), which both the grounded matching prompt and the training-free
  question use to state a pair's boxes as text.

Shapes: ``T`` prefix length, ``P`` number of suffixes (pairs or pair-candidate rows), ``L`` the
longest suffix (shorter ones are right-padded: with causal attention, padding after a token never
changes that token's hidden state, so no suffix mask is needed), ``D`` the language model width,
``R`` the rank of position ids (3 for Qwen2-VL's multimodal rotary positions, 1 otherwise).

The ``next_position`` rule: the first suffix token sits at ``max(prefix positions) + 1`` and suffix
token ``j`` at ``next_position + j`` (all ``R`` rows equal, text advances every axis together).
For LLaVA-style models that is just the prefix length ``T``; for Qwen2-VL / Qwen2.5-VL it is
smaller, because an image of ``h x w`` merged tokens advances positions by ``max(h, w)`` only.

The run paths work with the ``eager`` and ``sdpa`` attention implementations (the packed path
passes a 4D additive mask, which flash-attention kernels do not take).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from hoi_mllm.models.tokenizer import ANSWER_TOKEN, MATCH_TOKEN, PAIR_TOKEN


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
        grid_scale: ``(sx, sy)`` multiply pixel x / y of the original image to get grid coordinates
            (``x * sx`` in ``[0, Wg]``; the image border maps to the grid border).
        extra: family-specific inputs the model needs (e.g. ``image_grid_thw``).
        input_size: ``(width, height)`` of the image as the vision encoder saw it (after resizing).
        image_span: ``(start, end)`` token indices of the visual tokens in ``input_ids``.
    """

    input_ids: Tensor
    inputs_embeds: Tensor
    position_ids: Tensor
    next_position: int
    grid: Tensor
    image_size: tuple[int, int]
    grid_scale: tuple[float, float]
    extra: dict = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    image_span: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class PrefixState:
    """The key-value cache of a prefix computed once, to be shared by many suffixes.

    Attributes:
        cache: per decoder layer ``(keys, values)``, each ``[1, H_kv, T, d_head]``; never modified by
            :meth:`Backbone.run_suffixes`, so one state serves any number of suffix chunks.
        length: ``T``.
        next_position: position of the first suffix token (see the module docstring).
        hidden: ``[T, D]`` last hidden states of the prefix (e.g. for match tokens placed in it).
    """

    cache: Any
    length: int
    next_position: int
    hidden: Tensor | None = None


class SharedPrefixLayer(DynamicLayer):
    """A read-only cache layer: the prefix keys/values ``[1, H, T, d]``, broadcast to the batch.

    :meth:`update` returns ``cat(prefix expanded to P rows, new)`` without storing anything, so the
    prefix is never copied into the cache P times and the same state is reused across calls. (The
    concatenation itself is a transient ``[P, H, T + L, d]`` tensor per layer.)
    """

    def __init__(self, keys: Tensor, values: Tensor):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values = keys, values
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        batch = key_states.shape[0]
        keys = torch.cat([self.keys.expand(batch, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values.expand(batch, -1, -1, -1), value_states], dim=-2)
        return keys, values


def block_mask(prefix_length: int, lengths: Tensor, dtype: torch.dtype) -> Tensor:
    """The 4D additive mask of a packed sequence ``[prefix, suffix_1, ..., suffix_P]``.

    Args:
        prefix_length: ``T``.
        lengths: ``[P]`` real lengths of the suffixes.
        dtype: floating dtype of the mask (that of the hidden states).

    Returns:
        ``[1, 1, N, N]`` with ``N = T + sum(lengths)``: 0 where a query may attend a key (prefix
        causally; a suffix token to the whole prefix and to earlier tokens of its own suffix),
        the dtype's minimum elsewhere.
    """
    device = lengths.device
    segment = torch.cat([
        torch.full((prefix_length,), -1, dtype=torch.long, device=device),
        torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths),
    ])  # [N]
    index = torch.arange(segment.numel(), device=device)
    causal = index[None, :] <= index[:, None]  # [N, N] query x key
    visible = (segment[None, :] == segment[:, None]) | (segment[None, :] == -1)
    mask = torch.zeros(causal.shape, dtype=dtype, device=device)
    mask.masked_fill_(~(causal & visible), torch.finfo(dtype).min)
    return mask[None, None]


class Backbone(nn.Module):
    """Base class of backbone adapters. Subclasses wrap one transformers model family.

    Attributes:
        family: e.g. ``"qwen2-vl"``, ``"qwen2.5-vl"``, ``"llava"``, ``"llava-onevision"``.
        model: the transformers ``...ForConditionalGeneration`` model.
        tokenizer: the tokenizer, with our special tokens (pair, match, answer) added.
        processor: the family's processor (image processing), configured so boxes map linearly
            from the original image to the visual grid (no centre crop).
        hidden_size: ``D``.
        position_rank: ``R``.
        chat: the :class:`ChatFormat` of the family.
        num_pair_tokens: how many pair tokens ``<|pair_i|>`` the tokenizer holds.
        name_or_path: the preset name, hub id or local path it was loaded from.

    Subclasses implement :meth:`encode_prefix` and :meth:`box_text`; the run paths are shared.

    Module paths (dotted, under :attr:`model`) are the adapters' knowledge alone; the rest of the
    code (fine-tuning, quantization, saving) asks for them: :attr:`LANGUAGE_MODEL_PATH` (the decoder
    stack, what LoRA wraps and what trains at the language-model learning rate), :attr:`VISION_PATH`
    (the vision encoder), :attr:`PROJECTOR_PATH` (vision-to-language projector / merger),
    :meth:`no_quantization_modules` and :meth:`no_lora_modules`.
    """

    family: str = ""
    LANGUAGE_MODEL_PATH: ClassVar[str] = "model.language_model"
    VISION_PATH: ClassVar[str] = ""
    PROJECTOR_PATH: ClassVar[str] = ""
    LM_HEAD_PATH: ClassVar[str] = "lm_head"
    # (transformers 5 parameter-name prefix, the published checkpoints' prefix), first match wins
    HUB_PREFIXES: ClassVar[tuple[tuple[str, str], ...]] = ()
    position_rank: int = 1
    chat: ChatFormat

    # names of special tokens added to every tokenizer; pair tokens are numbered
    PAIR_TOKEN = PAIR_TOKEN
    MATCH_TOKEN = MATCH_TOKEN
    ANSWER_TOKEN = ANSWER_TOKEN

    def __init__(self, model: nn.Module, tokenizer, processor, num_pair_tokens: int, name_or_path: str = ""):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.num_pair_tokens = num_pair_tokens
        self.name_or_path = name_or_path
        types = set(getattr(self.text_config, "layer_types", None) or ["full_attention"])
        if types != {"full_attention"}:
            raise ValueError(f"{self.family}: only full-attention language models are supported, got layer types {types}")

    # ------------------------------------------------------------------ model parts
    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (no LM head): takes ``inputs_embeds`` and ``position_ids``."""
        return self.model.get_submodule(self.LANGUAGE_MODEL_PATH)

    def set_language_model(self, module: nn.Module) -> None:
        """Put ``module`` (e.g. the decoder stack wrapped by peft) where the decoder stack is."""
        parent, _, attr = self.LANGUAGE_MODEL_PATH.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, attr, module)

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision encoder (tower)."""
        return self.model.get_submodule(self.VISION_PATH)

    @property
    def projector(self) -> nn.Module:
        """The vision-to-language projector (Qwen: the merger inside the vision encoder)."""
        return self.model.get_submodule(self.PROJECTOR_PATH)

    @classmethod
    def module_path(cls, part: str) -> str:
        """Dotted path under the backbone adapter itself (``model.`` + the path under :attr:`model`) of
        ``language_model``, ``vision_encoder``, ``projector`` or ``lm_head``: a parameter of that part is
        named ``<path>.<...>`` in the adapter's ``named_parameters()``."""
        paths = {"language_model": cls.LANGUAGE_MODEL_PATH, "vision_encoder": cls.VISION_PATH,
                 "projector": cls.PROJECTOR_PATH, "lm_head": cls.LM_HEAD_PATH}
        if part not in paths:
            raise ValueError(f"unknown backbone part {part!r}; allowed: {', '.join(paths)}")
        return f"model.{paths[part]}"

    @classmethod
    def no_quantization_modules(cls) -> list[str]:
        """Modules (paths under :attr:`model`) kept in full precision under 4/8-bit quantization:
        the vision encoder, the projector and the LM head."""
        return [p for p in (cls.LM_HEAD_PATH, cls.VISION_PATH, cls.PROJECTOR_PATH) if p]

    @classmethod
    def hub_parameter_name(cls, key: str) -> str:
        """A parameter name of the transformers 5 model -> its name in the family's published
        checkpoints (what a downloaded folder holds; transformers maps it back when loading)."""
        for new, old in cls.HUB_PREFIXES:
            if key.startswith(new):
                return old + key[len(new):]
        return key

    @classmethod
    def no_lora_modules(cls) -> list[str]:
        """Modules (paths under :attr:`model`) LoRA never wraps: everything but the decoder stack."""
        return cls.no_quantization_modules()

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def special_token_id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    def pair_token_ids(self) -> list[int]:
        """Ids of ``<|pair_0|>`` ... ``<|pair_{K-1}|>``."""
        return [self.special_token_id(PAIR_TOKEN.format(i=i)) for i in range(self.num_pair_tokens)]

    def tokenize(self, text: str) -> Tensor:
        """``text`` -> ``[L]`` token ids, no BOS/EOS added."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def embed(self, ids: Tensor) -> Tensor:
        """``[..., L]`` ids -> ``[..., L, D]`` embeddings of the language model."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def logits(self, hidden: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """``[..., D]`` hidden states -> ``[..., V]`` next-token logits (the LM head); with ``token_ids``
        (``[K]``), only those rows of the head: ``[..., K]`` logits of those tokens, in that order."""
        head = self.model.get_output_embeddings()
        if token_ids is None:
            return head(hidden)
        token_ids = token_ids.to(head.weight.device)
        bias = head.bias[token_ids] if getattr(head, "bias", None) is not None else None
        return torch.nn.functional.linear(hidden, head.weight[token_ids], bias)

    def save_pretrained(self, path: str | Path) -> None:
        """Save model, tokenizer and processor so that ``load_backbone(path)`` reloads this backbone."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    # ------------------------------------------------------------------ family-specific
    def encode_prefix(self, image, text_before: str = "", text_after: str = "") -> ImageEncoding:
        """Prefix = chat opening + ``text_before`` + the image + ``text_after``.

        ``image``: a PIL image, an ``[H, W, 3]`` uint8 array or a ``[3, H, W]`` tensor (uint8, or float
        in 0..1). Gradients flow from ``grid`` and ``inputs_embeds`` into the vision encoder and
        projector unless the caller runs under ``torch.no_grad``.
        """
        raise NotImplementedError

    def box_text(self, box: Tensor, enc: ImageEncoding) -> str:
        """A box (xyxy pixels of the original image) as text in the family's grounding convention.

        The one place that knows the convention: the grounded matching prompt
        (``RecogniserConfig.grounded``) and the training-free question both call it. The text goes
        in a pair's suffix, never in the shared image prefix.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ positions
    def text_positions(self, start: int, length: int, batch: int = 1) -> Tensor:
        """``[R, batch, length]`` positions ``start, start + 1, ...`` (all ``R`` rows equal)."""
        pos = torch.arange(start, start + length, device=self.device)
        return pos.view(1, 1, length).expand(self.position_rank, batch, length)

    def _lm_positions(self, positions: Tensor) -> Tensor:
        """``[R, B, L]`` -> what the language model takes: ``[3, B, L]`` for Qwen, ``[B, L]`` otherwise."""
        return positions if self.position_rank > 1 else positions[0]

    @cached_property
    def _cache_argument(self) -> str:
        """The decoder's keyword for a key-value cache: ``cache`` (transformers >= 5.2x, where
        ``past_key_values`` is deprecated) or ``past_key_values`` (earlier 5.x releases)."""
        params = inspect.signature(self.language_model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _forward(self, embeds: Tensor, positions: Tensor, cache: Cache | None = None, **kwargs):
        if cache is not None:
            kwargs[self._cache_argument] = cache
        return self.language_model(inputs_embeds=embeds, position_ids=self._lm_positions(positions), **kwargs)

    @staticmethod
    def _output_cache(out) -> Cache:
        """The key-value cache of a decoder output, under either release's field name."""
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    # ------------------------------------------------------------------ run paths
    def run_prefix(self, enc: ImageEncoding) -> PrefixState:
        """Run the prefix once and keep its key-value cache. ``[T, D]`` -> :class:`PrefixState`."""
        out = self._forward(enc.inputs_embeds[None], enc.position_ids[:, None], use_cache=True)
        layers = tuple((layer.keys, layer.values) for layer in self._output_cache(out).layers)
        return PrefixState(cache=layers, length=enc.length, next_position=enc.next_position,
                           hidden=out.last_hidden_state[0])

    def run_suffixes(self, state: PrefixState, embeds: Tensor, chunk_size: int | None = None) -> Tensor:
        """``embeds [P, L, D]`` after the cached prefix -> ``[P, L, D]`` last hidden states.

        Suffixes are right-padded (padding rows' outputs are meaningless); suffix token ``j`` gets
        position ``state.next_position + j``. The prefix cache is broadcast to the ``P`` rows, not
        copied, and left unchanged, so the caller may call this repeatedly on chunks of a long
        batch (or pass ``chunk_size`` to have it chunked here, rows at a time).
        """
        if self.language_model.training and any(getattr(m, "gradient_checkpointing", False)
                                                for m in self.language_model.modules()):
            raise ValueError(
                "run_suffixes needs the prefix key-value cache, which gradient checkpointing drops in training "
                "mode; use run_packed for training, or call .eval() on the model"
            )
        if embeds.ndim != 3 or embeds.shape[-1] != self.hidden_size:
            raise ValueError(f"embeds must be [P, L, {self.hidden_size}], got {tuple(embeds.shape)}")
        if chunk_size is not None and embeds.shape[0] > chunk_size:
            return torch.cat([self.run_suffixes(state, c) for c in embeds.split(chunk_size)], dim=0)
        P, L, _ = embeds.shape
        cache = Cache(layers=[SharedPrefixLayer(k, v) for k, v in state.cache])
        positions = self.text_positions(state.next_position, L, P)
        out = self._forward(embeds, positions, cache=cache, use_cache=True)
        return out.last_hidden_state

    def run_packed(self, enc: ImageEncoding, embeds: Tensor, lengths: Tensor, return_prefix: bool = False):
        """One sequence ``[prefix, suffix_1, ..., suffix_P]``, each suffix attending to the prefix and
        itself only, with the positions it would have after the prefix. ``[P, L, D]`` -> ``[P, L, D]``.

        Args:
            enc: the prefix.
            embeds: ``[P, L, D]`` right-padded suffix embeddings.
            lengths: ``[P]`` real length of each suffix (``1 <= lengths <= L``); padding is dropped
                before packing, so the sequence holds ``T + sum(lengths)`` tokens.
            return_prefix: also return the ``[T, D]`` hidden states of the prefix.

        Returns:
            ``[P, L, D]`` hidden states (zeros at padding), or ``(that, [T, D])`` with ``return_prefix``.
            No cache is used, so this works with gradient checkpointing.
        """
        P, L, D = embeds.shape
        lengths = torch.as_tensor(lengths, device=embeds.device).long()
        if lengths.shape != (P,) or int(lengths.min()) < 1 or int(lengths.max()) > L:
            raise ValueError(f"lengths must be [P={P}] with values in 1..{L}, got {lengths.tolist()}")
        valid = torch.arange(L, device=embeds.device)[None, :] < lengths[:, None]  # [P, L]
        T = enc.length
        packed = torch.cat([enc.inputs_embeds, embeds[valid]], dim=0)[None]  # [1, N, D]
        offsets = torch.arange(L, device=embeds.device).expand(P, L)[valid]  # [sum(lengths)]
        suffix_pos = (enc.next_position + offsets).view(1, -1).expand(self.position_rank, -1)
        positions = torch.cat([enc.position_ids.to(embeds.device), suffix_pos], dim=1)[:, None]  # [R, 1, N]
        mask = block_mask(T, lengths, embeds.dtype)
        hidden = self._forward(packed, positions, attention_mask=mask, use_cache=False).last_hidden_state[0]
        out = torch.zeros_like(embeds).masked_scatter(valid[..., None], hidden[T:])
        return (out, hidden[:T]) if return_prefix else out

    def run_unshared(self, enc: ImageEncoding, embeds: Tensor) -> Tensor:
        """Reference: each suffix with its own full copy of the prefix, ``[P, L, D]`` -> ``[P, L, D]``."""
        P, L, _ = embeds.shape
        T = enc.length
        full = torch.cat([enc.inputs_embeds[None].expand(P, -1, -1), embeds], dim=1)  # [P, T + L, D]
        positions = torch.cat([
            enc.position_ids[:, None].expand(-1, P, -1).to(embeds.device),
            self.text_positions(enc.next_position, L, P),
        ], dim=2)  # [R, P, T + L]
        return self._forward(full, positions, use_cache=False).last_hidden_state[:, T:]


def as_pil(image):
    """A PIL RGB image from a PIL image, an ``[H, W, 3]`` uint8 array or a ``[3, H, W]`` tensor.

    Tensors may be uint8 or float in ``0..1``. Raises ``ValueError`` naming the accepted forms.
    """
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be [3, H, W], got {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.detach().clamp(0, 1) * 255).round()
        image = image.to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"an image array must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image[..., :3])
    raise ValueError(f"unsupported image type {type(image).__name__}; pass a PIL image, an [H, W, 3] uint8 "
                     "array or a [3, H, W] tensor")
