"""The one append-only JSON Lines log: a header line, then one entry a line, flushed and synced each.

Both run logs of the project are this class: the predictions of ``detect`` / ``cross-detector``
(:class:`~hoi_mllm.predictions.PredictionsWriter`) and the detections cache of the runner
(:class:`~hoi_mllm.eval.detection_cache.DetectionCache`). What differs is given as functions:

- ``accept(old_header) -> bool``: may the entries of an existing file be kept? (False: start
  afresh; raise to refuse, e.g. a file written with other settings);
- ``parse(raw, where) -> (key, value)``: one entry line, decoded (raise ``ValueError`` when it is
  not an entry);
- ``keep(key, value) -> bool``: drop entries that are no longer valid (e.g. an image file changed).

On opening, a torn last line (a writer killed mid-write: not JSON, or not an entry) is dropped with
a warning; a bad line elsewhere is an error naming the file and line. A later line for the same key
supersedes an earlier one. The file is then rewritten cleanly (atomically) and appended to.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from hoi_mllm.io import atomic_path

log = logging.getLogger(__name__)


class LogError(ValueError):
    """A JSON Lines log is malformed; the message names the file and line."""


def read_log(path: str | Path, parse: Callable[[dict, str], tuple[str, Any]]) -> tuple[dict | None, dict[str, Any]]:
    """``(header, entries by key)`` of a log file; ``(None, {})`` when absent, empty or headerless-torn.

    Raises:
        LogError: a line other than the last is not an entry.
    """
    path = Path(path)
    if not path.is_file():
        return None, {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return None, {}
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        if len(lines) == 1 and not complete:  # killed while writing the header
            return None, {}
        raise LogError(f"{path}: line 1 (the header) is not a JSON object ({exc})") from exc
    entries: dict[str, Any] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        last = n == len(lines)
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            key, value = parse(raw, f"{path}:{n}")
        except ValueError as exc:  # JSONDecodeError is a ValueError
            if last:
                log.warning("%s: dropping its last line %d, cut short (an interrupted writer)", path, n)
                break
            raise LogError(f"{path}: line {n} is not a valid entry ({exc}); remove the file to start afresh") from exc
        entries[key] = value
    return header, entries


class JsonlLog:
    """An append-only, resumable JSON Lines log of entries keyed by a string (see the module docstring).

    Args:
        path: the ``.jsonl`` file (its folder is created).
        header: the first line written.
        parse: ``(raw dict, where) -> (key, value)`` for an entry line.
        dump: ``value -> dict`` for an entry line (its key must come back through ``parse``).
        accept: ``old header -> bool``; default: keep an existing file's entries always.
        keep: ``(key, value) -> bool``; entries failing it are dropped on opening.
        resume: False: start afresh whatever the file holds.
        writable: False: only read the file (never rewritten; :meth:`append` refuses), e.g. a log
            another process owns.
    """

    def __init__(self, path: str | Path, header: Mapping, parse: Callable[[dict, str], tuple[str, Any]],
                 dump: Callable[[Any], dict], *, accept: Callable[[dict], bool] | None = None,
                 keep: Callable[[str, Any], bool] | None = None, resume: bool = True, writable: bool = True):
        self.path = Path(path)
        self.header = dict(header)
        self._dump = dump
        self.entries: dict[str, Any] = {}
        self.resumed_header: dict | None = None
        if resume:
            old, entries = read_log(self.path, parse)
            if old is not None and (accept is None or accept(old)):
                self.resumed_header = old
                self.entries = {k: v for k, v in entries.items() if keep is None or keep(k, v)}
        self._file = None
        if not writable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:  # rewrite cleanly: drops a torn line and superseded entries
            with open(tmp, "w") as f:
                f.write(json.dumps(self.header, default=str) + "\n")
                for value in self.entries.values():
                    f.write(json.dumps(dump(value), allow_nan=False) + "\n")
        self._file = open(self.path, "a")

    @property
    def done(self) -> set[str]:
        return set(self.entries)

    def append(self, key: str, value: Any) -> None:
        """Write one entry (flushed and synced before returning) and keep it under ``key``."""
        if self._file is None:
            raise RuntimeError(f"{self.path} was opened read-only")
        self._file.write(json.dumps(self._dump(value), allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries[key] = value

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
