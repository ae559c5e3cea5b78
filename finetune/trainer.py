"""The training loop, on accelerate: LoRA / QLoRA / full fine-tuning of the recogniser with two-stage matching.

:class:`Trainer` reads like a nanoGPT loop: check the inputs (data, split, checkpoint) before any
weight is built, build the student, the teacher and the optimiser, hand them to ``accelerate``
(one process, or several through ``accelerate launch``: DDP, gloo on CPUs), then per optimiser
step run ``train.gradient_accumulation`` micro-batches, clip, step, update the teacher, log,
evaluate and checkpoint as configured. The final recogniser is saved with
:meth:`HOIPipeline.save_pretrained <hoi_mllm.pipeline.HOIPipeline.save_pretrained>` in ``RUN/final``
so ``hoi-mllm detect --model RUN/final`` loads it.

Run folder::

    config.yaml          the resolved config
    history.jsonl        logged loss terms and evaluations (monitor.py)
    tensorboard/         TensorBoard event files
    checkpoints/         step_XXXXXXX/ (checkpoint.py), the last train.keep_checkpoints
    final/               the fine-tuned recogniser (HOIPipeline folder); train.stage=sap: sap.safetensors +
                         sap.json (finetune/sap_stage.py), named by the next stage's sap.pretrained
    loss_curve.png       the loss terms (and evaluation mAP) against the step
    summary.json         steps, time, images/s, final evaluation

The detector's boxes of the training images (``pairs.source`` detector / both) are cached once per
(detector, dataset) outside the run folder, shared by runs (:func:`~hoi_mllm.finetune.data.cache_path`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from hoi_mllm.finetune.augment import augment
from hoi_mllm.finetune.checkpoint import (
    CheckpointError,
    check_base,
    checkpoint_dir,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_rng,
)
from hoi_mllm.finetune.config import FinetuneConfig, OptimConfig, steps_of_epochs
from hoi_mllm.finetune.data import BatchStream, TrainingData, cache_path, detector_detections, load_training_data, \
    make_stream, training_detections
from hoi_mllm.finetune.model import base_fingerprint, base_loader, build_student, parameter_counts, trainable_state
from hoi_mllm.finetune.monitor import LOSS_KEYS, RunMonitor
from hoi_mllm.finetune.step import TrainingStep, TrainItem
from hoi_mllm.finetune.targets import soft_label_classes
from hoi_mllm.finetune.teacher import build_teacher, shares_base
from hoi_mllm.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the batch's images."""


@dataclass
class TrainResult:
    """What a finished run reports (also written to ``RUN/summary.json``)."""

    run_dir: str
    final_dir: str | None
    steps: int
    images: int
    seconds: float
    steps_per_second: float
    images_per_second: float
    parameters: dict = field(default_factory=dict)
    eval: dict | None = None
    resumed_from: int | None = None


# --------------------------------------------------------------------------- optimiser
def language_model_prefix(model: torch.nn.Module) -> str:
    """``"backbone.<the adapter's language-model path>."``: how a recogniser names its decoder's parameters."""
    backbone = getattr(getattr(model, "module", model), "backbone", None)  # DDP wraps the recogniser in .module
    return f"backbone.{backbone.module_path('language_model')}." if backbone is not None else "\0"


