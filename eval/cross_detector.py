"""Cross-detector evaluation: one recogniser (and baselines) on the boxes of several detectors, one table.

::

    result = run_cross_detector(recogniser, ["ground-truth", "jitter:box_noise=0.2", "yolo:model=best.pt"],
                                test_samples, "out/cross", split="uc_a", baselines=("random", "prior"),
                                train_samples=train_samples)
    print(result.to_table()); result.rows[0].metrics["unseen"]

For each detector, image by image: detections (computed, or read from the cache), pair proposal,
then every scorer (the recogniser, and each baseline on the very same detections), post-processing,
and one predictions file per scorer. Baselines run under every detector (they cost no model call),
so each detector's row can be read against chance and the prior on its own boxes. Then every
predictions file is evaluated with the dataset's protocol (:mod:`~hoi_mllm.eval.hicodet`, Default
setting, or :mod:`~hoi_mllm.eval.vcoco`), and each detector's own box recall is measured.

Output folder::

    cross_detector.md, cross_detector.json     the table (written atomically)
    <adapter>-<key>/                            one folder per detector key (see eval.detection_cache)
        detections.jsonl, detections.json       the detections (resumable log; complete file format)
        predictions_<scorer>.jsonl              predictions per scorer (resumable)
        evaluation_<scorer>.json                the full evaluation report (per-class AP, counts)

A rerun with the same specs reuses the detections (the detector is not even built when every image
is cached) and the predictions; an interrupted run continues where it stopped; a changed spec, model
or image file recomputes what it affects. ``ground-truth`` and ``jitter`` get the annotations being
evaluated (all of them, before ``limit``) unless their spec names a file.

Under a multi-process launcher (``accelerate launch --num_processes N -m hoi_mllm evaluate
cross-detector ...``, one GPU each) every detector's images still to do are sharded over the
processes: each writes its own logs ``<detector folder>/shards/*-rank-<r>-of-<N>.jsonl``, process 0
folds them into the main logs (also what an interrupted sharded run of any process count left),
then evaluates and writes the table.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.registry import build_detector, resolve_detector, split_detector_specs
from hoi_mllm.eval.baselines import build_baselines
from hoi_mllm.eval.cross_detector_result import CrossDetectorResult, CrossDetectorRow, DetectorRun
from hoi_mllm.eval.detection_cache import (DetectionCache, detector_identity, identity_key, image_fingerprint,
                                           open_predictions, samples_digest)
from hoi_mllm.eval.detector_recall import detector_box_recall
from hoi_mllm.eval.recall import DEFAULT_KS
from hoi_mllm.eval.tables import percent
from hoi_mllm.io import atomic_write_json, read_json
from hoi_mllm.pairs import PairProposalConfig
from hoi_mllm.sharding import process_group
from hoi_mllm.postprocess import PostprocessConfig
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

PROTOCOLS = ("hico-det", "vcoco")
RECOGNISER = "recogniser"


@dataclass(frozen=True)
class CrossDetectorConfig:
    """Options of a cross-detector run.

    Attributes:
        split: zero-shot split (Unseen / Seen / Full, U-R@K, and the prior's filtering); None: none.
        protocol: ``hico-det`` or ``vcoco``; None: ``vcoco`` for the vcoco vocabulary, else ``hico-det``.
        baselines: scorers run beside the recogniser on the same boxes: ``random``, ``prior``.
        seed: seed of the random baseline.
        prior_smoothing: additive smoothing of the prior baseline (0: unseen classes score 0).
        missing_classes: HICO-DET classes without ground truth: ``zero`` (official) or ``skip``
            (left out of the means; for small or synthetic test sets).
        recall_ks: the K of U-R@K.
        iou_threshold: for the evaluation and the detectors' box recall.
        limit: evaluate the first N images only (None: all).
        device: the detectors' device when their spec names none (None: the detector's default, auto).
        progress: show progress bars.
    """

    split: str | None = field(default=None, metadata={"help": "zero-shot split of the vocabulary"})
    protocol: str | None = field(default=None, metadata={"help": "hico-det or vcoco (default: from the vocabulary)"})
    baselines: tuple[str, ...] = field(default=(), metadata={"help": "random, prior"})
    seed: int = field(default=0, metadata={"help": "seed of the random baseline"})
    prior_smoothing: float = field(default=0.0, metadata={"help": "additive smoothing of the prior baseline"})
    missing_classes: str = field(default="zero", metadata={"help": "zero (official) or skip"})
    recall_ks: tuple[int, ...] = field(default=DEFAULT_KS, metadata={"help": "K values of U-R@K"})
    iou_threshold: float = field(default=0.5, metadata={"help": "IoU threshold of evaluation and box recall"})
    limit: int | None = field(default=None, metadata={"help": "evaluate the first N images only"})
    device: str | None = field(default=None, metadata={"help": "detector device when the spec names none"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self):
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} not allowed; allowed: {', '.join(PROTOCOLS)}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be an integer >= 1 or None, got {self.limit!r}")


@dataclass
class DetectorPlan:
    """A validated detector spec: adapter, options to build it with, cache key and folder."""

    spec: str
    name: str
    options: dict
    key: str
    folder: Path
    identity: dict


def plan_detectors(specs: str | Sequence[str], vocabulary: Vocabulary, annotations: Sequence[HOISample],
                   output_dir: Path, device: str | None = None) -> list[DetectorPlan]:
    """Validate every spec (name and options, nothing built) and give each its cache key and folder.

    Args:
        specs: a list of specs, or one string of specs separated by ``;`` (see
            :func:`~hoi_mllm.detectors.registry.split_detector_specs`).
        annotations: handed to detectors that take ``annotations`` when the spec names none.
    Raises:
        ValueError: no spec, an unknown detector or option (naming the allowed ones), or two specs
        that are the same detector.
    """
    specs = split_detector_specs(specs) if isinstance(specs, str) else [str(s).strip() for s in specs]
    if not specs:
        raise ValueError("no detector given: pass at least one spec such as ground-truth or yolo:model=PATH")
    digest = None
    plans: list[DetectorPlan] = []
    for spec in specs:
        cls, options = resolve_detector(spec)
        annotations_id = None
        if "annotations" in cls.own_options() and options.get("annotations") is None:
            digest = digest or samples_digest(annotations)
            options["annotations"], annotations_id = list(annotations), digest
        if device is not None:
            options.setdefault("device", device)
        identity = detector_identity(cls.name, {k: v for k, v in options.items() if k != "annotations" or annotations_id is None},
                                     vocabulary, annotations_id)
        key = identity_key(identity)
        twin = next((p for p in plans if p.key == key), None)
        if twin is not None:
            raise ValueError(f"detector specs {twin.spec!r} and {spec!r} are the same detector; give each once")
        plans.append(DetectorPlan(spec, cls.name, options, key, output_dir / f"{cls.name}-{key[:10]}", identity))
    return plans


def scorer_identity(scorer, pair_config: PairProposalConfig, post_config: PostprocessConfig) -> dict:
    """What determines a scorer's predictions: a baseline's parameters, or a digest of the recogniser's
    own weights and of an unmerged LoRA adapter in its backbone, its configuration and base model; plus
    the pair and post-processing configs. (Base weights are named, not hashed: a merged adapter shows
    through the recogniser's own weights, trained with it.)"""
    import hashlib

    if hasattr(scorer, "identity"):
        base = scorer.identity()
    else:
        h = hashlib.sha256()
        state = dict(scorer.own_state_dict()) if hasattr(scorer, "own_state_dict") else {}
        backbone = getattr(scorer, "backbone", None)
        if backbone is not None:
            state.update({f"backbone.{n}": p for n, p in backbone.named_parameters() if "lora_" in n})
        for k in sorted(state):
            h.update(k.encode() + state[k].detach().float().cpu().numpy().tobytes())
        config = getattr(scorer, "config", None)
        config = config.to_dict() if hasattr(config, "to_dict") else asdict(config) if config is not None else None
        base = {"class": type(scorer).__name__, "backbone": str(getattr(backbone, "name_or_path", "")),
                "own_state": h.hexdigest()[:16], "config": config, "vocabulary": scorer.vocabulary.name}
    return {**base, "pair_config": asdict(pair_config), "post_config": asdict(post_config)}


def _check_images(samples: Sequence[HOISample]) -> None:
    missing = [s for s in samples if s.image is None and not s.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(samples)} images not found, e.g. {missing[0].path}; "
                                "pass the image folder (--images DIR / image_root)")


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


