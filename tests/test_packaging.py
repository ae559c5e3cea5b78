"""Packaging: the mapped subpackages import from an editable install and from a built wheel."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> import name, as pyproject.toml maps them
MAPPED = {"hoi_mllm": "hoi_mllm", "detectors": "hoi_mllm.detectors", "prompts": "hoi_mllm.prompts",
          "finetune": "hoi_mllm.finetune", "eval": "hoi_mllm.eval"}
IMPORT = ("import json, hoi_mllm, hoi_mllm.detectors, hoi_mllm.prompts, hoi_mllm.finetune, hoi_mllm.eval; "
          "from hoi_mllm.prompts import load_vocabulary; v = load_vocabulary('hico-det'); "
          "print(json.dumps({'files': [m.__file__ for m in (hoi_mllm, hoi_mllm.detectors, hoi_mllm.prompts, "
          "hoi_mllm.finetune, hoi_mllm.eval)], 'classes': v.num_classes, 'objects': v.num_objects}))")


def source_packages() -> list[str]:
    """Import names of every package folder (with ``__init__.py``) in the mapped source folders."""
    names = []
    for folder, name in MAPPED.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / folder)
            if "__pycache__" not in rel.parts:
                names.append(".".join([name, *rel.parts]))
    return names


def run_python(code: str, cwd: Path, pythonpath: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editable_install_imports_the_mapped_subpackages(tmp_path):
    got = run_python(IMPORT, cwd=tmp_path)  # outside the repository: the installed package, not the cwd
    assert [Path(f).parent for f in got["files"]] == [REPO / f for f in MAPPED]
    assert got["classes"] > 0 and got["objects"] > 0


@pytest.mark.slow
def test_wheel_contains_and_imports_the_mapped_subpackages(tmp_path):
    src = tmp_path / "src"  # build from a copy: no build/ or egg-info left in the working tree
    src.mkdir()
    for name in ["pyproject.toml", "README.md", "LICENSE", *MAPPED]:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(src),
                            "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    wheel = next(dist.glob("hoi_mllm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("hoi_mllm/detectors/__init__.py", "hoi_mllm/prompts/data/hico_det.json",
                     "hoi_mllm/prompts/data/vcoco.json", "hoi_mllm/prompts/data/coco.json",
                     "hoi_mllm/eval/__init__.py", "hoi_mllm/finetune/__init__.py", "hoi_mllm/cli/__init__.py"):
        assert required in names, required
    missing = [p for p in source_packages() if p.replace(".", "/") + "/__init__.py" not in names]
    assert not missing, f"packages not in the wheel (add them to pyproject.toml's packages list): {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hoi-mllm = hoi_mllm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    got = run_python(IMPORT, cwd=tmp_path, pythonpath=str(site))
    for f in got["files"]:
        assert Path(f).is_relative_to(site), f  # imported from the wheel, not the editable checkout
    assert got["classes"] > 0
    cli = subprocess.run([sys.executable, "-m", "hoi_mllm", "detections", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site)})
    assert cli.returncode == 0 and "--detector" in cli.stdout
