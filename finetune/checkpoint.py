"""Checkpoints of a run: everything needed to continue exactly where it stopped.

``RUN/checkpoints/step_0000100/``::

    trainable.safetensors   every trainable weight (LoRA, SAP, special embeddings, projector, ...)
    optimizer.pt            optimiser and scheduler state
    rng_<rank>.pt           Python, NumPy, torch (CPU and CUDA) generators and the recogniser's
                            candidate-shuffle generator, per process
    teacher.pt              the teacher's state (the EMA weights), when it has one
    trainer_state.json      step, data position (global batch index), base-model fingerprint,
                            the config; written last: a folder without it is incomplete and ignored

A checkpoint is written into a temporary folder and renamed into place; the last
``train.keep_checkpoints`` are kept.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hoi_mllm.io import atomic_write_json, read_json

STATE_NAME = "trainer_state.json"
PREFIX = "step_"


class CheckpointError(ValueError):
    """A checkpoint cannot continue this run (another base model, other trainable weights, another process
    count, missing files), or a fresh run would start among an old run's checkpoints."""


@dataclass
class Checkpoint:
    """A complete checkpoint folder and its ``trainer_state.json``."""

    path: Path
    state: dict

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_NAME).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    if not found:
        return None
    return Checkpoint(found[-1], read_json(found[-1] / STATE_NAME, "checkpoint state"))


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every random generator of this process (and ``generator``'s)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_checkpoint(run_dir: Path, step: int, trainable: dict[str, torch.Tensor], optimizer, scheduler,
                    trainer_state: dict, teacher_state: dict | None = None, keep: int = 2) -> Path:
    """Write the main process's part of a checkpoint into the staging folder (where every process has
    put its ``rng_<rank>.pt``), rename it into place and drop checkpoints beyond the last ``keep``."""
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir) / f"{PREFIX}{step:07d}"
    tmp = staging_dir(run_dir, step)
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    if teacher_state:
        torch.save(teacher_state, tmp / "teacher.pt")
    atomic_write_json(tmp / STATE_NAME, {**trainer_state, "step": step})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def staging_dir(run_dir: Path, step: int) -> Path:
    """The temporary folder a checkpoint is assembled in before it is renamed into place."""
    return checkpoint_dir(run_dir) / f".{PREFIX}{step:07d}.tmp"


def save_rng(run_dir: Path, step: int, rank: int, generator: torch.Generator | None) -> None:
    """Each process writes its generators into the staging folder, before the main process completes it."""
    folder = staging_dir(run_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(generator), folder / f"rng_{rank}.pt")


def load_checkpoint(ckpt: Checkpoint, model: torch.nn.Module, optimizer, scheduler, rank: int = 0,
                    generator: torch.Generator | None = None) -> tuple[dict | None, dict]:
    """Restore trainable weights, optimiser, scheduler and this process's generators.

    Returns ``(teacher_state or None, trainer_state)``.
    Raises:
        CheckpointError: the checkpoint's trainable weights are not this model's.
    """
    from safetensors.torch import load_file

    weights = load_file(str(ckpt.path / "trainable.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{ckpt.path} holds other trainable weights than this run (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); was it written with another adapter or recogniser config?")
    with torch.no_grad():
        for n, p in params.items():
            if tuple(weights[n].shape) != tuple(p.shape):
                raise CheckpointError(f"{ckpt.path}: weight {n} is {tuple(weights[n].shape)}, this model's is "
                                      f"{tuple(p.shape)}")
            p.copy_(weights[n].to(p.device, p.dtype))
    opt = torch.load(ckpt.path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    rng_file = ckpt.path / f"rng_{rank}.pt"
    if not rng_file.is_file():
        raise CheckpointError(f"{ckpt.path} has no random state for process {rank} (written with fewer processes?)")
    set_rng_state(torch.load(rng_file, weights_only=False), generator)
    teacher = ckpt.path / "teacher.pt"
    return (torch.load(teacher, map_location="cpu", weights_only=False) if teacher.is_file() else None), ckpt.state


def check_base(ckpt: Checkpoint, fingerprint: dict) -> None:
    """Raise :class:`CheckpointError` when the checkpoint was trained from another base model.

    Only the keys both fingerprints have are compared, so a cheap early check (the config's
    names) and the full check (after the model is built) share this function.
    """
    saved = ckpt.state.get("base_model", {})
    diff = {k: (saved[k], v) for k, v in fingerprint.items() if k in saved and saved[k] != v}
    if diff:
        text = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"checkpoint {ckpt.path} was trained from another base model ({text}); "
                              "resume with the config it was written with, or start a new run folder")


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{key}")
    return out
