"""Datasets: HICO-DET and V-COCO annotation files (and the synthetic world) as :class:`HOISample` lists.

::

    samples = load_annotations("hicodet/instances_test2015.json")        # format detected from content
    samples, report = read_annotations(path, repair_boxes=True)          # + LoadReport (counts, repairs)
    train, freport = filter_zero_shot(samples, vocab, "rare_first")      # zero-shot training filter
    torch_ds, hf_ds = HOIDataset(train), to_hf_dataset(train)            # images decoded only when used
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from hoi_mllm.data.filters import FilterReport, filter_zero_shot
from hoi_mllm.data.formats import FORMATS, AnnotationError, LoadReport, ReadContext, detect_format
from hoi_mllm.data.hicodet import read_hicodet_ppdm, read_hicodet_upt
from hoi_mllm.data.sample import HOISample, SampleCounts, count_samples
from hoi_mllm.data.vcoco import CDN_ACTIONS, read_vcoco_cdn, read_vcoco_upt

__all__ = [
    "FORMATS", "AnnotationError", "CDN_ACTIONS", "FilterReport", "HOIDataset", "HOISample", "LoadReport",
    "SampleCounts", "collate_samples", "count_samples", "default_image_root", "detect_format", "filter_zero_shot",
    "load_annotations", "read_annotations", "resolve_vocabulary", "to_hf_dataset",
]

log = logging.getLogger(__name__)

_LAZY = {"HOIDataset", "collate_samples", "to_hf_dataset"}  # torch datasets: imported on first use only


def __getattr__(name: str):
    if name in _LAZY:  # reading annotations (and evaluating) never imports torch
        from hoi_mllm.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

READERS = {
    "hicodet-upt": read_hicodet_upt,
    "hicodet-ppdm": read_hicodet_ppdm,
    "vcoco-upt": read_vcoco_upt,
    "vcoco-cdn": read_vcoco_cdn,
}


def resolve_vocabulary(path: str | Path, fmt: str, vocabulary=None):
    """The vocabulary for an annotation file: the one given (name, path or object), else a
    ``vocabulary.json`` beside the file, else the built-in one of the format (hico-det / vcoco)."""
    from hoi_mllm.prompts import load_vocabulary

    if vocabulary is not None:
        return load_vocabulary(vocabulary)
    beside = Path(path).parent / "vocabulary.json"
    if beside.exists():
        return load_vocabulary(beside)
    return load_vocabulary(FORMATS[fmt].dataset)


def _image_folder(stem: str) -> str | None:
    """The usual image folder name of an annotation file (``instances_test2015`` -> ``test2015``)."""
    stem = stem.lower()
    if "vcoco" in stem or "v-coco" in stem:
        return "train2014" if "train" in stem else "val2014"
    if "hico" in stem or stem.endswith("2015"):
        return "train2015" if "train" in stem else "test2015"
    if stem.startswith("instances_"):
        return stem[len("instances_"):]
    return None


def default_image_root(path: str | Path, samples: list[HOISample]) -> Path:
    """Where the images of an annotation file are, when not told.

    Candidates, in order: ``images/<split>`` beside the file, ``../images/<split>`` (the
    GEN-VLKT ``annotations/`` layout), ``<split>``, ``hico_20160224_det/images/<split>``,
    ``mscoco2014/<split>``, ``images``, then the file's folder; ``<split>`` comes from the file name
    (``instances_test2015`` -> ``test2015``, ``trainval_vcoco`` -> ``train2014``, ``instances_train`` ->
    ``train``). The first candidate that holds the first image wins; without images on disk, the first
    existing candidate folder, else the file's folder.
    """
    here = Path(path).absolute().parent
    folder = _image_folder(Path(path).stem)
    candidates = []
    if folder:
        candidates += [here / "images" / folder, here.parent / "images" / folder, here / folder,
                       here / "hico_20160224_det" / "images" / folder, here / "mscoco2014" / folder]
    candidates += [here / "images", here]
    probe = next((s.file_name for s in samples), None)
    if probe is not None:
        for c in candidates:
            if (c / probe).exists():
                return c
    return next(c for c in candidates if c.is_dir())


def read_annotations(path: str | Path, vocabulary=None, image_root: str | Path | None = None,
                     repair_boxes: bool = False, fmt: str | None = None,
                     progress: bool = False) -> tuple[list[HOISample], LoadReport]:
    """Load an HOI annotation file and report what was found and repaired.

    Args:
        path: a file in one of ``FORMATS`` (detected from its content unless ``fmt`` names it).
        vocabulary: name, path or :class:`~hoi_mllm.prompts.Vocabulary`; default: ``vocabulary.json``
            beside the file, else the format's built-in vocabulary.
        image_root: folder the image file names are relative to (default: :func:`default_image_root`).
        repair_boxes: clip boxes to the image and swap reversed coordinates (counted in the report)
            instead of raising on them.
        progress: show a tqdm bar.

    Returns:
        ``(samples, report)``: one :class:`HOISample` per image in file order (images without pairs
        included) and a :class:`LoadReport`.
    """
    from hoi_mllm.io import read_json

    start = time.perf_counter()
    path = Path(path)
    data = read_json(path, what="annotation file")
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; accepted: {', '.join(FORMATS)}")
    hint = getattr(vocabulary, "name", vocabulary) if vocabulary is not None else None
    fmt = fmt or detect_format(data, path, hint=str(hint) if hint is not None else None)
    vocab = resolve_vocabulary(path, fmt, vocabulary)
    report = LoadReport(path=str(path), format=fmt, vocabulary=vocab.name)
    ctx = ReadContext(path=path, vocabulary=vocab, repair_boxes=repair_boxes, report=report, progress=progress)
    try:
        samples = READERS[fmt](data, ctx)
    except (KeyError, TypeError, AttributeError) as exc:  # structure other than the format's
        raise AnnotationError(path, f"does not have the structure of the {fmt} format ({type(exc).__name__}: "
                                    f"{exc}); expected {FORMATS[fmt].description}") from exc
    if image_root is not None:
        root = Path(image_root).absolute()
        if not root.is_dir():
            raise FileNotFoundError(f"image root folder not found: {root}")
    else:
        root = default_image_root(path, samples)
    for s in samples:
        s.image_root = root
    report.image_root = str(root)
    report.counts = count_samples(samples)
    report.seconds = time.perf_counter() - start
    if report.repairs:
        log.warning("%s: repaired %d boxes (%s)", path, report.repairs, dict(report.repair_kinds))
    if report.skipped:
        log.info("%s: skipped rows: %s", path, dict(report.skipped))
    return samples, report


def load_annotations(path: str | Path, vocabulary=None, image_root: str | Path | None = None,
                     repair_boxes: bool = False, fmt: str | None = None) -> list[HOISample]:
    """Load an HOI annotation file (any of ``FORMATS``) as one :class:`HOISample` per image.

    See :func:`read_annotations` for the arguments; box repairs are logged as a warning.
    """
    return read_annotations(path, vocabulary, image_root, repair_boxes, fmt)[0]
