"""Stage bookkeeping: each stage of the demo records what it was run with and what it wrote, so a
rerun skips what is done and an interrupted stage picks up where it stopped.

In the output folder, per stage ``NAME``::

    stage_NAME.json          written atomically, only after the stage's outputs are complete:
                             {"stage", "params", "outputs", "info", "seconds", "finished", "resumed", "version"}
    stage_NAME.partial.json  written when the stage starts, removed when it finishes: the params of
                             a run in progress (an interrupted run leaves it behind)

:meth:`StageBook.run` decides, per stage:

- *skip*: ``stage_NAME.json`` exists, its params equal the wanted ones and every output it names
  still exists (``force`` never skips);
- *resume*: not skipped, but the last start of this stage (``partial``, or the finished record whose
  outputs went missing) had the same params: the stage function is told ``resume=True`` and keeps
  its partial work (the trainer's checkpoints, the evaluation caches);
- *fresh*: anything else (other params, ``force``, nothing there): the stage's own folders are
  removed first, so nothing stale survives.

Params of a stage include the digests of the records it depends on (:meth:`StageRecord.digest`),
so running a stage again invalidates the stages after it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from hoi_mllm.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

RECORD_VERSION = 1


@dataclass
class StageRecord:
    """What one finished stage ran with and produced.

    Attributes:
        stage: the stage name; version: the record format.
        params: everything that determines the outputs (JSON values).
        outputs: name -> path relative to the output folder of each file or folder it wrote.
        info: numbers worth reporting (counts, metrics); not compared.
        seconds: wall time of the run that produced it (of its last part, when it was resumed);
            finished: ISO time it finished; resumed: it continued an interrupted run's work.
    """

    stage: str
    params: dict
    outputs: dict[str, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""
    resumed: bool = False
    version: int = RECORD_VERSION

    def digest(self) -> str:
        """A short sha256 of params, outputs and finishing time: what a later stage's params refer to, so
        that running a stage again (even with the same params) makes the stages after it run again."""
        text = json.dumps({"params": self.params, "outputs": self.outputs, "finished": self.finished},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def path(self, root: Path, name: str) -> Path:
        """The absolute path of output ``name``."""
        return Path(root) / self.outputs[name]

    @classmethod
    def from_dict(cls, data: dict) -> "StageRecord":
        return cls(**{k: data[k] for k in ("stage", "params", "outputs", "info", "seconds", "finished", "resumed",
                                                    "version")
                      if k in data})


@dataclass
class StageRun:
    """The outcome of :meth:`StageBook.run`: the record and how it came about (``skipped``, ``resumed``)."""

    record: StageRecord
    skipped: bool
    resumed: bool
    seconds_now: float


def _normal(params: dict) -> dict:
    """Params as they read back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(params, default=str))


