"""Precision-recall curves of the best and worst classes, as PNG (matplotlib, Agg canvas).

Uses matplotlib's object API with an Agg canvas, so it never touches the global backend and runs
headless. Files are written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hoi_mllm.io import atomic_path


def rank_classes(ap: np.ndarray, curves: dict[int, tuple[np.ndarray, np.ndarray]], n: int) -> tuple[list[int], list[int]]:
    """The ``n`` classes of highest and of lowest AP among those with a curve (ties: lower id first).

    Args:
        ap: ``[C]`` AP per class (NaN for classes without ground truth, which are never ranked).
        curves: class -> ``(recall [N], precision [N])``.
        n: how many of each.
    Returns:
        ``(best, worst)``: class ids, best first / worst first.
    """
    ids = [c for c in sorted(curves) if np.isfinite(ap[c])]
    by_ap = sorted(ids, key=lambda c: (-ap[c], c))
    worst = sorted(ids, key=lambda c: (ap[c], c))
    return by_ap[:n], worst[:n]


def plot_curves(classes: Sequence[int], ap: np.ndarray, curves: dict[int, tuple[np.ndarray, np.ndarray]],
                names: Sequence[str], title: str, path: str | Path) -> Path:
    """One PNG with the precision-recall curve of each class in ``classes``, AP (%) in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for c in classes:
        rec, prec = curves[c]
        # a step curve: precision after each ranked detection, starting from recall 0
        ax.step(np.r_[0.0, rec], np.r_[prec[:1] if len(prec) else [0.0], prec], where="post",
                label=f"{names[c]} (AP {100 * ap[c]:.1f})")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if classes:
        ax.legend(loc="lower left", fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_best_worst(ap: np.ndarray, curves: dict[int, tuple[np.ndarray, np.ndarray]], names: Sequence[str],
                    out_dir: str | Path, n: int = 5, prefix: str = "") -> list[Path]:
    """Write ``{prefix}pr_best.png`` and ``{prefix}pr_worst.png`` (``n`` classes each) under ``out_dir``."""
    best, worst = rank_classes(ap, curves, n)
    out_dir = Path(out_dir)
    label = prefix.strip("_").replace("_", " ")
    label = f"{label}: " if label else ""
    return [plot_curves(best, ap, curves, names, f"{label}{len(best)} best classes", out_dir / f"{prefix}pr_best.png"),
            plot_curves(worst, ap, curves, names, f"{label}{len(worst)} worst classes", out_dir / f"{prefix}pr_worst.png")]
