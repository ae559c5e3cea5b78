"""Write a real-format checkpoint folder with random weights, without a hub.

``python -m hoi_mllm.models.make_checkpoint --config qwen2.5-vl-3b --output DIR`` writes what a
downloaded ``Qwen/Qwen2.5-VL-3B-Instruct`` folder holds:

* ``config.json`` (the model config; transformers 5 layout, text fields under ``text_config``),
  ``generation_config.json``;
* ``model-0000i-of-0000n.safetensors`` shards and ``model.safetensors.index.json``, tensors named
  as in the published checkpoints (``model.layers.*``, ``visual.*``, ``lm_head.weight`` unless
  tied: the names transformers maps onto its own modules when loading a hub checkpoint);
* ``tokenizer.json``, ``tokenizer_config.json`` (the real tokenizer, :mod:`.qwen_tokenizer`,
  without our pair / match tokens: loading adds them as for any downloaded checkpoint);
* ``preprocessor_config.json`` (and ``video_preprocessor_config.json``), ``chat_template.json``.

The folder loads through exactly the code that loads a hub id (``load_backbone(DIR)``,
``hoi-mllm detect --model DIR``, ``finetune ... model.name=DIR``). Weights are drawn shard by
shard (normal, std = ``initializer_range``; norms 1, biases 0), never the whole model at once, so a
3B folder needs about one shard of memory to write. Configs: :data:`CONFIGS` (real sizes and small
ones of the same architecture) and the tiny presets (their sizes, the real tokenizer).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

# Qwen2.5-VL sizes: the published Qwen2.5-VL-3B-Instruct / 7B-Instruct configs, and small ones of the
# same architecture for CPU runs (vision: depth, width, MLP, heads, full-attention blocks)
CONFIGS = {
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2, tie_word_embeddings=True, vision_depth=32, vision_hidden=1280,
                          vision_intermediate=3420, vision_heads=16, fullatt_block_indexes=[7, 15, 23, 31]),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, tie_word_embeddings=False, vision_depth=32, vision_hidden=1280,
                          vision_intermediate=3420, vision_heads=16, fullatt_block_indexes=[7, 15, 23, 31]),
    "cpu-small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                      num_key_value_heads=2, tie_word_embeddings=True, vision_depth=4, vision_hidden=256,
                      vision_intermediate=684, vision_heads=4, fullatt_block_indexes=[3]),
}
VOCAB_ROWS = 151936
PATCH, MERGE, TEMPORAL = 14, 2, 2
MIN_PIXELS, MAX_PIXELS = 3136, 12845056  # the published preprocessor_config.json
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def allowed_configs() -> list[str]:
    from hoi_mllm.models.presets import PRESETS

    return [*CONFIGS, *PRESETS]


def qwen25_config(name: str, tokenizer):
    """The ``Qwen2_5_VLConfig`` of :data:`CONFIGS` entry ``name`` (token ids from ``tokenizer``)."""
    from transformers import Qwen2_5_VLConfig

    from hoi_mllm.models.presets import _mrope_section

    c = CONFIGS[name]
    mrope = _mrope_section(c["hidden_size"] // c["num_attention_heads"])  # head 128 -> [16, 24, 24]
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    text = dict(hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
                num_key_value_heads=c["num_key_value_heads"], vocab_size=VOCAB_ROWS, max_position_embeddings=128000,
                rms_norm_eps=1e-6, tie_word_embeddings=c["tie_word_embeddings"], hidden_act="silu",
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
                bos_token_id=ids[1], eos_token_id=ids[0], pad_token_id=None)
    vision = dict(depth=c["vision_depth"], hidden_size=c["vision_hidden"], intermediate_size=c["vision_intermediate"],
                  num_heads=c["vision_heads"], out_hidden_size=c["hidden_size"], patch_size=PATCH,
                  spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, window_size=112, tokens_per_second=2,
                  fullatt_block_indexes=c["fullatt_block_indexes"], hidden_act="silu")
    tokens = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=c["tie_word_embeddings"],
                            **tokens)


def _parts(name: str):
    """``(model class, config, tokenizer without our tokens, image processor, video processor or None)``."""
    from hoi_mllm.models.presets import PRESETS, REAL_TOKENIZER, build_preset
    from hoi_mllm.models.qwen_tokenizer import qwen_tokenizer

    if name in PRESETS:
        model, tokenizer, processor = build_preset(name)
        family = REAL_TOKENIZER[name]
        if family is not None:  # the folder holds the family's tokenizer; loading adds our tokens
            tokenizer = qwen_tokenizer(family)
        return (type(model), model.config, tokenizer, processor.image_processor,
                getattr(processor, "video_processor", None))
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; allowed: {', '.join(allowed_configs())}")
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = qwen_tokenizer("qwen2.5-vl")
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    common = dict(size=size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL,
                  image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return (Qwen2_5_VLForConditionalGeneration, qwen25_config(name, tokenizer), tokenizer,
            Qwen2VLImageProcessor(**common), Qwen2VLVideoProcessor(**common))


def _random(name: str, shape, dtype: torch.dtype, std: float, generator: torch.Generator) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias" or "newline" in name:
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:  # norm weights
        return torch.ones(shape, dtype=dtype)
    return torch.randn(shape, generator=generator, dtype=dtype).mul_(std)


def write_weights(model_cls, config, folder: Path, dtype: torch.dtype, max_shard_bytes: int, seed: int) -> dict:
    """Random weights in safetensors shards + ``model.safetensors.index.json``; returns the index."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        meta = model_cls._from_config(config)
    tied = bool(getattr(config, "tie_word_embeddings", False) or getattr(config.get_text_config(), "tie_word_embeddings", False))
    params = [(k, tuple(v.shape)) for k, v in meta.state_dict().items() if not (tied and k == "lm_head.weight")]
    std = float(getattr(config, "initializer_range", None) or config.get_text_config().initializer_range)
    size = torch.empty((), dtype=dtype).element_size()
    shards, current, used = [], [], 0
    for key, shape in params:
        nbytes = size * int(torch.Size(shape).numel())
        if current and used + nbytes > max_shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append((key, shape))
        used += nbytes
    shards.append(current)
    generator = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    from hoi_mllm.models.loading import adapter_class

    hub_name = adapter_class(config.model_type).hub_parameter_name
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {hub_name(k): _random(k, s, dtype, std, generator) for k, s in shard}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: file for k in tensors})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def make_checkpoint(name: str, output: str | Path, dtype: str = "bfloat16", max_shard_size: str = "2GB",
                    seed: int = 0, overwrite: bool = False) -> Path:
    """Write config ``name`` (:func:`allowed_configs`) as a real-format folder at ``output``.

    Written to a temporary folder beside ``output`` and renamed at the end, so a stopped run leaves
    no half folder. ``dtype``: of the stored weights (``bfloat16`` as published, or ``float32``).
    ``max_shard_size``: e.g. ``"2GB"``, ``"50MB"``.
    """
    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(dtypes)}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    shard_bytes = _parse_size(max_shard_size)
    model_cls, config, tokenizer, image_processor, video_processor = _parts(name)
    config.dtype = dtype
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        config.save_pretrained(tmp)
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        write_weights(model_cls, config, tmp, dtypes[dtype], shard_bytes, seed)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        if video_processor is not None:
            video_processor.save_pretrained(tmp)
        processor_class = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                           "llava": "LlavaProcessor", "llava_onevision": "LlavaOnevisionProcessor"}[config.model_type]
        _set_processor_class(tmp, processor_class)
        if tokenizer.chat_template:
            (tmp / "chat_template.json").write_text(json.dumps({"chat_template": tokenizer.chat_template}, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def _set_processor_class(folder: Path, processor_class: str) -> None:
    """Name the processor in the preprocessor and tokenizer configs, as the published files do."""
    for file in ("preprocessor_config.json", "video_preprocessor_config.json", "tokenizer_config.json"):
        path = folder / file
        if path.is_file():
            data = json.loads(path.read_text())
            data["processor_class"] = processor_class
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _parse_size(text: str) -> int:
    units = {"KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9}
    upper = str(text).strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[:-2].replace(".", "", 1).isdigit():
            return int(float(upper[:-2]) * factor)
    if upper.isdigit():
        return int(upper)
    raise ValueError(f"bad size {text!r}; write e.g. 2GB, 500MB or a number of bytes")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoi_mllm.models.make_checkpoint",
                                     description="Write a real-format checkpoint folder with random weights (no hub).")
    parser.add_argument("--config", required=True, help=f"one of: {', '.join(allowed_configs())}")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16 (as published), float16 or float32")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = make_checkpoint(args.config, args.output, args.dtype, args.max_shard_size, args.seed, args.overwrite)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {out} ({len(files)} files: {', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
