"""``load_backbone``: a tiny preset by name, or a real checkpoint by hub id or local path.

The family comes from the checkpoint config's ``model_type``; :data:`SUPPORTED` lists them. A real
checkpoint loads with ``from_pretrained`` (dtype, device map, attention implementation, optional
4-bit / 8-bit bitsandbytes quantization), its processor with ``AutoProcessor``; every tokenizer gets
our special tokens, and the embedding matrix grows only if a new id falls outside it. A local
folder is checked first (``checkpoint_files``): a missing file or a clashing tokenizer is named
before any weight loads.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch

from hoi_mllm.models.backbone import Backbone
from hoi_mllm.models.checkpoint_files import check_folder, check_tokenizer
from hoi_mllm.models.presets import PRESETS, build_preset
from hoi_mllm.models.tokenizer import DEFAULT_NUM_PAIR_TOKENS, add_special_tokens

# model_type -> (family, model class name); the adapter class is chosen by family
SUPPORTED = {
    "qwen2_vl": ("qwen2-vl", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration"),
    "llava": ("llava", "LlavaForConditionalGeneration"),
    "llava_onevision": ("llava-onevision", "LlavaOnevisionForConditionalGeneration"),
}
QUANTIZATION = (None, "4bit", "8bit")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _supported_text() -> str:
    families = ", ".join(f"{family} ({cls})" for family, cls in SUPPORTED.values())
    return f"supported families: {families}; presets: {', '.join(PRESETS)}"


def _dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    allowed = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
               "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in allowed:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(allowed)}")
    return allowed[dtype]


def quantization_config(quantization: str | None, compute_dtype: torch.dtype | None, skip_modules: list[str]):
    """``BitsAndBytesConfig`` for ``"4bit"`` (NF4, double quantization) or ``"8bit"`` (LLM.int8), or None.

    ``skip_modules``: kept in full precision (the adapter's ``no_quantization_modules()``: vision
    encoder, projector, LM head)."""
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32,
                              llm_int8_skip_modules=list(skip_modules))


def adapter_class(model_type: str) -> type[Backbone]:
    """The backbone adapter class of a transformers ``model_type`` (one of :data:`SUPPORTED`)."""
    family = SUPPORTED[model_type][0]
    if family.startswith("qwen"):
        from hoi_mllm.models.qwen_vl import QwenVLBackbone

        return QwenVLBackbone
    from hoi_mllm.models.llava import LlavaBackbone, LlavaOnevisionBackbone

    return LlavaOnevisionBackbone if family == "llava-onevision" else LlavaBackbone


def _adapter(model, tokenizer, processor, num_pair_tokens: int, name: str, min_pixels, max_pixels) -> Backbone:
    family = SUPPORTED[model.config.model_type][0]
    cls = adapter_class(model.config.model_type)
    if family.startswith("qwen"):
        return cls(model, tokenizer, processor, num_pair_tokens, name, min_pixels, max_pixels)
    if min_pixels is not None or max_pixels is not None:
        raise ValueError(f"min_pixels / max_pixels apply to Qwen families only, not {family}")
    return cls(model, tokenizer, processor, num_pair_tokens, name)


def _resolve(name_or_path: str) -> str:
    """A local directory as a string, or a hub id; raise ``FileNotFoundError`` for a missing path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise FileNotFoundError(f"{name_or_path} is a file; a model is a directory saved with save_pretrained "
                                f"(or a hub id, or a preset); {_supported_text()}")
    if _HUB_ID.match(str(name_or_path)) and not str(name_or_path).startswith(("./", "../", "~")):
        return str(name_or_path)
    raise FileNotFoundError(f"model {name_or_path!r} not found: not a preset, no such directory, not a hub id; "
                            f"{_supported_text()}")


def load_backbone(
    name_or_path: str | Path,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    quantization: str | None = None,
    attn_implementation: str | None = None,
    overrides: dict | None = None,
    vocabularies: Iterable = ("hico-det", "vcoco"),
    extra_texts: Iterable[str] = (),
    num_pair_tokens: int = DEFAULT_NUM_PAIR_TOKENS,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Backbone:
    """Load a backbone adapter.

    Args:
        name_or_path: a preset (``tiny-qwen2-vl``, ``tiny-qwen2.5-vl``, ``tiny-llava``,
            ``tiny-llava-onevision``), a local directory (e.g. saved by ``Backbone.save_pretrained``)
            or a hub id (needs the network or a populated cache).
        dtype: ``torch.float32``, ``"bfloat16"``, ``"auto"``, ... (``None``: float32 for presets,
            the transformers default for checkpoints).
        device_map: passed to ``from_pretrained`` (``"auto"``, ``"cpu"``, ``"cuda:0"``, a dict); a
            preset is moved to a single device given as a string.
        quantization: ``None``, ``"4bit"`` or ``"8bit"`` (bitsandbytes; vision encoder, projector and
            LM head stay unquantized). Checkpoints only: save a preset first to quantize it.
        attn_implementation: ``"sdpa"`` (default), ``"eager"``; the packed run path needs one of them.
        overrides: preset sizes (fields of ``presets.TinySpec``); presets only.
        vocabularies, extra_texts: corpus of a preset's tokenizer trained in code; presets only.
        num_pair_tokens: pair tokens ``<|pair_i|>`` added to the tokenizer.
        min_pixels, max_pixels: Qwen: bounds of the resized image's pixel count.

    Raises:
        FileNotFoundError: a path that does not exist (names the presets and supported families).
        ValueError: an unsupported family, or a bad option (names the allowed values).
    """
    name = str(name_or_path)
    dtype = _dtype(dtype)
    if quantization not in QUANTIZATION:
        raise ValueError(f"unknown quantization {quantization!r}; allowed: none, 4bit, 8bit")
    if name in PRESETS:
        if quantization is not None:
            raise ValueError("quantization applies to checkpoints: save the preset with save_pretrained and "
                             "load that directory with quantization='4bit' or '8bit'")
        model, tokenizer, processor = build_preset(name, overrides, vocabularies, tuple(extra_texts),
                                                   num_pair_tokens, attn_implementation)
        if dtype not in (None, "auto"):
            model = model.to(dtype)
        if isinstance(device_map, str) and device_map != "auto":
            model = model.to(device_map)
        return _adapter(model, tokenizer, processor, num_pair_tokens, name, min_pixels, max_pixels)
    if name.startswith("tiny-"):
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    if overrides:
        raise ValueError("overrides apply to presets only")

    import transformers
    from transformers import AutoConfig, AutoProcessor

    source = _resolve(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"could not read a model config from {name!r} ({exc}); {_supported_text()}") from exc
    if config.model_type not in SUPPORTED:
        raise ValueError(f"{name!r} is a {config.model_type!r} model, which is not supported; {_supported_text()}")
    model_cls = getattr(transformers, SUPPORTED[config.model_type][1])
    if Path(source).is_dir():  # bad input named before any weight loads
        check_folder(source)
    processor = AutoProcessor.from_pretrained(source)
    tokenizer = processor.tokenizer
    check_tokenizer(tokenizer, config, name, num_pair_tokens)
    compute = dtype if isinstance(dtype, torch.dtype) else None
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = model_cls.from_pretrained(source, device_map=device_map,
                                      quantization_config=quantization_config(
                                          quantization, compute, adapter_class(config.model_type).no_quantization_modules()),
                                      **kwargs)
    ids = add_special_tokens(tokenizer, num_pair_tokens)
    if max(ids) >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return _adapter(model.eval(), tokenizer, processor, num_pair_tokens, name, min_pixels, max_pixels)
