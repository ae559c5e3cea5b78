"""Training data: annotations after the zero-shot filter, held-out images, and detector-agnostic proposals.

:func:`load_training_data` reads the training annotations, holds out ``data.val_images`` images
(seeded; kept whole, with every label, for evaluation only), applies the split's zero-shot filter
to the rest and fails early when no seen pair is left. :func:`training_detections` gives, per
training image, the boxes pairs are proposed from (``pairs.source``):

``ground-truth``  the annotated instances (score 1);
``detector``      any detector's boxes, run once per dataset and cached as a ``hoi-mllm/detections``
                  file (in the run folder or at ``pairs.cache``; ``pairs.recompute`` runs it again);
``both``          the annotated instances plus the detector's boxes that do not duplicate one
                  (same label, IoU >= ``pairs.dedupe_iou``): training sees annotated pairs and the
                  detector's false positives, as inference will.

:class:`BatchStream` orders images as an endless, seeded stream of epochs; a batch is a pure
function of its global index, so the data position of a checkpoint is one integer.

Several sources (``data.sources``, EoID's detection-only data): each entry is labelled (read and
filtered as ``data.train``) or detection-only (:func:`~hoi_mllm.data.coco_detections.read_detection_only`:
boxes, no interaction label; its images get no stage one and no interactiveness loss,
:mod:`~hoi_mllm.finetune.targets`). They follow ``data.train`` in :attr:`TrainingData.train`;
:class:`MixedStream` draws each stream position from a source with probability proportional to its
``ratio`` (``data.train_ratio`` for ``data.train``), seeded by the position alone.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hoi_mllm.data import FilterReport, HOISample, filter_zero_shot, read_annotations, resolve_vocabulary
from hoi_mllm.detectors.ground_truth import MERGE_IOU, instance_detections
from hoi_mllm.finetune.config import DataConfig, PairsConfig
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What a run trains and validates on.

    Attributes:
        vocabulary: the dataset's vocabulary.
        split: the zero-shot split (``None``: the default setting).
        train: training samples after the zero-shot filter (held-out images excluded).
        val: held-out samples with their full annotation (evaluation only, never trained on).
        report: the zero-shot filter's report (``None`` without a split).
        source: the training annotation file.
    """

    vocabulary: object
    split: str | None
    train: list[HOISample]
    val: list[HOISample]
    report: FilterReport | None
    source: str
    groups: list[tuple[int, int, float]] | None = None  # (start, stop, ratio) of each source in train; None: one


def normalise_split(split: str | None) -> str | None:
    return None if split in (None, "", "default", "none") else split


def load_training_data(config: DataConfig) -> TrainingData:
    """Read, hold out, filter and check the training data of a config (see the module docstring).

    Raises:
        FileNotFoundError: no annotation file / image folder.
        ValueError: an unknown split (naming the allowed ones), or no seen pair left after filtering.
    """
    path = Path(config.train)
    if not path.is_file():
        raise FileNotFoundError(f"training annotation file not found: {path} (config key data.train)")
    samples, report = read_annotations(path, config.vocabulary, config.image_root, config.repair_boxes)
    vocab = resolve_vocabulary(path, report.format, config.vocabulary)
    split = normalise_split(config.split)
    if split is not None:
        vocab.split(split)  # an unknown split fails here, naming the allowed ones
    if config.max_images is not None:
        samples = samples[: config.max_images]
    if config.val_annotations:
        val = read_annotations(config.val_annotations, vocab, None, config.repair_boxes)[0]
        train = samples
    else:
        if config.val_images >= len(samples):
            raise ValueError(f"data.val_images={config.val_images} leaves no training image out of {len(samples)}")
        held = set(np.random.default_rng(config.seed).choice(len(samples), config.val_images, replace=False).tolist())
        val = [s for i, s in enumerate(samples) if i in held]
        train = [s for i, s in enumerate(samples) if i not in held]
    freport = None
    if split is not None:
        train, freport = filter_zero_shot(train, vocab, split)
    if not any(s.num_pairs for s in train):
        what = f"after the {split!r} zero-shot filter" if split else "in it"
        raise ValueError(f"{path}: no annotated (seen) pair left {what} among {len(train)} training images; "
                         "nothing to learn from (check data.train, data.split and data.max_images)")
    groups = None
    if config.sources:
        groups = [(0, len(train), config.train_ratio)]
        for k, entry in enumerate(config.sources):
            more = read_source(entry, vocab, split, config.repair_boxes, f"data.sources[{k}]")
            groups.append((len(train), len(train) + len(more), float(entry.get("ratio", 1.0))))
            train = train + more
    return TrainingData(vocab, split, train, val, freport, str(path), groups)


