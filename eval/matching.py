"""Batched matching primitives shared by the evaluators: no Python loop over detections.

Every official protocol here (ho-rcnn's ``VOCevaldet_bboxpair.m`` for HICO-DET, ``vsrl_eval.py``
for V-COCO) walks the detections of a class one by one in score order, compares each with the
ground truth of its image, takes the single best ground truth (the first one on ties) and marks it
a true positive only if that ground truth is not taken yet. Two facts make this vectorisable:

1. the best ground truth of a detection does not depend on which ground truths are already taken
   (the official code never falls back to the second best), and
2. a ground truth is taken exactly by the first detection (in score order) that hits it.

So: expand every detection against the ground truths sharing its key (:func:`expand_by_key`),
take the first arg-max per detection (:func:`segment_argmax`), and keep the first hit of each
ground truth (:func:`first_in_group`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Candidates:
    """Detection x ground-truth candidate rows, grouped by detection.

    Attributes:
        query: ``[E]`` int64 index of the detection (query) of each candidate row.
        target: ``[E]`` int64 index of the ground truth (target, in the sorted target order).
        start: ``[Q]`` int64 first candidate row of each query.
        count: ``[Q]`` int64 number of candidate rows of each query (0: no target shares its key).
    """

    query: np.ndarray
    target: np.ndarray
    start: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return int(self.query.shape[0])


def expand_by_key(query_keys: np.ndarray, target_keys: np.ndarray) -> Candidates:
    """Pair each query with every target of the same key.

    Args:
        query_keys: ``[Q]`` int64 keys (e.g. ``image * num_classes + class``).
        target_keys: ``[G]`` int64 keys, sorted ascending (targets of one key keep their order).
    Returns:
        :class:`Candidates` with ``E = sum(count)`` rows, queries in input order and, within a
        query, targets in their sorted order.
    """
    lo = np.searchsorted(target_keys, query_keys, side="left")  # [Q]
    count = np.searchsorted(target_keys, query_keys, side="right") - lo  # [Q]
    start = np.cumsum(count) - count  # [Q]
    query = np.repeat(np.arange(query_keys.shape[0], dtype=np.int64), count)  # [E]
    target = lo[query] + (np.arange(query.shape[0], dtype=np.int64) - start[query])  # [E]
    return Candidates(query, target, start, count)


def segment_argmax(values: np.ndarray, cand: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Best value of each query's candidate rows and the first row that attains it.

    Args:
        values: ``[E]`` float, one per candidate row (e.g. ``min(IoU_h, IoU_o)``); NaN counts as -inf.
        cand: the grouping.
    Returns:
        ``best [Q]`` float64 (``-inf`` where a query has no candidate) and ``row [Q]`` int64, the
        candidate row of the first maximum (``-1`` where none), as ``argmax`` picks on ties.
    """
    q = cand.count.shape[0]
    best = np.full(q, -np.inf)
    row = np.full(q, -1, dtype=np.int64)
    has = cand.count > 0
    if not has.any():
        return best, row
    values = np.where(np.isnan(values), -np.inf, values)
    starts = cand.start[has]  # non-empty segments, contiguous, so reduceat sees each one whole
    best[has] = np.maximum.reduceat(values, starts)
    e = values.shape[0]
    at_max = np.where(values == best[cand.query], np.arange(e), e)  # [E]
    row[has] = np.minimum.reduceat(at_max, starts)
    return best, row


def first_in_group(group: np.ndarray, score: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``[N]`` bool: True for the first element of each group in (score descending, position) order.

    Args:
        group: ``[N]`` int64 group id (e.g. the ground truth a detection hits).
        score: ``[N]`` float detection scores.
        position: ``[N]`` int64 tie-breaker (smaller first).
    """
    n = group.shape[0]
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    order = np.lexsort((position, -score, group))  # by group, then score desc, then position
    g = group[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    out[order[first]] = True
    return out


def _row_hash(columns: Sequence[np.ndarray]) -> np.ndarray:
    """``[N]`` uint64 hash of each row of aligned numeric columns (equal rows, equal hashes)."""
    h = np.full(columns[0].shape[0], 0xCBF29CE484222325, dtype=np.uint64)
    for col in columns:
        bits = ((col + 0.0) if col.dtype.kind == "f" else col.astype(np.int64)).astype(
            np.float64 if col.dtype.kind == "f" else np.int64).view(np.uint64)  # + 0.0: -0.0 hashes as 0.0
        h ^= bits
        h *= np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    return h


def group_rows(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group identical rows of aligned columns.

    Args:
        columns: ``K`` arrays of ``[N]`` values (the first one is the coarsest key, e.g. the image).
    Returns:
        ``order [N]`` (rows sorted so that identical rows are adjacent, by the first column first)
        and ``group [N]`` (group id of each sorted row, 0..G-1, ascending).

    Rows are sorted by the first column and a hash of the rest (two keys instead of ``K``); should
    two different rows share a hash, the rows are sorted by every column instead.
    """
    n = columns[0].shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = _row_hash(columns[1:]) if len(columns) > 1 else np.zeros(n, dtype=np.uint64)
    order = np.lexsort((h, columns[0]))
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for col in columns:
        c = col[order]
        new[1:] |= c[1:] != c[:-1]
    hs, first = h[order], columns[0][order]
    distinct_keys = 1 + int(((hs[1:] != hs[:-1]) | (first[1:] != first[:-1])).sum())
    if distinct_keys != int(new.sum()):  # a hash shared by different rows: sort by every column
        order = np.lexsort(columns[::-1])
        new[:] = False
        new[0] = True
        for col in columns:
            c = col[order]
            new[1:] |= c[1:] != c[:-1]
    return order, np.cumsum(new) - 1
