"""Fine-tuning config: recipes, inheritance, overrides, validation with helpful errors; the CLI's bad input."""
import pytest
import yaml

from hoi_mllm.cli import main
from hoi_mllm.finetune.config import FinetuneConfig, builtin_recipes, config_help, load_config
from hoi_mllm.finetune.schema import ConfigError, describe

SPLITS = ("rare_first", "non_rare_first", "unseen_object", "unseen_verb", "uc0", "uc1", "uc2", "uc3", "uc4",
          "unseen_action")


def test_every_recipe_loads_and_follows_the_papers():
    names = builtin_recipes()
    for needed in ("hico_det", "vcoco", "synthetic", "synthetic_quick", *SPLITS):
        assert needed in names
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, FinetuneConfig)
        if name.startswith("synthetic"):
            continue
        assert cfg.matcher.interactiveness_threshold == 0.5  # EoID
        assert cfg.optim.lr == pytest.approx(1e-4) and cfg.adapter.method == "lora"  # DA-HOI
        if name in SPLITS or name == "zero_shot":  # EoID's two-stage matching and distillation
            assert cfg.matcher.top_k == 3 and cfg.teacher.kind == "likelihood", name
        elif name != "sap_pretrain":  # DA-HOI's default setting: neither (README, "Training targets")
            assert cfg.matcher.top_k == 0 and cfg.teacher.kind == "none", name
    default, base = load_config("hico_det"), load_config("zero_shot")
    diff = {k for k in base.to_dict() if base.to_dict()[k] != default.to_dict()[k]}
    assert diff == {"name", "matcher", "teacher"}  # zero_shot = hico_det + two-stage matching and a teacher
    for split in SPLITS:
        cfg = load_config(split)
        assert cfg.data.split == split
        # inherited, not copied: only the name and split differ from the base recipe
        diff = {k for k in cfg.to_dict() if cfg.to_dict()[k] != base.to_dict()[k]}
        assert diff == {"name", "data"}
        from hoi_mllm.prompts import load_vocabulary

        load_vocabulary("hico-det").split(split)  # every recipe's split exists


def test_recipe_values_are_documented():
    from hoi_mllm.finetune.config import recipes_dir

    text = (recipes_dir() / "hico_det.yaml").read_text() + (recipes_dir() / "zero_shot.yaml").read_text()
    leaf_lines = [l for l in text.splitlines() if ":" in l and not l.strip().startswith("#")
                  and not l.rstrip().endswith(":") and not l.startswith("inherit:")]
    undocumented = [l for l in leaf_lines if "#" not in l and "train:" not in l.split("#")[0][:8]]
    assert not undocumented, undocumented


def test_overrides_types_and_inheritance(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text(yaml.safe_dump({"data": {"train": "a.json", "val_images": 3}, "optim": {"lr": 0.5}}))
    child = tmp_path / "child.yaml"
    child.write_text("inherit: parent.yaml\noptim:\n  warmup_steps: 7\n")
    cfg = load_config(child, {"optim.lr": "1e-4", "train.steps": "12", "train.cpu": "true",
                              "model.recogniser.sap.hidden_size": 32, "pairs.proposal.max_pairs": "null",
                              "adapter.target_modules": "q_proj,v_proj"})
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.warmup_steps == 7 and cfg.data.val_images == 3
    assert cfg.train.steps == 12 and cfg.train.cpu is True and cfg.model.recogniser.sap.hidden_size == 32
    assert cfg.pairs.proposal.max_pairs is None and cfg.adapter.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(Exception):  # frozen: passed in, never mutated
        cfg.optim.lr = 3.0
    loop = tmp_path / "loop.yaml"
    loop.write_text("inherit: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(loop)


@pytest.mark.parametrize("overrides,message", [
    ({"optim.lrr": 1}, "unknown config key 'optim.lrr'.*optim.lr"),
    ({"train.lr": 1}, "unknown config key 'train.lr'.*optim.lr"),
    ({"model.recogniser.sap.hiden_size": 3}, "model.recogniser.sap.hidden_size"),
    ({"adapter.method": "lor"}, "allowed: lora, full, frozen. Did you mean lora"),
    ({"pairs.source": "yolo"}, "allowed: ground-truth, detector, both"),
    ({"pairs.source": "detector"}, "pairs.detector is not set"),
    ({"teacher.kind": "clip"}, "teacher.model is not set"),
    ({"train.steps": "ten"}, "takes an integer"),
    ({"train.steps": 0}, "outside"),
    ({"loss.verb": "hinge"}, "allowed: focal, bce"),
    ({"model.recogniser.candidate_placement": "middle"}, "allowed: suffix, prefix"),
    ({"model.quantization": "4bit", "adapter.method": "full"}, "needs adapter.method=lora"),
    ({"model.quantization": "3bit"}, "allowed: None, 4bit, 8bit"),
    ({"eval.every": 10}, "no validation images"),
    ({"model.base": "tiny-qwen2.5-vl", "model.preset_overrides": {"hiden_size": 32}},
     "model.preset_overrides: unknown tiny-preset override.*'hiden_size'.*allowed: .*hidden_size"),
    ({"model.base": "tiny-qwen2.5-vl", "model.preset_overrides": {"hidden_size": 30}},
     "model.preset_overrides: hidden_size must divide by num_attention_heads"),
])
def test_bad_values_name_the_allowed_ones(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"data.train": "x.json", "model.base": "tiny-qwen2-vl", **overrides})


def test_missing_training_file_and_unknown_recipe():
    with pytest.raises(ConfigError, match="data.train"):
        load_config(None, {})
    with pytest.raises(FileNotFoundError, match="Did you mean rare_first"):
        load_config("rare_frist")


def test_help_lists_every_key():
    text = config_help()
    keys = [k for k, _, _ in describe(FinetuneConfig)]
    assert "matcher.top_k" in keys and "model.recogniser.sap.hidden_size" in keys
    assert all(k in text for k in keys)
    assert all(h for _, _, h in describe(FinetuneConfig)), "every key has help text"


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    assert main(["finetune", "synthetic", "optim.lrr=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'optim.lrr'" in err and len(err.splitlines()) == 1
    assert main(["finetune", "synthetic", f"data.train={tmp_path / 'none.json'}", "--output", str(tmp_path / "r")]) == 1
    assert "training annotation file not found" in capsys.readouterr().err
    assert main(["finetune", "--help-config"]) == 0 and "matcher.top_k" in capsys.readouterr().out
    assert main(["finetune", "rare_first", "optim.lr=2e-4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == pytest.approx(2e-4) and printed["data"]["split"] == "rare_first"


def test_dahoi_switches_in_the_real_recipes_and_epochs():
    from hoi_mllm.finetune.config import steps_of_epochs

    for name in ("hico_det", "rare_first", "vcoco"):
        cfg = load_config(name)
        rec = cfg.model.recogniser
        assert rec.grounded and rec.match_init == "mean" and rec.shuffle_candidates, name
        assert not cfg.adapter.train_projector and cfg.train.epochs == 16, name
    synthetic = load_config("synthetic")
    assert synthetic.train.epochs is None and not synthetic.model.recogniser.grounded
    train = load_config("hico_det").train  # 8 images x 2 accumulation
    assert steps_of_epochs(train, 37633) == 37633 and steps_of_epochs(train, 37633, processes=4) == 9409
    assert steps_of_epochs(synthetic.train, 10**6) == synthetic.train.steps  # no epochs: steps as given
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config("hico_det", {"train.epochs": 0})
    with pytest.raises(ConfigError, match="match_init"):
        load_config("hico_det", {"model.recogniser.match_init": "avg"})