SHARDS = "shards"


@dataclass
class _Logs:
    """One detector folder's logs: the detections cache and one predictions log per scorer."""

    cache: DetectionCache
    writers: dict

    def close(self) -> None:
        self.cache.close()
        for w in self.writers.values():
            w.close()


def _open_logs(plan: DetectorPlan, vocabulary: Vocabulary, metas: dict[str, dict], fingerprints: dict[str, str],
               tag: str | None = None, writable: bool = True, known: dict | None = None) -> _Logs:
    """The folder's main logs (``tag`` None), or a process's own shard logs ``shards/*-<tag>.jsonl``."""
    where = (lambda stem: plan.folder / f"{stem}.jsonl") if tag is None else \
        (lambda stem: plan.folder / SHARDS / f"{stem}-{tag}.jsonl")
    cache = DetectionCache(plan.folder, plan.key, vocabulary, header={"detector": plan.spec},
                           path=where("detections"), writable=writable, known=known)
    writers = {name: open_predictions(where(f"predictions_{name}"), vocabulary.name, meta, fingerprints, writable)
               for name, meta in metas.items()}
    return _Logs(cache, writers)


def _fold_shards(plan: DetectorPlan, vocabulary: Vocabulary, metas: dict[str, dict],
                 fingerprints: dict[str, str]) -> tuple[_Logs, dict]:
    """Process 0 of a sharded run: append every shard log (of any process count: an interrupted run's too)
    to the main logs and remove the shards. Returns the main logs (open)."""
    main = _open_logs(plan, vocabulary, metas, fingerprints)
    folder = plan.folder / SHARDS
    tags = sorted({p.name[len("detections-"):-len(".jsonl")] for p in folder.glob("detections-rank-*.jsonl")})
    for tag in tags:  # each tag names a process's cache; its predictions logs share the tag
        shard = _open_logs(plan, vocabulary, metas, fingerprints, tag)
        main.cache.absorb(shard.cache)
        for name, writer in shard.writers.items():
            for image in writer.images:
                main.writers[name].write(image)
        shard.close()
    if folder.exists():
        shutil.rmtree(folder)
    return main


