"""The Python API: ``from hoi_mllm import load_pipeline``; ``pipe(path | PIL | array | list)`` gives the
same triplets as ``hoi-mllm detect``; results; saved configs respected, overrides applied; newer
folder versions, bad specs and devices refused before any model loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_detect_cli import SCENES, write_annotations

from hoi_mllm.cli import main
from hoi_mllm.predictions import read_predictions


def test_detect_and_the_python_api_give_identical_predictions(tmp_path, capsys):
    from hoi_mllm import HOIPipeline, HOIResult, load_pipeline

    images = tmp_path / "images"
    annotations = write_annotations(images)
    out = tmp_path / "out"
    assert main(["detect", str(images), "--model", "tiny-qwen2-vl", "--output", str(out), "--no-vis",
                 "--detector", "ground-truth", "--detector-option", f"annotations={annotations}", "--top-k", "7"]) == 0
    assert "device: cpu" in capsys.readouterr().err  # auto, on a machine without CUDA
    cli = read_predictions(out / "predictions.json").by_file_name()

    pipe = load_pipeline("tiny-qwen2-vl", detector=f"ground-truth:annotations={annotations}", top_k=7)
    assert isinstance(pipe, HOIPipeline) and pipe.post_config.top_k == 7
    names = sorted(SCENES)
    results = pipe([images / n for n in names], names)
    assert [r.file_name for r in results] == names and all(isinstance(r, HOIResult) for r in results)
    for r in results:
        c = cli[r.file_name]
        assert np.array_equal(r.verbs, c.verbs) and np.array_equal(r.objects, c.objects)
        assert np.allclose(r.scores, c.scores, atol=1e-6) and np.allclose(r.human_boxes, c.human_boxes, atol=0.01)
    # a PIL image and an array of the same picture give the same result
    two = results[names.index("two.jpg")]
    pil = Image.open(images / "two.jpg").convert("RGB")
    by_pil = pipe(pil, "two.jpg")
    by_array = pipe(np.asarray(pil), "two.jpg")
    assert np.allclose(by_pil.scores, two.scores) and np.allclose(by_array.scores, two.scores)


def test_result_objects_name_plot_and_save(tmp_path):
    from hoi_mllm import load_pipeline
    from hoi_mllm.prompts import load_vocabulary

    images = tmp_path / "images"
    annotations = write_annotations(images)
    pipe = load_pipeline("tiny-qwen2-vl", detector=f"ground-truth:annotations={annotations}", top_k=4, device="cpu")
    r = pipe(images / "two.jpg", "two.jpg")
    vocab = load_vocabulary("hico-det")
    assert len(r) == 4 and r.boxes.shape == (4, 2, 4) and (np.diff(r.scores) <= 0).all()
    assert r.phrases == [vocab.phrase(vocab.class_of(int(v), int(o))) for v, o in zip(r.verbs, r.objects)]
    assert set(r.object_names) <= {"bicycle", "cup"} and all(isinstance(v, str) for v in r.verb_names)
    doc = r.to_json()
    assert doc["file_name"] == "two.jpg" and [h["phrase"] for h in doc["hois"]] == r.phrases
    assert r.plot().size[0] >= 160
    assert json.loads(r.save(tmp_path / "r.json").read_text())["hois"][0]["score"] == pytest.approx(r.scores[0], abs=1e-6)
    assert Image.open(r.save(tmp_path / "r.jpg")).size == r.plot().size
    with pytest.raises(ValueError, match="allowed suffixes: .json"):
        r.save(tmp_path / "r.txt")
    assert "triplets" in repr(r)


def test_saved_settings_are_kept_overrides_applied_newer_versions_refused(tmp_path, capsys):
    from hoi_mllm import load_pipeline
    from hoi_mllm.pipeline_config import PipelineConfigError

    pipe = load_pipeline("tiny-qwen2-vl", top_k=3, max_pairs=5)
    assert pipe.detector is None and pipe.pair_config.max_pairs == 5
    folder = pipe.save_pretrained(tmp_path / "model")
    again = load_pipeline(folder)
    assert again.post_config.top_k == 3 and again.pair_config.max_pairs == 5  # the saved values
    assert load_pipeline(folder, top_k=9).post_config.top_k == 9  # an override wins
    # detect without --top-k keeps the saved model's top-k
    images = tmp_path / "images"
    annotations = write_annotations(images)
    assert main(["detect", str(images), "--model", str(folder), "--output", str(tmp_path / "o"), "--no-vis",
                 "--detector", "ground-truth", "--detector-option", f"annotations={annotations}"]) == 0
    preds = read_predictions(tmp_path / "o" / "predictions.json")
    assert preds.meta["settings"]["top_k"] == 3 and max(len(im) for im in preds.images) == 3
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'topk'; allowed: .*top_k"):
        load_pipeline(folder, topk=3)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": 2}))
    with pytest.raises(PipelineConfigError, match="newer hoi_mllm .*version 2.*up to 1"):
        load_pipeline(folder)


def test_bad_spec_and_device_fail_before_any_model_loads(tmp_path, monkeypatch, capsys):
    import hoi_mllm.pipeline as pipeline
    from hoi_mllm import load_pipeline
    from hoi_mllm.device import resolve_device

    monkeypatch.setattr(pipeline, "load_recogniser", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match="unknown detector 'yolox'"):
        load_pipeline("tiny-qwen2-vl", detector="yolox")
    with pytest.raises(ValueError, match="unknown option 'noise' for detector 'jitter'"):
        load_pipeline("tiny-qwen2-vl", detector="jitter:noise=0.1")
    with pytest.raises(ValueError, match="device 'gpu' not allowed; allowed: auto"):
        load_pipeline("tiny-qwen2-vl", device="gpu")
    images = tmp_path / "images"
    write_annotations(images)
    assert main(["detect", str(images), "--model", "tiny-qwen2-vl", "--output", str(tmp_path / "o"),
                 "--detector", "nope"]) == 1
    assert "unknown detector 'nope'" in capsys.readouterr().err
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
