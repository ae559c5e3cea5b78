"""What a run records: a JSON Lines history, TensorBoard scalars and the loss-curve picture.

``RUN/history.jsonl`` holds one row per logged step (``{"step", "loss", "verb", "distill", "inter",
"lr", ...}``) and one per evaluation (``{"step", "eval": {...}}``); on resume the rows after the
checkpoint's step are dropped, so the history always describes the run that produced the weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from hoi_mllm.io import atomic_path, atomic_write_text

LOSS_KEYS = ("loss", "verb", "distill", "inter")


class RunMonitor:
    """History, TensorBoard and the loss curve of one run (the main process only writes).

    ``purge_step``: on resume, the checkpoint's step + 1; TensorBoard then drops the events an
    interrupted run wrote from that step on, so no step appears twice (as :meth:`resume` does for
    the history).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "history.jsonl"
        self.enabled = enabled
        self.rows: list[dict] = []
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)

    def resume(self, step: int) -> None:
        """Keep the rows up to ``step`` (a checkpoint's), drop the rest."""
        if self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if int(r.get("step", 0)) <= step]
        self._rewrite()

    def start_fresh(self) -> None:
        self.rows = []
        self._rewrite()

    def _rewrite(self) -> None:
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, step: int, values: dict) -> None:
        """Record a row of scalars (and send them to TensorBoard under ``train/``)."""
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        self._append(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", float(v), step)

    def log_eval(self, step: int, metrics: dict) -> None:
        self._append({"step": int(step), "eval": metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and v is not None:
                    self.writer.add_scalar(f"eval/{k}", float(v), step)

    def _append(self, row: dict) -> None:
        self.rows.append(row)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def loss_curve(self, path: Path | None = None) -> Path | None:
        """Draw the loss terms (and evaluation mAP, when any) against the step; return the PNG's path."""
        train = [r for r in self.rows if "loss" in r]
        if not self.enabled or not train:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path or self.run_dir / "loss_curve.png")
        evals = [r for r in self.rows if "eval" in r]
        fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
        ax = axes[0, 0]
        steps = [r["step"] for r in train]
        for key in LOSS_KEYS:
            ax.plot(steps, [r.get(key, float("nan")) for r in train], label=key, lw=2 if key == "loss" else 1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
        if evals:
            ax = axes[0, 1]
            for key in ("full", "seen", "unseen"):
                pts = [(r["step"], r["eval"][key]) for r in evals if r["eval"].get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=key)
            ax.set_xlabel("step")
            ax.set_ylabel("mAP (held-out, GT boxes)")
            ax.set_title("evaluation")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return path
