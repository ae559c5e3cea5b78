"""The demo's five stages, end to end, each recorded, skippable and resumable (:mod:`.stages`).

1. ``world``     generate the synthetic world (train and test; its unseen-combination split)
2. ``yolo``      train a small ultralytics YOLO on the world's training images (:mod:`.yolo_training`)
3. ``finetune``  fine-tune the tiny recogniser with the real trainer and the synthetic recipe
4. ``evaluate``  the recogniser under ``ground-truth``, the trained ``yolo`` and ``jitter`` boxes, with
                 the ``random`` and ``prior`` baselines on the same boxes, on the test set
                 (:func:`~hoi_mllm.eval.cross_detector.run_cross_detector`)
5. ``report``    ``report.md``, ``report.html`` and ``report.json`` (:mod:`.report`)

Output folder::

    world/  yolo/  finetune/  evaluate/     one per stage (see each module for its layout)
    stage_<name>.json                       each finished stage's record
    report.md  report.html  report.json  report_files/
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hoi_mllm.demo.config import DemoConfig, flatten
from hoi_mllm.demo.stages import StageBook, StageRecord, StageRun, check_disk_space, world_bytes
from hoi_mllm.env import set_offline

log = logging.getLogger(__name__)

STAGES = ("world", "yolo", "finetune", "evaluate", "report")
MARGIN_BYTES = 150_000_000  # models, checkpoints, caches, reports: a few tens of MB measured; generous


@dataclass
class DemoResult:
    """What :func:`run_demo` did: the output folder, every stage's outcome, the report and its summary."""

    output: Path
    stages: dict[str, StageRun]
    summary: dict
    seconds: float

    @property
    def report_md(self) -> Path:
        return self.output / "report.md"