def _read_notes(folder: Path) -> dict:
    """The shards' notes of a sharded run: ``skipped`` (file name -> error) and ``detected`` (images)."""
    notes: dict = {"skipped": {}, "detected": 0}
    for path in sorted((folder / SHARDS).glob("notes-*.json")):
        found = read_json(path)
        notes["skipped"].update(found.get("skipped", {}))
        notes["detected"] += int(found.get("detected", 0))
    return notes


def _detect_and_score(plan: DetectorPlan, samples: Sequence[HOISample], fingerprints: dict[str, str],
                      pipelines: dict, scorer_keys: dict[str, str], vocabulary: Vocabulary, progress: bool,
                      skipped: dict[str, str], warm: set[str], group=(0, 1, None)):
    """One detector over ``samples``: cache detections, run every scorer; returns ``(detections by
    file name, mean detector ms per image, predictions by scorer, images detected in this run)``.

    ``group`` is ``(rank, world, state)`` of :func:`~hoi_mllm.sharding.process_group`: with several
    processes, process 0 first folds what an interrupted sharded run left; then every process reads
    the main logs (read-only: what is done), takes every ``world``-th image still to do and writes
    its own shard logs; process 0 folds them into the main logs and alone returns (the others get
    ``None``)."""
    from hoi_mllm.runner import LazyDetector, items_from_samples, run_detector

    rank, world, state = group
    metas = {name: {"detector": plan.spec, "detector_key": plan.key, "scorer": name,
                    "scorer_key": scorer_keys[name]} for name in pipelines}
    if world > 1:
        if rank == 0:
            _fold_shards(plan, vocabulary, metas, fingerprints).close()
        state.wait_for_everyone()
        main = _open_logs(plan, vocabulary, metas, fingerprints, writable=False)
        logs = _open_logs(plan, vocabulary, metas, fingerprints, f"rank-{rank}-of-{world}", known=main.cache.entries)
        done = {name: w.done | main.writers[name].done for name, w in logs.writers.items()}
    else:
        logs = _open_logs(plan, vocabulary, metas, fingerprints)
        done = {name: w.done for name, w in logs.writers.items()}
    cache, writers = logs.cache, logs.writers
    todo = [s for s in samples if s.file_name not in skipped and (
        cache.get(s.file_name, fingerprints[s.file_name]) is None or any(s.file_name not in d for d in done.values()))]
    todo = todo[rank::world]
    stats: dict = {}
    detector = LazyDetector(lambda: build_detector(plan.spec, vocabulary=vocabulary, **plan.options), warm_up=True)
    lost: list[dict] = []
    desc = f"cross-detector {plan.name}" + (f" [{rank + 1}/{world}]" if world > 1 else "")
    try:
        total, initial = (len(samples), len(samples) - len(todo)) if world == 1 else (len(todo), 0)
        with tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not progress) as bar:
            for item, image, dets in run_detector(
                    detector, items_from_samples(todo), lost, cache=cache, bar=bar,
                    batch_size=int(plan.options.get("batch_size", 8)),
                    need_image=lambda it: RECOGNISER in done and it.name not in done[RECOGNISER], stats=stats):
                for name, pipe in pipelines.items():
                    if item.name in done[name]:
                        continue
                    if name not in warm:  # the first call pays one-off costs (allocation, kernels): untimed
                        pipe.recognise_detections(image, dets, item.name)
                        warm.add(name)
                    t0 = time.perf_counter()
                    triplets = pipe.recognise_detections(image, dets, item.name)
                    triplets.extra.update(recognition_ms=round(1000 * (time.perf_counter() - t0), 3),
                                          image=fingerprints[item.name])
                    writers[name].write(triplets)
                    done[name].add(item.name)
    finally:
        skipped.update((s["file_name"], s["error"]) for s in lost)
        logs.close()
    computed = stats.get("detected", 0)
    if world > 1:
        atomic_write_json(plan.folder / SHARDS / f"notes-rank-{rank}-of-{world}.json",
                          {"skipped": {s["file_name"]: s["error"] for s in lost}, "detected": computed})
        state.wait_for_everyone()  # every shard is complete
        notes = _read_notes(plan.folder)  # every process: the next detector's images to do agree
        skipped.update(notes["skipped"])
        state.wait_for_everyone()
        if rank != 0:
            return None
        logs = _fold_shards(plan, vocabulary, metas, fingerprints)
        logs.close()
        computed = notes["detected"]
        cache, writers = logs.cache, logs.writers
    cache.finish()
    names = [s.file_name for s in samples if s.file_name not in skipped]
    detections = {n: cache.get(n, fingerprints[n]) for n in names}
    wanted = set(names)
    predictions = {name: [im for im in w.images if im.file_name in wanted] for name, w in writers.items()}
    return detections, _mean(cache.detector_ms(n) for n in names), predictions, computed


