"""A real-format checkpoint folder (``make_checkpoint``) loads through the hub-id path: detect in both
modes, finetune with ``model.base=DIR``; bad folders are named before any weight loads."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hoi_mllm.models.make_checkpoint import main as make_main
from hoi_mllm.models.make_checkpoint import make_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny-qwen2.5-vl"
    assert make_main(["--config", "tiny-qwen2.5-vl", "--output", str(out), "--max-shard-size", "20MB",
                      "--dtype", "float32"]) == 0
    return out


def test_folder_holds_what_a_download_holds(folder):
    names = {p.name for p in folder.iterdir()}
    for name in ("config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json", "chat_template.json"):
        assert name in names, name
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(s in names for s in shards)
    keys = set(index["weight_map"])
    # published tensor names: language model under model., vision encoder under visual.
    assert "model.embed_tokens.weight" in keys and any(k.startswith("visual.blocks.0.") for k in keys)
    assert not any(k.startswith("model.language_model.") for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["image_token_id"] == 151655
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert "<|pair_0|>" not in json.dumps(tok)  # our tokens are added on loading, as for a download
    assert json.loads((folder / "preprocessor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"


def test_loads_through_load_backbone_with_the_written_weights(folder):
    from hoi_mllm.models.loading import load_backbone

    b = load_backbone(str(folder))
    assert b.family == "qwen2.5-vl" and b.name_or_path == str(folder)
    assert b.tokenizer.convert_tokens_to_ids(["<|pair_0|>", "<|match|>"]) == [151665, 151673]
    assert b.tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    key = "model.layers.1.mlp.down_proj.weight"
    with safe_open(str(folder / index["weight_map"][key]), "pt") as f:
        assert torch.equal(f.get_tensor(key), b.model.model.language_model.layers[1].mlp.down_proj.weight)
    enc = b.encode_prefix(np.zeros((90, 120, 3), np.uint8), "hi")
    assert enc.length > 10


@pytest.mark.parametrize("mode", ["matching", "training-free"])
def test_detect_loads_the_folder_in_both_modes(folder, tmp_path, mode):
    from test_detect_cli import write_annotations

    from hoi_mllm.cli import main
    from hoi_mllm.predictions import read_predictions

    images = tmp_path / "images"
    ann = write_annotations(images)
    out = tmp_path / "out"
    code = main(["detect", str(images), "--model", str(folder), "--output", str(out), "--detector", "ground-truth",
                 "--detector-option", f"annotations={ann}", "--mode", mode, "--top-k", "3"])
    assert code == 0
    preds = read_predictions(out / "predictions.json")
    assert preds.meta["mode"] == mode and len(preds.images) == 3


def test_finetune_takes_the_folder_as_model_base(folder, tmp_path):
    from hoi_mllm.data.synthetic import generate_world
    from hoi_mllm.finetune.config import load_config
    from hoi_mllm.finetune.trainer import finetune

    world = tmp_path / "world"
    generate_world(world, 6, 2, seed=3, image_size=128, progress=False, workers=1)
    cfg = load_config("synthetic", {"model.base": str(folder), "data.train": str(world / "instances_train.json"),
                                    "data.val_images": 2, "train.batch_size": 2, "train.steps": 1, "train.log_every": 1,
                                    "train.tensorboard": False, "train.checkpoint_every": 0, "eval.at_end": False,
                                    "model.pretrain_steps": 0, "model.recogniser.sap.hidden_size": 32,
                                    "train.threads": 2})
    result = finetune(cfg, tmp_path / "run", progress=False)
    assert result.steps == 1 and (tmp_path / "run" / "final" / "config.json").is_file()


def _copy(folder, tmp_path, drop=()):
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    for name in drop:
        (out / name).unlink()
    return out


@pytest.mark.parametrize("drop, message", [
    (("tokenizer.json",), "no tokenizer files; expected one of: tokenizer.json"),
    (("tokenizer_config.json",), "tokenizer_config.json is missing"),
    (("preprocessor_config.json",), "no image processor config; expected preprocessor_config.json"),
    (("config.json",), "config.json"),
    (("model-00002-of-00004.safetensors",), "lists shard(s) that are missing: model-00002-of-00004.safetensors"),
])
def test_a_folder_missing_a_file_is_named_before_weights_load(folder, tmp_path, monkeypatch, drop, message):
    import transformers

    from hoi_mllm.models.loading import load_backbone

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.Qwen2_5_VLForConditionalGeneration, "from_pretrained", no_weights)
    bad = _copy(folder, tmp_path, drop)
    with pytest.raises(FileNotFoundError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_backbone(str(bad))


def test_unsupported_family_and_clashing_tokens_are_named(folder, tmp_path, monkeypatch):
    import transformers
    from transformers import AutoTokenizer

    from hoi_mllm.models.loading import load_backbone

    monkeypatch.setattr(transformers.Qwen2_5_VLForConditionalGeneration, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("weights were loaded")))
    bad = _copy(folder, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    with pytest.raises(ValueError, match="'qwen2' model, which is not supported; supported families: qwen2-vl"):
        load_backbone(str(bad))
    (bad / "config.json").write_text(json.dumps({**config, "image_token_id": 151654}))
    with pytest.raises(ValueError, match=r"puts <\|image_pad\|> at id 151655 but config.json says image_token_id = 151654"):
        load_backbone(str(bad))
    (bad / "config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(bad)
    tok.add_tokens(["<|match|>"])  # ordinary text, not a special token
    tok.save_pretrained(bad)
    with pytest.raises(ValueError, match=r"already holds <\|match\|> as ordinary text"):
        load_backbone(str(bad))


def test_make_checkpoint_bad_input(tmp_path, capsys):
    assert make_main(["--config", "qwen9", "--output", str(tmp_path / "x")]) == 2
    assert "unknown config 'qwen9'; allowed: qwen2.5-vl-3b" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_checkpoint("tiny-qwen2.5-vl", tmp_path / "exists")
    with pytest.raises(ValueError, match="bad size 'big'"):
        make_checkpoint("tiny-qwen2.5-vl", tmp_path / "y", max_shard_size="big")
    assert not (tmp_path / "y").exists()
