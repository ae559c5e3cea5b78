"""The trainer's distributed settings: DeepSpeed's "auto" values come from the recipe, mismatches and
untrustworthy checkpointing are refused before training, and the accelerate configs say so."""
from types import SimpleNamespace

import pytest
import yaml

from hoi_mllm.finetune.config import load_config, recipes_dir
from hoi_mllm.finetune.trainer import Trainer, fill_deepspeed_config


def fake_accelerator(kind: str = "MULTI_GPU", accumulation: int = 2, processes: int = 1):
    return SimpleNamespace(distributed_type=kind, gradient_accumulation_steps=accumulation, num_processes=processes)


def test_deepspeed_auto_values_come_from_the_recipe():
    cfg = load_config("hico_det")
    ds = fill_deepspeed_config({"gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 2}}, cfg)
    assert ds["gradient_accumulation_steps"] == cfg.train.gradient_accumulation == 2
    assert ds["gradient_clipping"] == cfg.optim.grad_clip == pytest.approx(0.1)
    assert ds["train_micro_batch_size_per_gpu"] == cfg.train.batch_size
    # equal values pass; a value the recipe contradicts is refused, naming both
    fill_deepspeed_config({"gradient_clipping": 0.1, "gradient_accumulation_steps": 2}, cfg)
    with pytest.raises(ValueError, match="gradient_clipping=1.0, the recipe's optim.grad_clip is 0.1"):
        fill_deepspeed_config({"gradient_clipping": 1.0}, cfg)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1, the recipe's train.gradient_accumulation is 2"):
        fill_deepspeed_config({"gradient_accumulation_steps": 1}, cfg)
    # no clipping in the recipe: DeepSpeed's 0
    off = load_config("hico_det", {"optim.grad_clip": None})
    assert fill_deepspeed_config({}, off)["gradient_clipping"] == 0.0


def test_deepspeed_yaml_leaves_accumulation_and_clipping_to_the_recipe():
    doc = yaml.safe_load((recipes_dir() / "accelerate_deepspeed_zero2.yaml").read_text())
    assert doc["distributed_type"] == "DEEPSPEED"
    assert not {"gradient_accumulation_steps", "gradient_clipping"} & set(doc["deepspeed_config"])


def test_accumulation_mismatch_and_deepspeed_checkpointing_are_refused():
    cfg = load_config("hico_det")
    Trainer(cfg, "unused")._check_accelerator(fake_accelerator())
    with pytest.raises(ValueError, match="accelerate accumulates 1 micro-batches.*train.gradient_accumulation is 2"):
        Trainer(cfg, "unused")._check_accelerator(fake_accelerator(accumulation=1))
    with pytest.raises(ValueError, match="under DeepSpeed the trainer cannot checkpoint.*checkpoint_every=1000"):
        Trainer(cfg, "unused")._check_accelerator(fake_accelerator("DEEPSPEED"))
    no_ckpt = load_config("hico_det", {"train.checkpoint_every": 0})
    with pytest.raises(ValueError, match="resume=True"):
        Trainer(no_ckpt, "unused", resume=True)._check_accelerator(fake_accelerator("DEEPSPEED"))
    Trainer(no_ckpt, "unused")._check_accelerator(fake_accelerator("DEEPSPEED"))


def test_a_non_finite_loss_on_another_process_stops_this_one_too():
    import torch

    from hoi_mllm.finetune.losses import LossTerms
    from hoi_mllm.finetune.trainer import NonFiniteLossError, check_finite

    item = SimpleNamespace(sample=SimpleNamespace(file_name="a.png"))
    one = torch.tensor(1.0)
    terms = LossTerms(one, one, one, one)
    # process 0's loss is finite; process 1's (gathered) is not
    acc = SimpleNamespace(num_processes=2, process_index=0, gather=lambda t: torch.cat([t, torch.zeros(1)]))
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(batch 12\) on process\(es\) 1; this process \(0\).*a\.png"):
        check_finite(acc, terms, 7, 12, [item])
    check_finite(SimpleNamespace(num_processes=2, process_index=0, gather=lambda t: torch.cat([t, t])), terms, 7, 12,
                 [item])
    single = SimpleNamespace(num_processes=1, process_index=0)
    with pytest.raises(NonFiniteLossError, match=r"on process\(es\) 0"):
        check_finite(single, LossTerms(torch.tensor(float("nan")), one, one, one), 1, 0, [item])
