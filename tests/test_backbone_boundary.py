"""The backbone boundary: only the adapters name a family's module paths; the rest asks them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = {"hoi_mllm/models/backbone.py", "hoi_mllm/models/qwen_vl.py", "hoi_mllm/models/llava.py"}
SOURCES = ("hoi_mllm", "finetune", "eval", "detectors", "prompts")
# module paths of the Qwen2-VL / Qwen2.5-VL and LLaVA / OneVision transformers models
FAMILY_PATHS = re.compile(r"multi_modal_projector|vision_tower|visual\.merger|model\.visual\b|\"visual\"|'visual'"
                          r"|model\.model\.language_model|\.language_model\s*=|language_model\.\"")


def test_nothing_outside_the_adapters_names_a_family_module_path():
    offenders = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ADAPTERS:
                continue
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                if FAMILY_PATHS.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == [], "family module paths outside the adapters:\n" + "\n".join(offenders)


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-llava"])
def test_adapters_expose_their_parts(preset):
    from hoi_mllm.models.loading import load_backbone

    bb = load_backbone(preset)
    names = dict(bb.named_modules())
    for part in ("language_model", "vision_encoder", "projector", "lm_head"):
        assert bb.module_path(part) in names  # a real module under the adapter
    assert bb.language_model is names[bb.module_path("language_model")]
    assert bb.projector is names[bb.module_path("projector")] and bb.vision_encoder is names[bb.module_path("vision_encoder")]
    skip = bb.no_quantization_modules()
    assert "lm_head" in skip and all(f"model.{p}" in names for p in skip)
    assert not any(bb.module_path("language_model").startswith(f"model.{p}") for p in bb.no_lora_modules())
    with pytest.raises(ValueError, match="allowed: language_model"):
        bb.module_path("eyes")
    # the trainer's learning-rate groups come from the adapter's path
    from hoi_mllm.finetune.trainer import language_model_prefix
    from hoi_mllm.models.recogniser import HOIRecogniser

    rec = HOIRecogniser(bb, "hico-det")
    prefix = language_model_prefix(rec)
    lm_params = [n for n, _ in rec.named_parameters() if prefix in n]
    assert lm_params and len(lm_params) == len(list(bb.language_model.parameters()))