def parameter_groups(model: torch.nn.Module, config: OptimConfig, scaled: dict[str, float] | None = None
                     ) -> list[dict]:
    """AdamW groups: language-model weights at ``lr``, the rest at ``head_lr``; no decay on 1-D tensors.

    Which parameters are the language model's the backbone adapter says (:meth:`Backbone.module_path`).
    ``scaled`` maps parameter names to a factor of their group's rate (``sap.lr_scale`` on a pre-trained SAP)."""
    lm_prefix = language_model_prefix(model)
    scaled = scaled or {}
    groups: dict[tuple[bool, bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (lm_prefix in name, p.ndim >= 2 and "embed" not in name, float(scaled.get(name, 1.0)))
        groups.setdefault(key, []).append(p)
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    return [{"params": ps, "lr": (config.lr if lm else head_lr) * factor,
             "weight_decay": config.weight_decay if decay else 0.0}
            for (lm, decay, factor), ps in sorted(groups.items())]


def schedule(step: int, total: int, warmup: int, kind: str) -> float:
    """Learning-rate factor at ``step``: linear warm-up, then cosine / linear decay to 0, or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress


def make_optimizer(model: torch.nn.Module, config: OptimConfig, total_steps: int,
                   scaled: dict[str, float] | None = None):
    optimizer = torch.optim.AdamW(parameter_groups(model, config, scaled), lr=config.lr, betas=tuple(config.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s, total_steps, config.warmup_steps, config.scheduler))
    return optimizer, scheduler


def fill_deepspeed_config(ds_config: dict, config: FinetuneConfig) -> dict:
    """Fill the DeepSpeed config's ``"auto"`` values from the recipe, in place, and return it.

    The trainer has no DataLoader for accelerate to read the micro-batch from, and DeepSpeed clips
    gradients itself (``accelerator.clip_grad_norm_`` only reports the norm under DeepSpeed), so
    ``train_micro_batch_size_per_gpu`` and ``gradient_clipping`` come from ``train.batch_size`` and
    ``optim.grad_clip`` (0: no clipping) when absent or ``"auto"``.

    Raises:
        ValueError: a value set in the DeepSpeed config differs from the recipe's.
    """
    wanted = {"train_micro_batch_size_per_gpu": ("train.batch_size", config.train.batch_size),
              "gradient_accumulation_steps": ("train.gradient_accumulation", config.train.gradient_accumulation),
              "gradient_clipping": ("optim.grad_clip", float(config.optim.grad_clip or 0.0))}
    for key, (name, value) in wanted.items():
        given = ds_config.get(key, "auto")
        if given == "auto":
            ds_config[key] = value
        elif float(given) != float(value):
            raise ValueError(f"the DeepSpeed config sets {key}={given}, the recipe's {name} is {value}: "
                             f"set it to 'auto' (or remove it) so the recipe decides, or make them equal")
    return ds_config


def check_finite(accelerator, terms, step: int, batch_index: int, items: list[TrainItem]) -> None:
    """Raise :class:`NonFiniteLossError` on every process when any process's loss is NaN or infinite.

    The finite flags of all processes are gathered before backward: a process that stopped alone
    would leave the others waiting in DDP's gradient all-reduce for ever.
    """
    finite = torch.isfinite(terms.total.detach()).reshape(1).float()
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite)  # [processes]
    bad = [i for i, f in enumerate(finite.tolist()) if not f]
    if bad:
        names = ", ".join(i.sample.file_name for i in items)
        raise NonFiniteLossError(
            f"non-finite loss at step {step} (batch {batch_index}) on process(es) {', '.join(map(str, bad))}; "
            f"this process ({accelerator.process_index}): {terms.as_floats()} on images {names}")


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Fine-tune a recogniser as ``config`` says, in ``run_dir`` (see the module docstring).

    Args:
        config: the validated :class:`~hoi_mllm.finetune.config.FinetuneConfig`.
        run_dir: the run folder (created).
        resume: continue from the latest checkpoint in ``run_dir`` (an error when there is none, or when it
            was written by another number of processes); without it, ``run_dir`` must hold no checkpoints.
        progress: show progress bars.
        stop_after: stop after this many steps of this call, as an interruption would (checkpoints
            written so far stay; no final evaluation or model); ``None``: run to ``train.steps``.
    """

    def __init__(self, config: FinetuneConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 stop_after: int | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.progress = progress
        self.stop_after = stop_after

    # ------------------------------------------------------------------ checks before any weight is built
    def _check_accelerator(self, accelerator) -> None:
        train = self.config.train
        if accelerator.gradient_accumulation_steps != train.gradient_accumulation:
            # the loop runs train.gradient_accumulation micro-batches per step; accelerate would sync at its own count
            raise ValueError(f"accelerate accumulates {accelerator.gradient_accumulation_steps} micro-batches "
                             f"(ACCELERATE_GRADIENT_ACCUMULATION_STEPS or the accelerate/DeepSpeed config), the "
                             f"recipe's train.gradient_accumulation is {train.gradient_accumulation}: make them "
                             "equal, or leave accelerate's unset")
        if accelerator.distributed_type == "DEEPSPEED" and (train.checkpoint_every or self.resume):
            # ZeRO shards the optimiser state across processes: the main process's optimizer.pt holds only its
            # share, so a resume could not continue exactly
            raise ValueError(f"under DeepSpeed the trainer cannot checkpoint or resume (train.checkpoint_every="
                             f"{train.checkpoint_every}, resume={self.resume}): its checkpoints would hold only "
                             "the main process's share of the ZeRO optimiser state; set train.checkpoint_every=0 "
                             "and run without --resume, or use the DDP config (accelerate_ddp.yaml)")

    def _checkpoint(self, processes: int):
        if not self.resume:
            # a fresh run must not mix with an old one: pruning keeps the highest steps (the old run's) and
            # deletes the new run's, and a later --resume would continue the old run
            folder = checkpoint_dir(self.run_dir)
            old = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            if old:
                raise CheckpointError(f"{self.run_dir} already holds checkpoints of a run ({', '.join(old[-3:])}); "
                                      "use --resume to continue it, or another output folder (or remove it)")
            return None
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}")
        saved = int(ckpt.state.get("processes", 1))
        if saved != processes:
            # every process resumes its own random state and share of the data stream: another count cannot
            # continue the same run
            raise CheckpointError(f"{ckpt.path} was written by {saved} process(es), this run has {processes}; "
                                  f"resume with {saved} (accelerate launch --num_processes {saved}), or start a new "
                                  "run folder")
        m = self.config.model
        check_base(ckpt, {"base": m.base, "preset_overrides": dict(m.preset_overrides), "quantization": m.quantization})
        changed = [k for k in config_differences(ckpt.state.get("config", {}), self.config.to_dict())
                   if not k.startswith(("train.steps", "eval.", "train.log_every", "train.checkpoint_every"))]
        if changed:
            log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))
        if ckpt.step >= self.config.train.steps:
            raise ValueError(f"{ckpt.path} is at step {ckpt.step}, already at train.steps={self.config.train.steps}; "
                             "raise train.steps to continue")
        return ckpt

    def _data(self, accelerator, data: TrainingData) -> tuple[TrainingData, dict | None]:
        detected = None
        if self.config.pairs.source != "ground-truth":
            cache = cache_path(self.config.pairs, data.source)
            with accelerator.main_process_first():
                detected = detector_detections(self.config.pairs, data.train, data.vocabulary, cache,
                                               self.progress and accelerator.is_main_process)
        return data, detected

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        cfg = self.config
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        accelerator = Accelerator(cpu=cfg.train.cpu or not torch.cuda.is_available(),
                                  mixed_precision=cfg.train.mixed_precision,
                                  gradient_accumulation_steps=cfg.train.gradient_accumulation,
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        main = accelerator.is_main_process
        self._check_accelerator(accelerator)
        data = load_training_data(self.config.data)
        if cfg.train.epochs is not None:  # the schedule in epochs: the step count follows from the data
            steps = steps_of_epochs(cfg.train, len(data.train), accelerator.num_processes)
            cfg = self.config = replace(cfg, train=replace(cfg.train, steps=steps))
            log.info("train.epochs %g over %d images: %d steps", cfg.train.epochs, len(data.train), steps)
        ckpt = self._checkpoint(accelerator.num_processes)
        vocab = data.vocabulary
        if cfg.sap.pretrained:  # missing file, another vocabulary or SAP shape: before any weight is built
            from hoi_mllm.finetune.sap_stage import check_pretrained_sap

            check_pretrained_sap(cfg.sap.pretrained, vocab, cfg.model.recogniser.sap)
        data, detected = self._data(accelerator, data)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        set_seed(cfg.train.seed)
        recogniser = build_student(cfg, vocab, accelerator.device)
        fingerprint = base_fingerprint(recogniser, cfg.model)
        if ckpt is not None:
            check_base(ckpt, fingerprint)
        load_base = base_loader(cfg.model, vocab, accelerator.device)
        sap_stage = cfg.train.stage == "sap"
        # the SAP stage has no verb scores to distil into: no teacher (none is loaded)
        teacher = build_teacher(replace(cfg.teacher, kind="none") if sap_stage else cfg.teacher, vocab, recogniser,
                                load_base, share_base=shares_base(cfg), annotations=data.train)
        step_module = TrainingStep(recogniser, vocab.seen_classes(data.split), cfg.pairs, cfg.matcher, cfg.loss,
                                   teacher, cfg.train.seed, soft_label_classes(vocab, data.split), cfg.train.stage)
        scaled = None
        if cfg.sap.pretrained and not cfg.sap.freeze:
            from hoi_mllm.finetune.sap_stage import sap_body_names

            scaled = dict.fromkeys(sap_body_names(recogniser), cfg.sap.lr_scale)
        optimizer, scheduler = make_optimizer(recogniser, cfg.optim, cfg.train.steps, scaled)
        if accelerator.distributed_type == "DEEPSPEED":
            fill_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, cfg)
        # together: accelerate starts the DeepSpeed engine only inside prepare() when it sees both (prepared
        # one by one, accelerator.backward would call a missing engine); the scheduler stays ours, stepped
        # once per optimiser step
        model, optimizer = accelerator.prepare(step_module, optimizer, device_placement=[False, None])
        monitor = RunMonitor(self.run_dir, cfg.train.tensorboard, enabled=main,
                             purge_step=ckpt.step + 1 if ckpt is not None else None)
        start_step, batch_index = 0, 0
        if ckpt is not None:
            teacher_state, state = load_checkpoint(ckpt, recogniser, optimizer, scheduler, accelerator.process_index,
                                                   recogniser._generator)
            if teacher_state:
                teacher.load_state_dict(teacher_state)
            start_step, batch_index = ckpt.step, int(state["batch_index"])
            monitor.resume(start_step)
            log.info("resumed from %s (step %d)", ckpt.path, start_step)
        else:
            monitor.start_fresh()
        stream = make_stream(data, cfg.train.batch_size, cfg.train.seed, accelerator.process_index,
                             accelerator.num_processes)
        result = self._loop(accelerator, model, step_module, optimizer, scheduler, teacher, data, detected, stream,
                            monitor, start_step, batch_index, fingerprint)
        result.resumed_from = ckpt.step if ckpt is not None else None
        if main:
            atomic_write_json(self.run_dir / "summary.json", asdict(result))
        monitor.close()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return result

    def _items(self, data: TrainingData, detected, indices: list[int], batch_index: int) -> list[TrainItem]:
        """The batch's images with their boxes, augmented (``augment``) from a generator seeded by
        ``(train.seed, batch_index, image)``: a resumed run draws the same augmentation."""
        items = []
        augment_config = self.config.augment
        for i in indices:
            s = data.train[i]
            image = s.load_image()
            dets = training_detections(self.config.pairs, s, image.size, detected, data.vocabulary.name)
            if augment_config.active:
                rng = np.random.default_rng([self.config.train.seed, batch_index, i])
                image, s, dets = augment(image, s, dets, augment_config, rng)
            items.append(TrainItem(i, s, image, dets))
        return items

    def _loop(self, accelerator, model, step_module: TrainingStep, optimizer, scheduler, teacher, data, detected,
              stream: BatchStream, monitor: RunMonitor, start_step: int, batch_index: int, fingerprint: dict
              ) -> TrainResult:
        cfg = self.config
        main = accelerator.is_main_process
        recogniser = step_module.recogniser
        params = [p for p in recogniser.parameters() if p.requires_grad]
        totals = {k: 0.0 for k in LOSS_KEYS}
        counts = {"seen_pairs": 0, "potential_pairs": 0, "pairs": 0, "micro": 0}
        images_done, t0, window_t0 = 0, time.perf_counter(), time.perf_counter()
        bar = tqdm(total=cfg.train.steps, initial=start_step, desc="fine-tuning", unit="step",
                   disable=not (self.progress and main), dynamic_ncols=True)
        model.train()
        eval_result = None
        step = start_step
        while step < cfg.train.steps:
            for _ in range(cfg.train.gradient_accumulation):
                items = self._items(data, detected, stream.batch(batch_index), batch_index)
                with accelerator.accumulate(model):
                    terms = model(items, step_seed=batch_index)
                    check_finite(accelerator, terms, step + 1, batch_index, items)
                    accelerator.backward(terms.total)
                    if accelerator.sync_gradients and cfg.optim.grad_clip:
                        accelerator.clip_grad_norm_(params, cfg.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                batch_index += 1
                images_done += len(items)
                for k, v in terms.as_floats().items():
                    totals[k] += v
                counts["seen_pairs"] += terms.seen_pairs
                counts["potential_pairs"] += terms.potential_pairs
                counts["pairs"] += terms.pairs
                counts["micro"] += 1
            scheduler.step()
            teacher.update(recogniser)
            step += 1
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                n = max(1, counts["micro"])
                elapsed = time.perf_counter() - window_t0
                values = {k: totals[k] / n for k in LOSS_KEYS}
                values.update(lr=scheduler.get_last_lr()[0], seen_pairs=counts["seen_pairs"] / n,
                              potential_pairs=counts["potential_pairs"] / n, pairs=counts["pairs"] / n,
                              images_per_second=n * cfg.train.batch_size * accelerator.num_processes / max(elapsed, 1e-9),
                              epoch=stream.epoch_of(batch_index))
                monitor.log(step, values)
                bar.set_postfix({k: f"{values[k]:.3f}" for k in LOSS_KEYS} | {"img/s": f"{values['images_per_second']:.1f}"})
                totals = {k: 0.0 for k in LOSS_KEYS}
                counts = {k: 0 for k in counts}
                window_t0 = time.perf_counter()
            bar.update(1)
            if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                eval_result = self._evaluate(accelerator, recogniser, data, monitor, step)
            if cfg.train.checkpoint_every and (step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps):
                self._save_checkpoint(accelerator, recogniser, optimizer, scheduler, teacher, step, batch_index,
                                      fingerprint)
            if self.stop_after is not None and step - start_step >= self.stop_after:
                break
        bar.close()
        seconds = time.perf_counter() - t0
        trained_steps = step - start_step
        finished = step >= cfg.train.steps
        if cfg.eval.at_end and finished:
            eval_result = self._evaluate(accelerator, recogniser, data, monitor, step)
        final = None
        if main and finished:
            final = str(self._save_final(recogniser))
            monitor.loss_curve()
        accelerator.wait_for_everyone()
        return TrainResult(str(self.run_dir), final, step, images_done * accelerator.num_processes, seconds,
                           trained_steps / max(seconds, 1e-9), images_done * accelerator.num_processes / max(seconds, 1e-9),
                           parameter_counts(recogniser), eval_result)

    # ------------------------------------------------------------------ evaluation, saving
    def _evaluate(self, accelerator, recogniser, data: TrainingData, monitor: RunMonitor, step: int) -> dict | None:
        from hoi_mllm.finetune.evaluate import evaluate_recogniser

        out = None
        if self.config.train.stage == "sap":  # no language model run, no verb scores: nothing to evaluate
            log.info("train.stage=sap: no evaluation (SAP alone gives no candidate scores)")
        elif accelerator.is_main_process and data.val:
            samples = data.val[: self.config.eval.max_images] if self.config.eval.max_images else data.val
            with accelerator.autocast():
                out = evaluate_recogniser(recogniser, samples, data.split, self.config.pairs.proposal,
                                          missing_classes=self.config.eval.missing_classes)
            monitor.log_eval(step, out)
            shown = {k: round(v, 2) for k, v in out.items() if k in ("full", "seen", "unseen") and v is not None}
            log.info("step %d: held-out mAP %s", step, shown)
        accelerator.wait_for_everyone()
        return out

    def _save_checkpoint(self, accelerator, recogniser, optimizer, scheduler, teacher, step: int, batch_index: int,
                         fingerprint: dict) -> None:
        save_rng(self.run_dir, step, accelerator.process_index, recogniser._generator)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"batch_index": batch_index, "base_model": fingerprint, "config": self.config.to_dict(),
                     "processes": accelerator.num_processes}
            save_checkpoint(self.run_dir, step, trainable_state(recogniser), optimizer, scheduler, state,
                            teacher.state_dict(), self.config.train.keep_checkpoints)
        accelerator.wait_for_everyone()

    def _save_final(self, recogniser) -> Path:
        from hoi_mllm.pipeline import HOIPipeline

        path = self.run_dir / "final"
        if self.config.train.stage == "sap":
            from hoi_mllm.finetune.sap_stage import save_pretrained_sap

            weights = save_pretrained_sap(path, recogniser, self.config.model.base)
            log.info("saved the pre-trained SAP to %s (next stage: sap.pretrained=%s)", weights, weights)
            return path
        was_training = recogniser.training
        recogniser.eval()
        # base weights trained outside LoRA (projector, vision, full LM) exist only in memory: save the base whole
        trained_base = any(p.requires_grad and "lora_" not in n for n, p in recogniser.backbone.named_parameters())
        HOIPipeline(None, recogniser, self.config.pairs.proposal).save_pretrained(path, save_base=trained_base or None)
        recogniser.train(was_training)
        log.info("saved the fine-tuned recogniser to %s", path)
        return path


def finetune(config: FinetuneConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
             stop_after: int | None = None) -> TrainResult:
    """Run :class:`Trainer` (the library entry point of ``hoi-mllm finetune``)."""
    return Trainer(config, run_dir, resume, progress, stop_after).run()


__all__ = ["CheckpointError", "NonFiniteLossError", "TrainResult", "Trainer", "finetune", "schedule"]