def _evaluate(protocol: str, samples: Sequence[HOISample], vocabulary: Vocabulary, images: list,
              config: CrossDetectorConfig) -> tuple[dict, dict, dict]:
    """``(metrics %, U-R@K %, full report)`` of one predictions list."""
    if protocol == "vcoco":
        from hoi_mllm.eval.vcoco import VCOCOConfig, evaluate_vcoco

        result = evaluate_vcoco(samples, images, vocabulary, VCOCOConfig(iou_threshold=config.iou_threshold))
        return {k: percent(s.mean) for k, s in result.scenarios.items()}, {}, result.to_dict()
    from hoi_mllm.eval.hicodet import HICODetConfig, evaluate_hicodet

    result = evaluate_hicodet(samples, images, vocabulary, HICODetConfig(
        split=config.split, settings=("default",), iou_threshold=config.iou_threshold,
        missing_classes=config.missing_classes, recall_ks=tuple(config.recall_ks)))
    recall = {int(k): percent(v) for k, v in (result.unseen_recall or {}).items()}
    return {k: percent(v) for k, v in result.settings["default"].summary.items()}, recall, result.to_dict()


def run_cross_detector(recogniser, detectors: str | Sequence[str], samples: Sequence[HOISample],
                       output_dir: str | Path, *, config: CrossDetectorConfig | None = None,
                       train_samples: Sequence[HOISample] | None = None, vocabulary: str | Vocabulary | None = None,
                       **options) -> CrossDetectorResult | None:
    """Evaluate one recogniser under several detectors (and baselines on the same boxes); write the table.

    Args:
        recogniser: an :class:`~hoi_mllm.pipeline.HOIPipeline` (its recogniser, pair and
            post-processing configs are used; its detector is not), a recogniser
            (``HOIRecogniser`` / ``LikelihoodScorer``: default pair and post-processing configs), or
            ``None`` to run the baselines only.
        detectors: detector specs (``NAME[:key=value,...]``), a list or one ``;``-separated string.
        samples: the test annotations; their images are read from ``sample.path`` (or ``sample.image``).
        output_dir: where caches, predictions and the table go (created).
        config: :class:`CrossDetectorConfig`; keyword ``options`` override its fields (``split=``,
            ``baselines=``, ``limit=``, ...).
        train_samples: training annotations, needed by the ``prior`` baseline.
        vocabulary: the vocabulary when ``recogniser`` is None (else the recogniser's; must agree).
    Returns:
        :class:`CrossDetectorResult`, also written to ``output_dir/cross_detector.{md,json}``; ``None`` in
        the processes other than 0 of a sharded run.
    Raises:
        ValueError: a bad spec, split, protocol or baseline (naming the allowed values).
        FileNotFoundError: images that are not there.
    """
    from hoi_mllm.pipeline import HOIPipeline

    config = replace(config or CrossDetectorConfig(), **options)
    pair_config, post_config = PairProposalConfig(), PostprocessConfig()
    if isinstance(recogniser, HOIPipeline):
        pair_config, post_config, recogniser = recogniser.pair_config, recogniser.post_config, recogniser.recogniser
    if recogniser is None and vocabulary is None:
        raise ValueError("without a recogniser, pass vocabulary=... (the baselines need it)")
    vocab = recogniser.vocabulary if recogniser is not None else load_vocabulary(vocabulary)
    if vocabulary is not None and load_vocabulary(vocabulary).to_dict() != vocab.to_dict():
        raise ValueError(f"vocabulary {load_vocabulary(vocabulary).name!r} differs from the recogniser's {vocab.name!r}")
    protocol = config.protocol or ("vcoco" if vocab.name == "vcoco" else "hico-det")
    if config.split:
        vocab.split(config.split)  # an unknown split fails here, naming the allowed ones
    all_samples = list(samples)
    eval_samples = all_samples[: config.limit]
    if not eval_samples:
        raise ValueError("no test images to evaluate (the annotations list none)")
    _check_images(eval_samples)
    output_dir = Path(output_dir)
    plans = plan_detectors(detectors, vocab, all_samples, output_dir, config.device)
    scorers = ({RECOGNISER: recogniser} if recogniser is not None else {})
    scorers.update(build_baselines(config.baselines, vocab, train_samples, config.split, config.seed,
                                   config.prior_smoothing))
    if not scorers:
        raise ValueError("nothing to evaluate: give a recogniser or at least one baseline (random, prior)")
    pipelines = {n: HOIPipeline(None, s, pair_config, post_config) for n, s in scorers.items()}
    identities = {n: scorer_identity(s, pair_config, post_config) for n, s in scorers.items()}
    scorer_keys = {n: identity_key(i) for n, i in identities.items()}
    fingerprints = {s.file_name: image_fingerprint(s) for s in eval_samples}

    skipped: dict[str, str] = {}
    warm: set[str] = set()
    rows: list[CrossDetectorRow] = []
    runs: list[DetectorRun] = []
    group = process_group()
    for plan in plans:
        done = _detect_and_score(plan, eval_samples, fingerprints, pipelines, scorer_keys, vocab, config.progress,
                                 skipped, warm, group)
        if done is None:  # another process of a sharded run: process 0 folds, evaluates and writes
            continue
        detections, det_ms, predictions, computed = done
        recall = detector_box_recall(eval_samples, detections, vocab.num_objects, vocab.human_object,
                                     config.iou_threshold)
        runs.append(DetectorRun(plan.spec, plan.name, plan.key, plan.folder, len(detections),
                                sum(len(d) for d in detections.values()), computed, len(detections) - computed,
                                det_ms, recall))
        for name, images in predictions.items():
            metrics, unseen_recall, report = _evaluate(protocol, eval_samples, vocab, images, config)
            report["detector"], report["scorer"] = plan.spec, name
            evaluation = plan.folder / f"evaluation_{name}.json"
            atomic_write_json(evaluation, report)
            rows.append(CrossDetectorRow(
                detector=plan.spec, scorer=name, metrics=metrics, unseen_recall=unseen_recall, detector_ms=det_ms,
                scorer_ms=_mean(im.extra.get("recognition_ms") for im in images), box_recall=recall.to_dict(),
                images=len(images), triplets=sum(len(im) for im in images),
                predictions=str(plan.folder / f"predictions_{name}.jsonl"), evaluation=str(evaluation)))
    result = CrossDetectorResult(
        protocol=protocol, vocabulary=vocab.name, split=config.split, images=len(eval_samples), rows=rows,
        detectors=runs, scorers=identities, recall_ks=tuple(config.recall_ks),
        skipped=[{"file_name": n, "error": e} for n, e in skipped.items()],
        settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()})
    rank, world, state = group
    if rank == 0:
        result.save(output_dir)
    if state is not None:
        state.wait_for_everyone()
    return result if rank == 0 else None