class StageBook:
    """The stage records of one output folder.

    Args:
        root: the output folder.
        force: redo every stage from nothing, whatever is recorded.
    """

    def __init__(self, root: str | Path, force: bool = False):
        self.root = Path(root)
        self.force = force

    def record_path(self, name: str) -> Path:
        return self.root / f"stage_{name}.json"

    def partial_path(self, name: str) -> Path:
        return self.root / f"stage_{name}.partial.json"

    def load(self, name: str) -> StageRecord | None:
        """The finished record of stage ``name``, or None (absent, unreadable or of another version)."""
        path = self.record_path(name)
        if not path.is_file():
            return None
        try:
            data = read_json(path, what=f"stage record {name}")
            record = StageRecord.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring stage record %s: %s", path, exc)
            return None
        return record if record.version == RECORD_VERSION and record.stage == name else None

    def missing_outputs(self, record: StageRecord) -> list[str]:
        """Outputs a record names that are not on disk."""
        return [rel for rel in record.outputs.values() if not (self.root / rel).exists()]

    def valid(self, name: str, params: dict) -> StageRecord | None:
        """The record of ``name`` when it can be reused as is: same params, every output there."""
        record = self.load(name)
        if record is None or record.params != _normal(params):
            return None
        missing = self.missing_outputs(record)
        if missing:
            log.warning("stage %s: outputs missing (%s); running it again", name, ", ".join(missing[:3]))
            return None
        return record

    def _started_with(self, name: str) -> dict | None:
        for path in (self.partial_path(name), self.record_path(name)):
            if path.is_file():
                try:
                    return read_json(path).get("params")
                except (ValueError, AttributeError):
                    continue
        return None

    def run(self, name: str, params: dict, fn: Callable[[bool], tuple[dict, dict]],
            folders: Sequence[str] = ()) -> StageRun:
        """Skip, resume or run stage ``name`` (see the module docstring).

        Args:
            params: what determines the outputs (JSON values).
            fn: ``fn(resume) -> (outputs, info)``: does the work; ``outputs`` maps names to paths
                relative to the output folder (checked to exist afterwards).
            folders: the stage's own folders (relative), removed before a fresh run.
        Returns:
            :class:`StageRun`.
        """
        params = _normal(params)
        if not self.force:
            record = self.valid(name, params)
            if record is not None:
                log.info("stage %s: done before with the same parameters, reused (%.1f s then)", name, record.seconds)
                return StageRun(record, skipped=True, resumed=False, seconds_now=0.0)
        started = self._started_with(name)
        resume = not self.force and started == params
        if not resume:
            self._clear(name, folders, ours=started is not None)
        self.record_path(name).unlink(missing_ok=True)  # from here on the old record is not valid
        atomic_write_json(self.partial_path(name), {"stage": name, "params": params,
                                                    "started": _now(), "resume": resume})
        start = time.perf_counter()
        outputs, info = fn(resume)
        seconds = time.perf_counter() - start
        record = StageRecord(name, params, {k: str(v) for k, v in outputs.items()}, _normal(info), seconds, _now(),
                             resume)
        missing = self.missing_outputs(record)
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {', '.join(missing)}")
        atomic_write_json(self.record_path(name), asdict(record))
        self.partial_path(name).unlink(missing_ok=True)
        return StageRun(record, skipped=False, resumed=resume, seconds_now=seconds)


    def _clear(self, name: str, folders: Sequence[str], ours: bool) -> None:
        """Remove a stage's folders before a fresh run; only those this stage wrote (it has a record)."""
        for rel in folders:
            target = (self.root / rel).resolve()
            if self.root.resolve() not in target.parents:
                raise ValueError(f"stage {name}: refusing to remove {target}, outside {self.root}")
            if not target.exists():
                continue
            if not ours:
                raise ValueError(f"{target} exists but was not written by this stage ({name}; no "
                                 f"{self.record_path(name).name} beside it): choose another output folder, or "
                                 "remove it yourself")
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- disk space
class DiskSpaceError(OSError):
    """Not enough free disk space for the demo's files; the message names the folder and both amounts."""


def world_bytes(num_images: int, image_size: int) -> int:
    """A generous estimate of the disk use of a synthetic world of PNG images: about 90 kB per
    256x256 image (measured: about 60 kB), scaled with the pixel count, plus annotations."""
    per_image = 90_000 * (image_size / 256) ** 2 + 4_000  # image + annotation rows + rendering record
    return int(num_images * per_image)


def check_disk_space(folder: str | Path, needed: int) -> int:
    """Raise :class:`DiskSpaceError` when the file system of ``folder`` has less than ``needed`` bytes free.

    ``folder`` need not exist yet (its nearest existing parent is measured). Returns the free bytes.
    """
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(f"not enough disk space in {folder}: the demo needs about {_size(needed)} for its images, "
                             f"models and reports, and {_size(free)} is free; free some space, choose another "
                             "--output folder, or make the world smaller (train_images=..., test_images=...)")
    return free


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"
