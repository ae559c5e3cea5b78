"""Tiny random-weight presets of every supported family, built from configs (no download).

``tiny-qwen2-vl``, ``tiny-qwen2.5-vl``, ``tiny-llava`` and ``tiny-llava-onevision`` are real
instances of the transformers model classes (``Qwen2VLForConditionalGeneration``, ...), with a few
layers of small width, a tokenizer and the family's real processor classes configured for small
images: small enough to train on a CPU, used by the tests and the synthetic world. The Qwen presets
and ``tiny-llava-onevision`` (Qwen2 based) use the real Qwen2 / Qwen2.5 tokenizer
(:mod:`hoi_mllm.models.qwen_tokenizer`, built offline), so they tokenize phrases and prompts as
the real models do and their vocabulary is the real one (151,936 embedding rows for Qwen, as the
published configs; a small width keeps the model small); ``tiny-llava`` (whose Vicuna tokenizer
is not available offline) uses a small BPE trained in code (:mod:`hoi_mllm.models.tokenizer`).
Our pair / match / answer tokens are added to either as to a downloaded checkpoint's tokenizer. Weights are seeded (same seed, same weights); sizes can be
changed with ``overrides`` (the fields of :class:`TinySpec`).

Grids: a 224 x 224 image gives an 8 x 8 visual grid in every family (Qwen: 14-pixel patches merged
2 x 2; LLaVA: 28-pixel patches); Qwen images keep their aspect ratio, at most ``max_grid`` merged
tokens a side.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Sequence

import torch

PRESETS = ("tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava", "tiny-llava-onevision")
# the family of the real tokenizer each preset uses (None: a tokenizer trained in code)
REAL_TOKENIZER = {"tiny-qwen2-vl": "qwen2-vl", "tiny-qwen2.5-vl": "qwen2.5-vl", "tiny-llava": None,
                  "tiny-llava-onevision": "llava-onevision"}
QWEN_VOCAB_ROWS = 151936  # embedding rows of the published Qwen2-VL / Qwen2.5-VL configs


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny preset. Every field can be overridden by name."""

    hidden_size: int = field(default=64, metadata={"help": "language-model width D"})
    intermediate_size: int = field(default=128, metadata={"help": "language-model MLP width"})
    num_hidden_layers: int = field(default=2, metadata={"help": "language-model decoder layers"})
    num_attention_heads: int = field(default=4, metadata={"help": "attention heads (head dim = D / heads)"})
    num_key_value_heads: int = field(default=2, metadata={"help": "key-value heads (grouped-query attention)"})
    vision_width: int = field(default=32, metadata={"help": "vision encoder width"})
    vision_depth: int = field(default=2, metadata={"help": "vision encoder layers"})
    vision_heads: int = field(default=2, metadata={"help": "vision encoder attention heads"})
    image_size: int = field(default=224, metadata={"help": "LLaVA: square input side in pixels"})
    patch_size: int = field(default=0, metadata={"help": "vision patch side in pixels (0: 14 for Qwen, 28 for LLaVA)"})
    max_grid: int = field(default=12, metadata={"help": "Qwen: at most this many merged tokens a side"})
    min_grid: int = field(default=4, metadata={"help": "Qwen: at least this many merged tokens a side"})
    vocab_size: int = field(default=2048, metadata={"help": "tiny-llava: upper bound of the trained tokenizer's vocabulary"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights"})


def tiny_spec(overrides: dict | None = None) -> TinySpec:
    """:class:`TinySpec` with ``overrides``; unknown keys raise ``ValueError`` naming the allowed ones."""
    overrides = dict(overrides or {})
    allowed = {f.name for f in fields(TinySpec)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown tiny-preset override(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    spec = replace(TinySpec(), **{k: int(v) for k, v in overrides.items()})
    if spec.hidden_size % spec.num_attention_heads or spec.num_attention_heads % spec.num_key_value_heads:
        raise ValueError("hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
    return spec


def _text_config(spec: TinySpec, tokenizer, vocab: int) -> dict:
    return dict(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, vocab_size=vocab, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim / 2`` rotary frequencies over (temporal, height, width) like Qwen's 16/24/24 of 64."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen(name: str, spec: TinySpec, tokenizer, vocab: int):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    patch, merge = spec.patch_size or 14, 2
    text = _text_config(spec, tokenizer, vocab)
    head_dim = spec.hidden_size // spec.num_attention_heads
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)}
    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    if name == "tiny-qwen2-vl":
        vision = dict(depth=spec.vision_depth, embed_dim=spec.vision_width, hidden_size=spec.hidden_size,
                      num_heads=spec.vision_heads, mlp_ratio=2, patch_size=patch, spatial_merge_size=merge,
                      temporal_patch_size=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_width, out_hidden_size=spec.hidden_size,
                      intermediate_size=2 * spec.vision_width, num_heads=spec.vision_heads, patch_size=patch,
                      spatial_merge_size=merge, temporal_patch_size=2, window_size=patch * merge * 4,
                      fullatt_block_indexes=[spec.vision_depth - 1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model_cls, processor_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    unit = patch * merge
    pixels = {"shortest_edge": (spec.min_grid * unit) ** 2, "longest_edge": (spec.max_grid * unit) ** 2}
    image_processor = Qwen2VLImageProcessor(size=pixels, patch_size=patch, merge_size=merge, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=pixels, patch_size=patch, merge_size=merge, temporal_patch_size=2)
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                              chat_template=tokenizer.chat_template)
    return model_cls, config, processor


def _llava(name: str, spec: TinySpec, tokenizer, vocab: int):
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaOnevisionConfig,
                              LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor, LlavaProcessor, Qwen2Config, SiglipVisionConfig)
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    patch, side = spec.patch_size or 28, spec.image_size
    if side % patch:
        raise ValueError(f"image_size {side} must be a multiple of patch_size {patch}")
    vision = dict(hidden_size=spec.vision_width, intermediate_size=2 * spec.vision_width,
                  num_hidden_layers=spec.vision_depth, num_attention_heads=spec.vision_heads,
                  image_size=side, patch_size=patch)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    square = {"height": side, "width": side}
    grid = side // patch
    if name == "tiny-llava":
        config = LlavaConfig(vision_config=CLIPVisionConfig(**vision), text_config=LlamaConfig(**_text_config(spec, tokenizer, vocab)),
                             image_token_id=image_token, vision_feature_layer=-2, vision_feature_select_strategy="default",
                             image_seq_length=grid * grid, projector_hidden_act="gelu")
        image_processor = CLIPImageProcessor(size=square, crop_size=square, do_center_crop=False)
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
        return LlavaForConditionalGeneration, config, processor
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
    config = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**vision), text_config=Qwen2Config(**_text_config(spec, tokenizer, vocab)),
                                  image_token_id=image_token, video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9")
    image_processor = LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=pinpoints)
    video_processor = LlavaOnevisionVideoProcessor(size=square)
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                        num_image_tokens=grid * grid, vision_feature_select_strategy="full",
                                        chat_template=tokenizer.chat_template)
    return LlavaOnevisionForConditionalGeneration, config, processor


def preset_tokenizer(name: str, vocabularies: Iterable = ("hico-det", "vcoco"), extra_texts: Sequence[str] = (),
                     vocab_size: int = 2048, num_pair_tokens: int = 8):
    """The tokenizer of preset ``name``, our special tokens added (see the module docstring)."""
    from hoi_mllm.models.qwen_tokenizer import qwen_tokenizer
    from hoi_mllm.models.tokenizer import add_special_tokens, build_tokenizer

    family = REAL_TOKENIZER[name]
    if family is None:
        return build_tokenizer("llava", vocabularies, extra_texts, vocab_size, num_pair_tokens)
    tokenizer = qwen_tokenizer(family)
    add_special_tokens(tokenizer, num_pair_tokens)
    return tokenizer


def build_preset(
    name: str,
    overrides: dict | None = None,
    vocabularies: Iterable = ("hico-det", "vcoco"),
    extra_texts: Sequence[str] = (),
    num_pair_tokens: int = 8,
    attn_implementation: str | None = None,
):
    """Build a tiny preset: ``(model, tokenizer, processor)``, the model in float32 eval mode on CPU.

    Args:
        name: one of :data:`PRESETS`.
        overrides: :class:`TinySpec` fields to change, e.g. ``{"hidden_size": 128, "num_hidden_layers": 4}``.
        vocabularies: tiny-llava: vocabularies whose phrases train its tokenizer (``tokenizer.build_tokenizer``).
        extra_texts: tiny-llava: more tokenizer corpus.
        num_pair_tokens: pair tokens in the tokenizer.
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    spec = tiny_spec(overrides)
    style = "qwen" if name.startswith("tiny-qwen") else ("llava" if name == "tiny-llava" else "onevision")
    tokenizer = preset_tokenizer(name, vocabularies, extra_texts, spec.vocab_size, num_pair_tokens)
    # the real Qwen vocabulary has 151,936 rows (room after the added tokens), else a multiple of 64
    vocab = max(QWEN_VOCAB_ROWS if style != "llava" else 0, -(-len(tokenizer) // 64) * 64)
    builder = _qwen if style == "qwen" else _llava
    model_cls, config, processor = builder(name, spec, tokenizer, vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = model_cls._from_config(config, attn_implementation=attn_implementation or "sdpa", dtype=torch.float32)
    return model.eval(), tokenizer, processor