def machine_info() -> dict:
    """The machine the demo ran on: CPUs, torch and its threads, Python, platform, load average now."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": os.cpu_count(), "cpus_usable": usable, "cpu_model": cpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": _load()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Demo:
    """Runs the stages of one demo folder (see the module docstring).

    Args:
        config: the :class:`DemoConfig`; output: the output folder.
        force: redo every stage; progress: show progress bars; say: where stage banners go.
    """

    def __init__(self, config: DemoConfig, output: str | Path, force: bool = False, progress: bool = True, say=print):
        self.config = config
        self.root = Path(output).absolute()
        self.book = StageBook(self.root, force)
        self.progress = progress
        self.say = say
        self.runs: dict[str, StageRun] = {}

    # ------------------------------------------------------------------ helpers
    def _stage(self, name: str, params: dict, fn, folders: tuple[str, ...]) -> StageRecord:
        index = STAGES.index(name) + 1
        self.say(f"[{index}/{len(STAGES)}] {name}", flush=True)
        load = _load()

        def work(resume: bool):
            outputs, info = fn(resume)
            return outputs, {**info, "load_average_before": load}

        run = self.book.run(name, params, work, folders)
        self.runs[name] = run
        state = ("reused (done before with the same parameters)" if run.skipped else
                 f"{'resumed and ' if run.resumed else ''}done in {run.seconds_now:.1f} s")
        self.say(f"      {name}: {state}", flush=True)
        return run.record

    def _rel(self, path: Path) -> str:
        return str(Path(path).absolute().relative_to(self.root))

    def _vocabulary(self, world: StageRecord):
        from hoi_mllm.prompts import load_vocabulary

        return load_vocabulary(world.path(self.root, "vocabulary"))

    def _samples(self, world: StageRecord, part: str, vocab):
        from hoi_mllm.data import load_annotations

        return load_annotations(world.path(self.root, part), vocab)

    # ------------------------------------------------------------------ stages
    def world(self) -> StageRecord:
        c = self.config
        params = {"seed": c.seed, "train_images": c.train_images, "test_images": c.test_images,
                  "image_size": c.image_size, "split": c.split, "habits": c.habits}

        def fn(resume: bool):
            from hoi_mllm.data.synthetic import generate_world
            from hoi_mllm.prompts import load_vocabulary

            check_disk_space(self.root, world_bytes(c.train_images + c.test_images, c.image_size) + MARGIN_BYTES)
            info = generate_world(self.root / "world", c.train_images, c.test_images, c.seed,
                                  image_size=c.image_size, progress=self.progress, force=True, habits=c.habits)
            vocab = load_vocabulary(info.vocabulary)
            split = vocab.split(c.split)  # an unknown split: a ValueError naming the allowed ones
            unseen = [vocab.class_name(k) for k in sorted(split.unseen)]
            outputs = {"world": self._rel(info.output_dir), "train": self._rel(info.annotations["train"]),
                       "test": self._rel(info.annotations["test"]), "vocabulary": self._rel(info.vocabulary)}
            return outputs, {"counts": info.counts, "generated_seconds": info.seconds, "unseen_classes": unseen,
                             "classes": vocab.num_classes, "objects": list(vocab.objects), "verbs": list(vocab.verbs)}

        return self._stage("world", params, fn, ("world",))

    def yolo(self, world: StageRecord) -> StageRecord:
        c = self.config
        yolo_params = {k: v for k, v in asdict(c.yolo).items() if k != "score_threshold"}
        params = {"world": world.digest(), "yolo": yolo_params}

        def fn(resume: bool):
            from hoi_mllm.demo.yolo_training import train_yolo, write_yolo_dataset

            vocab = self._vocabulary(world)
            samples = self._samples(world, "train", vocab)
            folder = self.root / "yolo"
            data = write_yolo_dataset(samples, vocab.objects, folder / "dataset", c.yolo.val_images, c.yolo.seed)
            result = train_yolo(c.yolo, data, vocab.num_objects, folder, progress=self.progress)
            return ({"weights": self._rel(Path(result.weights)), "data": self._rel(data)},
                    {**result.to_dict(), "train_images": len(samples) - c.yolo.val_images,
                     "val_images": c.yolo.val_images})

        return self._stage("yolo", params, fn, ("yolo",))

    def finetune_config(self, world: StageRecord):
        from hoi_mllm.finetune.config import load_config

        overrides = {**flatten(self.config.finetune), "data.train": str(world.path(self.root, "train"))}
        return load_config(self.config.recipe, overrides)

    def finetune(self, world: StageRecord) -> StageRecord:
        cfg = self.finetune_config(world)
        recorded = cfg.to_dict()
        recorded["data"]["train"] = world.outputs["train"]  # relative: the folder may move
        params = {"world": world.digest(), "recipe": self.config.recipe, "config": recorded}

        def fn(resume: bool):
            from hoi_mllm.finetune.checkpoint import latest_checkpoint
            from hoi_mllm.finetune.trainer import Trainer

            run_dir = self.root / "finetune"
            ckpt = latest_checkpoint(run_dir) if resume and run_dir.is_dir() else None
            if ckpt is not None and ckpt.step >= cfg.train.steps:  # stopped after the last step, before saving
                log.info("the last checkpoint is the final step; training again to save the final model")
                shutil.rmtree(run_dir)
                ckpt = None
            elif ckpt is None and run_dir.exists():
                shutil.rmtree(run_dir)
            if ckpt is not None:
                self.say(f"      finetune: resuming from the checkpoint at step {ckpt.step}", flush=True)
            result = Trainer(cfg, run_dir, resume=ckpt is not None, progress=self.progress).run()
            info = {k: v for k, v in asdict(result).items() if k not in ("run_dir", "final_dir")}
            outputs = {"model": self._rel(Path(result.final_dir)), "summary": "finetune/summary.json",
                       "history": "finetune/history.jsonl"}
            if (run_dir / "loss_curve.png").is_file():
                outputs["loss_curve"] = "finetune/loss_curve.png"
            return outputs, info

        return self._stage("finetune", params, fn, ("finetune",))

    def detector_specs(self, yolo: StageRecord) -> dict[str, str]:
        """Display name -> detector spec of the evaluated detectors."""
        y = self.config.yolo
        weights = str(yolo.path(self.root, "weights")).replace("'", "''")
        return {"ground truth": "ground-truth",
                "trained YOLO": f"yolo:model='{weights}',imgsz={y.imgsz},score_threshold={y.score_threshold}",
                "jitter": f"jitter:{self.config.jitter}" if self.config.jitter else "jitter"}

    def evaluate(self, world: StageRecord, yolo: StageRecord, tuned: StageRecord) -> StageRecord:
        c = self.config
        specs = self.detector_specs(yolo)
        params = {"world": world.digest(), "yolo": yolo.digest(), "finetune": tuned.digest(), "split": c.split,
                  "detectors": {k: v.replace(str(self.root), ".") for k, v in specs.items()},
                  "baselines": list(c.baselines), "missing_classes": c.missing_classes}

        def fn(resume: bool):
            from hoi_mllm.eval.cross_detector import CrossDetectorConfig, run_cross_detector
            from hoi_mllm.pipeline import HOIPipeline

            vocab = self._vocabulary(world)
            test, train = self._samples(world, "test", vocab), self._samples(world, "train", vocab)
            pipeline = HOIPipeline.from_pretrained(tuned.path(self.root, "model"), device="cpu")
            config = CrossDetectorConfig(split=c.split, baselines=tuple(c.baselines),
                                         missing_classes=c.missing_classes, device="cpu", progress=self.progress)
            result = run_cross_detector(pipeline, list(specs.values()), test, self.root / "evaluate",
                                        config=config, train_samples=train)
            return ({"table": "evaluate/cross_detector.json", "markdown": "evaluate/cross_detector.md"},
                    {"images": result.images, "detectors": {name: spec for name, spec in specs.items()}})

        return self._stage("evaluate", params, fn, ("evaluate",))

    def report(self, records: dict[str, StageRecord]) -> StageRecord:
        from hoi_mllm.demo.report import write_report
        from hoi_mllm.demo.summary import build_summary

        params = {"stages": {k: r.digest() for k, r in records.items()}, "config": self.config.to_dict()}

        def fn(resume: bool):
            summary = build_summary(self.root, self.config, records, machine_info(), progress=self.progress)
            paths = write_report(summary, self.root)
            return {k: self._rel(p) for k, p in paths.items()}, {"aims": summary["aims"]}

        return self._stage("report", params, fn, ("report_files",))

    def run(self) -> DemoResult:
        start = time.perf_counter()
        world = self.world()
        yolo = self.yolo(world)
        tuned = self.finetune(world)
        evaluated = self.evaluate(world, yolo, tuned)
        records = {"world": world, "yolo": yolo, "finetune": tuned, "evaluate": evaluated}
        report = self.report(records)
        from hoi_mllm.io import read_json

        summary = read_json(report.path(self.root, "json"), what="demo report")
        return DemoResult(self.root, self.runs, summary, time.perf_counter() - start)


def run_demo(config: DemoConfig, output: str | Path, force: bool = False, progress: bool = True,
             say=print) -> DemoResult:
    """Run (or resume, or reuse) the demo in ``output``; see the module docstring.

    Raises:
        DiskSpaceError: not enough free space for the world; ValueError / ConfigError: bad settings.
    """
    from hoi_mllm.demo.yolo_training import keep_torch_threads

    set_offline()
    keep_torch_threads(config.threads or default_threads())
    Path(output).mkdir(parents=True, exist_ok=True)
    return Demo(config, output, force, progress, say).run()


def default_threads() -> int:
    """One less than the usable CPUs, at least one (as ultralytics does): the demo's torch threads."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable - 1)
