"""Start-up: which modules a bare ``import hoi_mllm``, every ``--help`` and ``hoi-mllm evaluate`` load (not timings)."""
from __future__ import annotations

import json
import subprocess
import sys

from hoi_mllm.cli import COMMANDS

HEAVY = ("torch", "transformers", "peft", "accelerate", "ultralytics", "bitsandbytes", "datasets", "matplotlib", "scipy")


def loaded_after(code: str) -> set[str]:
    """Top-level packages of ``HEAVY`` that a fresh interpreter has imported after running ``code``."""
    script = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_bare_import_loads_no_heavy_package_and_exports_resolve_lazily():
    assert loaded_after("import hoi_mllm") == set()
    assert loaded_after("from hoi_mllm import HOITriplets, PredictionsFile, read_predictions") == set()
    assert "torch" in loaded_after("from hoi_mllm import propose_pairs")  # pair proposal works on tensors
    import hoi_mllm

    for name in hoi_mllm.EXPORTS:
        assert getattr(hoi_mllm, name) is not None and name in dir(hoi_mllm)


def test_every_help_loads_no_heavy_package():
    helps = [[name, "--help"] for name in COMMANDS] + [["evaluate", p, "--help"] for p in ("hico-det", "vcoco")]
    code = ("import contextlib, io\nfrom hoi_mllm.cli import main\n"
            f"for argv in {helps!r} + [['--help']]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n")
    assert loaded_after(code) == set()


def test_evaluate_never_imports_torch_or_transformers(tmp_path):
    from hoi_mllm.predictions import PredictionsFile, write_predictions
    from hoi_mllm.prompts import load_vocabulary
    from hoi_mllm.records import HOITriplets

    vocab = load_vocabulary("hico-det")
    ride, bike = vocab.verb_index("ride"), vocab.object_index("bicycle")
    h, o = [10.0, 10.0, 60.0, 120.0], [5.0, 60.0, 90.0, 130.0]
    ann = {"annotation": [{"boxes_h": [h], "boxes_o": [o], "object": [bike], "verb": [ride],
                           "hoi": [vocab.class_of(ride, bike)]}],
           "filenames": ["HICO_test2015_00000001.jpg"], "size": [[640, 480]]}
    annotations = tmp_path / "instances_test2015.json"
    annotations.write_text(json.dumps(ann))
    preds = write_predictions(tmp_path / "p.json", PredictionsFile("hico-det", [HOITriplets.create(
        [h], [o], [bike], [ride], [0.9], "HICO_test2015_00000001.jpg")]))
    code = ("from hoi_mllm.cli import main\n"
            f"assert main(['evaluate', 'hico-det', '--annotations', {str(annotations)!r}, '--predictions', "
            f"{str(preds)!r}, '--json', {str(tmp_path / 'r.json')!r}, '--no-progress']) == 0\n")
    loaded = loaded_after(code)
    assert json.loads((tmp_path / "r.json").read_text())["default"]["full"] > 0  # it did evaluate
    assert not loaded & {"torch", "transformers"}, loaded


def test_the_parsers_copies_of_the_library_choices_agree():
    """``cli/detect.py`` repeats a few choice lists so that ``--help`` loads no torch; they must not drift."""
    from hoi_mllm import pairs, pipeline_config, postprocess
    from hoi_mllm.cli import detect

    assert detect.SELECTIONS == pairs.SELECTIONS
    assert detect.NO_INTERACTION_CAPS == postprocess.NO_INTERACTION_CAPS
    assert detect.MODES == pipeline_config.MODES