# --------------------------------------------------------------------------- several sources
SOURCE_KEYS = {"file": "annotation file", "labels": "true: annotated; false: detection-only",
               "ratio": "share of the sampled images", "image_root": "folder of the images",
               "vocabulary": "the file's own vocabulary (HOI files)", "include_crowd": "keep COCO crowd boxes",
               "skip_degenerate": "skip zero-sized boxes, counted",
               "images_of": "detection-only: keep only the images this HOI file lists (by COCO image id; "
                            "pseudo-V-COCO: the V-COCO trainval file)"}


def check_sources(sources: list) -> None:
    """Raise a :class:`~hoi_mllm.finetune.schema.ConfigError` naming the entry and key of a bad ``data.sources``."""
    from hoi_mllm.finetune.schema import ConfigError

    for k, entry in enumerate(sources):
        where = f"data.sources[{k}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: a source is a mapping with keys {', '.join(SOURCE_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(SOURCE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: " + "; ".join(
                f"{k} ({h})" for k, h in SOURCE_KEYS.items()))
        if not entry.get("file"):
            raise ConfigError(f"{where}: key 'file' is not set (the source's annotation file)")
        for key in ("labels", "include_crowd", "skip_degenerate"):
            if key in entry and not isinstance(entry[key], bool):
                raise ConfigError(f"{where}.{key} takes true or false, got {entry[key]!r}")
        if entry.get("images_of") and entry.get("labels", False):
            raise ConfigError(f"{where}.images_of restricts a detection-only source (labels: false); this source is "
                              "labelled")
        ratio = entry.get("ratio", 1.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ConfigError(f"{where}.ratio takes a number > 0, got {ratio!r}")


def read_source(entry: dict, vocabulary, split: str | None, repair_boxes: bool, where: str) -> list[HOISample]:
    """The samples of one ``data.sources`` entry, in ``vocabulary``: labelled ones through the zero-shot filter of
    ``split``, detection-only ones with their labels dropped (:mod:`hoi_mllm.data.coco_detections`)."""
    from hoi_mllm.data.coco_detections import read_detection_only

    path = Path(entry["file"])
    if not path.is_file():
        raise FileNotFoundError(f"training source not found: {path} (config key {where}.file)")
    if entry.get("labels", False):
        samples = read_annotations(path, entry.get("vocabulary") or vocabulary, entry.get("image_root"),
                                   repair_boxes)[0]
        if split is not None:
            samples = filter_zero_shot(samples, vocabulary, split)[0]
        return samples
    samples, report = read_detection_only(path, vocabulary, entry.get("image_root"),
                                          include_crowd=entry.get("include_crowd", False),
                                          skip_degenerate=entry.get("skip_degenerate", False),
                                          source_vocabulary=entry.get("vocabulary"), images_of=entry.get("images_of"))
    log.info("%s: detection-only source %s: %d images, %d persons, %d objects, %d candidate pairs (%d images "
             "without a person, %d not listed by images_of and %d crowd boxes left out)", where, path, report.images,
             report.persons, report.objects, report.candidate_pairs, report.images_without_person,
             report.images_outside_list, report.crowd_excluded)
    return samples


# --------------------------------------------------------------------------- proposals
def annotated_detections(sample: HOISample, image_size, vocabulary_name: str | None = None,
                         merge_iou: float | None = None) -> Detections:
    """The annotated instances of a sample as detections (score 1); with ``merge_iou``, duplicate rows
    of one instance merged as the ``ground-truth`` detector does (the same function)."""
    return instance_detections(sample, image_size, vocabulary_name, merge_iou)


def merge_detections(annotated: Detections, detected: Detections, dedupe_iou: float) -> Detections:
    """``annotated`` plus the rows of ``detected`` that duplicate no annotated box (same label, IoU >= ``dedupe_iou``)."""
    from hoi_mllm.boxes import box_iou

    if len(detected) == 0 or len(annotated) == 0:
        return Detections.cat([annotated, detected])
    iou = box_iou(torch.as_tensor(detected.boxes).float(), torch.as_tensor(annotated.boxes).float())  # [D, A]
    same = torch.as_tensor(detected.labels)[:, None] == torch.as_tensor(annotated.labels)[None, :]
    keep = ~((iou >= dedupe_iou) & same).any(1)
    return Detections.cat([annotated, detected[keep]])


def cache_path(config: PairsConfig, data_source: str) -> Path:
    """Where the detections of a detector over a dataset are cached: ``pairs.cache``, else one file per
    (detector spec, annotations file) under ``$HOI_MLLM_CACHE/pairs`` (default ``~/.cache/hoi_mllm``),
    shared by every run over that dataset (each zero-shot recipe trains on the same images). The file
    name carries the stamps (size, modification time) of the annotations file and of any file the
    detector spec names, so a rewritten dataset (a synthetic world generated again in place) or new
    weights get a cache of their own instead of stale detections."""
    from hoi_mllm.detectors import parse_detector_spec
    from hoi_mllm.env import cache_dir
    from hoi_mllm.eval.detection_cache import file_stamp

    if config.cache:
        return Path(config.cache)
    spec = str(config.detector)
    files = [Path(data_source)] + [Path(v) for v in parse_detector_spec(spec)[1].values()
                                   if isinstance(v, (str, Path)) and Path(v).is_file()]
    stamps = "|".join(f"{f.resolve()}={file_stamp(f)}" for f in files if f.is_file())
    tag = hashlib.sha256(f"{spec}|{Path(data_source).resolve()}|{stamps}".encode()).hexdigest()[:10]
    name = spec.split(":", 1)[0].replace("/", "_")
    return cache_dir() / "pairs" / f"{name}_{Path(data_source).stem}_{tag}.json"


def detector_detections(config: PairsConfig, samples: list[HOISample], vocabulary, cache: Path,
                        progress: bool = True) -> dict[str, Detections]:
    """The detector's detections of every sample: from the cache, the detector run on the images the cache
    lacks only (then added to it); ``pairs.recompute`` runs it on every image and rewrites the cache.

    Returns ``file_name -> Detections`` (labels are object ids of ``vocabulary``).
    """
    from hoi_mllm.detectors import build_detector, detector_class, parse_detector_spec
    from hoi_mllm.detectors.file import read_detections_file, write_detections_file
    from hoi_mllm.runner import items_from_samples, run_detector

    cached: dict[str, Detections] = {}
    if cache.is_file() and not config.recompute:
        entries, header = read_detections_file(cache, vocabulary)
        if header.get("detector") not in (None, config.detector):
            log.warning("%s was written by detector %r, the config names %r", cache, header.get("detector"),
                        config.detector)
        cached = {n: Detections.create(e["boxes"], e["scores"], e["labels"], e["image_size"] or (0, 0),
                                       vocabulary.name) for n, e in entries.items()}
    todo = [s for s in samples if s.file_name not in cached]
    if not todo:
        log.info("training detections from the cache %s", cache)
        return {s.file_name: cached[s.file_name] for s in samples}
    if cached:
        log.info("the cache %s lacks %d of the training images (e.g. %s); detecting those", cache, len(todo),
                 todo[0].file_name)
    name, options = parse_detector_spec(str(config.detector))
    if "annotations" in detector_class(name).own_options() and "annotations" not in options:
        options["annotations"] = samples  # ground-truth-keyed detectors (jitter) read the training samples
    detector = build_detector(name, vocabulary=vocabulary, **options)
    skipped: list[dict] = []
    with tqdm(total=len(todo), desc=f"detecting ({name})", unit="img", disable=not progress) as bar:
        for item, _, d in run_detector(detector, items_from_samples(todo), skipped, bar=bar):
            cached[item.name] = d
    if skipped:
        raise ValueError(f"the detector could not process {len(skipped)} training image(s): " + "; ".join(
            f"{s['file_name']}: {s['error']}" for s in skipped[:3]))
    write_detections_file(cache, cached, vocabulary.name, detector=config.detector)
    log.info("wrote the training detections of %d images (%d new) to %s", len(cached), len(todo), cache)
    return {s.file_name: cached[s.file_name] for s in samples}


def training_detections(config: PairsConfig, sample: HOISample, image_size, detected: dict[str, Detections] | None,
                        vocabulary_name: str | None = None) -> Detections:
    """The boxes pairs of one training image are proposed from (``pairs.source``; annotated instances merged
    by class-wise NMS when ``pairs.merge_duplicates``, :func:`hoi_mllm.boxes.merge_instances`)."""
    annotated = annotated_detections(sample, image_size, vocabulary_name, MERGE_IOU if config.merge_duplicates else None)
    if config.source == "ground-truth":
        return annotated
    found = detected[sample.file_name] if detected is not None else None
    if found is None:
        raise ValueError(f"no detections for training image {sample.file_name!r}")
    found = Detections.create(found.boxes, found.scores, found.labels, image_size, vocabulary_name)
    return found if config.source == "detector" else merge_detections(annotated, found, config.dedupe_iou)


# --------------------------------------------------------------------------- order
class BatchStream:
    """Endless seeded order of ``n`` items: epoch ``e`` is ``randperm(n)`` seeded by ``(seed, e)``.

    Global batch ``g`` of a run with ``world`` processes covers stream positions
    ``[g * B * world, (g + 1) * B * world)``; process ``rank`` takes its ``B`` of them. So a batch
    depends on ``(seed, g, rank)`` only, and resuming needs ``g`` alone.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("BatchStream needs at least one item")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def batch(self, g: int) -> list[int]:
        """Item indices of global batch ``g`` for this process."""
        start = (g * self.world + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            out.append(int(self._perm(pos // self.n)[pos % self.n]))
        return out

    def epoch_of(self, g: int) -> float:
        return g * self.world * self.batch_size / self.n


class MixedStream(BatchStream):
    """:class:`BatchStream` over several sources: stream position ``p`` draws its source with probability
    proportional to the ratios (a generator seeded by ``(seed, p)``) and takes that source's item at ``p`` in the
    source's own seeded epoch stream. Still a pure function of ``(seed, g, rank)``.

    Args:
        groups: ``(start, stop, ratio)`` of each source's items (:attr:`TrainingData.groups`).
    """

    def __init__(self, groups: list[tuple[int, int, float]], batch_size: int, seed: int, rank: int = 0,
                 world: int = 1):
        groups = [g for g in groups if g[1] > g[0]]
        super().__init__(groups[-1][1] if groups else 0, batch_size, seed, rank, world)
        self.groups = groups
        weights = np.asarray([r for _, _, r in groups], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.streams = [BatchStream(b - a, 1, seed + 1 + k) for k, (a, b, _) in enumerate(groups)]

    def batch(self, g: int) -> list[int]:
        start = (g * self.world + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            k = int(np.random.default_rng([self.seed, pos]).choice(len(self.groups), p=self.weights))
            out.append(self.groups[k][0] + self.streams[k].batch(pos)[0])
        return out


def make_stream(data: TrainingData, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> BatchStream:
    """The order of a run's training images: one source, or several mixed by their ratios."""
    if data.groups is None:
        return BatchStream(len(data.train), batch_size, seed, rank, world)
    return MixedStream(data.groups, batch_size, seed, rank, world)
