"""Inference over several processes: one shard of the predictions log per process, merged at the end.

Under ``accelerate launch --num_processes N -m hoi_mllm detect ...`` (one GPU each; any launcher
that sets ``RANK`` / ``WORLD_SIZE``), :class:`ShardedPredictions` gives process ``r`` of ``N``:

- the images still to do: those in no log yet (``OUTPUT/predictions.jsonl`` nor any shard), every
  ``N``-th of them starting at ``r``;
- its own resumable log ``OUTPUT/shards/rank-<r>-of-<N>.jsonl`` (a
  :class:`~hoi_mllm.predictions.PredictionsWriter`: torn last line dropped on resume);

and :meth:`ShardedPredictions.merge` (process 0, after every process finished) folds every shard
and the existing ``predictions.jsonl`` into ``predictions.jsonl`` and ``predictions.json``
(atomically, in the order of the inputs), then removes the shards. Resuming works per shard, and
after a change of the process count: shards of another count are read as finished work (their
images are not redone) and merged too. A log written with other settings is refused, naming what
differs (``force`` starts everything afresh). One process (no launcher) is the same with ``N = 1``,
writing ``predictions.jsonl`` directly.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from hoi_mllm.io import atomic_write_json, read_json
from hoi_mllm.predictions import PredictionsFile, PredictionsWriter, read_predictions, write_predictions

log = logging.getLogger(__name__)

SHARDS = "shards"


class SettingsMismatch(ValueError):
    """A log in the output folder was written with other settings."""


def process_index() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from the launcher's environment (``(0, 1, 0)`` without one)."""
    rank = int(os.environ.get("RANK", os.environ.get("PROCESS_INDEX", 0)) or 0)
    world = int(os.environ.get("WORLD_SIZE", 1) or 1)
    local = int(os.environ.get("LOCAL_RANK", rank) or 0)
    return rank, world, local


def process_group():
    """``(rank, world size, state)``: ``state`` an accelerate ``PartialState`` (its ``wait_for_everyone`` the
    barrier; gloo between CPU processes, else NCCL) under a multi-process launcher, else ``None``."""
    rank, world, _ = process_index()
    if world == 1:
        return rank, world, None
    import torch
    from accelerate import PartialState

    return rank, world, PartialState(cpu=not torch.cuda.is_available())


def header_settings(path: Path) -> dict | None:
    """The ``settings`` of a log's header line (None when absent or unreadable)."""
    try:
        with open(path) as f:
            return json.loads(f.readline()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


def check_settings(path: Path, settings: dict) -> None:
    """Raise :class:`SettingsMismatch` when ``path`` (a log) holds predictions made with other settings."""
    if not path.exists() or path.stat().st_size == 0:
        return
    old = header_settings(path)
    if old is None or old == settings:
        return
    changed = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(settings) | set(old))
                        if old.get(k) != settings.get(k))
    raise SettingsMismatch(f"{path} holds predictions made with other settings ({changed}); use another --output, "
                           "or --force to start it afresh")


class ShardedPredictions:
    """This process's share of a sharded predictions run (see the module docstring).

    Args:
        folder: the output folder.
        vocabulary: the vocabulary name of the predictions.
        meta: header of the logs (must hold ``settings``, compared on resume).
        rank, world: this process and the process count.
        force: start afresh (removes the shards and the previous log) instead of refusing other settings.
    """

    def __init__(self, folder: str | Path, vocabulary: str, meta: dict, rank: int = 0, world: int = 1,
                 force: bool = False):
        self.folder = Path(folder)
        self.vocabulary, self.meta, self.rank, self.world = vocabulary, dict(meta), rank, world
        self.main = self.folder / "predictions.jsonl"
        self.shard_dir = self.folder / SHARDS
        settings = self.meta.get("settings", {})
        logs = [self.main] + sorted(self.shard_dir.glob("rank-*.jsonl"))
        own = self.main if world == 1 else self.shard_dir / f"rank-{rank}-of-{world}.jsonl"
        peers = {self.shard_dir / f"rank-{r}-of-{world}.jsonl" for r in range(world)} if world > 1 else set()
        if force:  # each process restarts its own log; process 0 removes the rest (never a peer's live shard)
            if rank == 0:
                for path in logs:
                    if path != own and path not in peers:
                        path.unlink(missing_ok=True)
                for path in self.shard_dir.glob("notes-*.json"):
                    path.unlink(missing_ok=True)
            logs = []  # nothing counts as done: every process sees the same (empty) set
        else:
            for path in logs:
                check_settings(path, settings)
        self.others = [p for p in logs if p != own and p.exists()]
        self.done_elsewhere: set[str] = set()
        for path in self.others:
            try:
                self.done_elsewhere |= {im.file_name for im in read_predictions(path).images}
            except ValueError as exc:  # another process may be rewriting its shard right now: never fatal here
                log.warning("could not read %s (%s); its images count as not done", path, exc)
        self.writer = PredictionsWriter(own, vocabulary, meta=self.meta, resume=not force)

    @property
    def done(self) -> set[str]:
        return self.writer.done | self.done_elsewhere

    def todo(self, names: Sequence[str]) -> list[str]:
        """This process's share of ``names`` not done anywhere: every ``world``-th, from ``rank``.

        Every process must have opened its log before any writes (a barrier): then all see the same
        finished set and the shares do not overlap."""
        left = [n for n in names if n not in self.done]
        return left[self.rank::self.world]

    def write_notes(self, notes: dict) -> None:
        """This process's notes (skipped images ...) beside its shard, for the merge."""
        atomic_write_json(self.shard_dir / f"notes-{self.rank}-of-{self.world}.json", notes)

    def close(self) -> None:
        self.writer.close()

    def merge(self, order: Sequence[str], json_path: str | Path | None = None) -> PredictionsFile:
        """Fold every shard (and the previous log) into ``predictions.jsonl`` and ``json_path`` (process 0,
        once every process has closed its shard); the shards are removed after the merged files exist."""
        self.close()
        images, meta = {}, dict(self.meta)
        for path in [self.main] + sorted(self.shard_dir.glob("rank-*.jsonl")):
            if path.exists() and path.stat().st_size:
                for im in read_predictions(path).images:
                    images[im.file_name] = im
        notes = sorted(self.shard_dir.glob("notes-*.json"))
        for path in notes:
            for key, values in read_json(path).items():
                meta.setdefault(key, [])
                meta[key] += [v for v in values if v not in meta[key]]
        rank = {n: i for i, n in enumerate(order)}
        ordered = sorted(images.values(), key=lambda im: rank.get(im.file_name, len(rank)))
        result = PredictionsFile(self.vocabulary, ordered, meta)
        write_predictions(self.main, result)  # atomically
        if json_path is not None:
            write_predictions(json_path, result)
        if self.shard_dir.exists():
            shutil.rmtree(self.shard_dir)
        return result
