"""Detection-only datasets: images with boxes and object labels, and no interaction labels.

EoID's last experiment (pseudo-V-COCO) trains on HICO-DET plus the COCO boxes of the V-COCO
training images: every human-object pair there is a *potential* pair whose interaction a teacher
names. Two kinds of file become such a source, as :class:`~hoi_mllm.data.sample.HOISample` lists
with no annotated pair (``pair_*`` empty) and ``extra["detection_only"] = True``:

``coco-instances``
    a COCO detection file (``instances_*.json``: ``images`` with ``id``, ``file_name``, ``width``,
    ``height``; ``annotations`` with ``image_id``, ``bbox`` as ``[x, y, w, h]`` pixels, ``category_id``
    of COCO's 91-id scheme, ``iscrowd``). Boxes become ``[x, y, x + w, y + h]``; crowd boxes are
    left out unless ``include_crowd``; object ids are the vocabulary's, by COCO name
    (:attr:`~hoi_mllm.prompts.Vocabulary.coco91_to_object`).
any HOI file of :data:`~hoi_mllm.data.FORMATS`
    read with its own vocabulary, its interaction labels dropped, its objects mapped by name to the
    target vocabulary. The dropped labels stay in ``extra["dropped_labels"]`` (the original sample,
    whose verbs are names of ``extra["dropped_vocabulary"]``) for ``teacher.kind=annotations`` alone,
    the oracle that measures the path; nothing else reads them.

Bad input is an error that names the file, the image and the field, or a count in the report,
never a silent drop: category ids outside COCO's 91-id scheme and boxes of width or height 0 raise
(``skip_degenerate`` counts and skips the latter instead); images without a person can give no pair
and are left out, counted; a source with no image left raises.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoi_mllm.data.formats import AnnotationError
from hoi_mllm.data.sample import HOISample

COCO_FORMAT = "coco-instances"
DETECTION_ONLY = "detection_only"  # key of HOISample.extra marking a detection-only image


@dataclass
class DetectionOnlyReport:
    """What reading a detection-only source found (``hoi-mllm data stats --detection-only``).

    Attributes:
        path: the file; format: ``coco-instances`` or the HOI format whose labels were dropped.
        vocabulary: the target vocabulary's name.
        images_in_file: images the file lists.
        images: images kept (with at least one person).
        images_without_person: images left out because they hold no person (no pair can form).
        images_outside_list: images left out because the ``images_of`` file does not list them (0 without one).
        persons, objects: kept boxes of persons and of other objects.
        candidate_pairs: person x other-box combinations of the kept images (every one enters stage two).
        crowd_excluded: COCO crowd boxes left out (``include_crowd`` false).
        degenerate_skipped: boxes of width or height 0 skipped (``skip_degenerate``).
        unmapped_objects: boxes whose object the target vocabulary lacks, by object name.
        dropped_pairs, dropped_triplets: interaction labels dropped (HOI files).
        seconds: time spent reading.
    """

    path: str
    format: str
    vocabulary: str
    images_in_file: int = 0
    images: int = 0
    images_without_person: int = 0
    images_outside_list: int = 0
    persons: int = 0
    objects: int = 0
    candidate_pairs: int = 0
    crowd_excluded: int = 0
    degenerate_skipped: int = 0
    unmapped_objects: dict = field(default_factory=dict)
    dropped_pairs: int = 0
    dropped_triplets: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if k == "seconds" else v) for k, v in self.__dict__.items()}


def is_coco_instances(data) -> bool:
    """Whether parsed JSON has the layout of a COCO detection file."""
    return (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list) and "classes" not in data
            and all(isinstance(a, dict) and "bbox" in a for a in data["annotations"][:5]))


def coco_xywh_to_xyxy(bbox) -> list[float]:
    """COCO ``[x, y, w, h]`` pixels to ``[x1, y1, x2, y2]``."""
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def read_detection_only(path: str | Path, vocabulary, image_root: str | Path | None = None,
                        include_crowd: bool = False, skip_degenerate: bool = False,
                        source_vocabulary=None, images_of: str | Path | None = None
                        ) -> tuple[list[HOISample], DetectionOnlyReport]:
    """Read a detection-only source (module docstring) mapped to ``vocabulary``'s objects.

    Args:
        path: a COCO ``instances_*.json`` or an HOI annotation file of a known format.
        vocabulary: the target vocabulary (name, path or object): object ids of the samples are its.
        image_root: folder of the images (default: found as for HOI files).
        include_crowd: COCO: keep ``iscrowd`` boxes (EoID and DETR leave them out of training).
        skip_degenerate: skip boxes of width or height 0 (counted) instead of raising.
        source_vocabulary: HOI files: the file's own vocabulary (default: as ``read_annotations`` finds it).
        images_of: an HOI annotation file (any known format): keep only the images it lists, matched by COCO
            image id (:func:`coco_image_id`; a COCO file's own ``id``). EoID's pseudo-V-COCO takes the COCO
            train2014 boxes of the V-COCO trainval images only: ``images_of=instances_vcoco_trainval.json``.
    Returns:
        ``(samples, report)``: the kept images in file order, each with boxes and labels and no pair.
    Raises:
        AnnotationError: a category id outside the 91-id scheme, a zero-width or zero-height box, a box of
            another shape, an ``images_of`` file none of whose images the source holds, or no image left.
    """
    from hoi_mllm.io import read_json
    from hoi_mllm.prompts import load_vocabulary

    start = time.perf_counter()
    path = Path(path)
    vocab = load_vocabulary(vocabulary)
    data = read_json(path, what="detection-only source")
    if is_coco_instances(data):
        samples, report = _read_coco(data, path, vocab, include_crowd, skip_degenerate)
    else:
        samples, report = _read_hoi(path, vocab, source_vocabulary, skip_degenerate)
    if images_of is not None:
        samples = _restrict(samples, report, images_of, path, vocab.human_object)
    if not samples:
        raise AnnotationError(path, f"no image with a person is left of {report.images_in_file} "
                                    f"({report.images_without_person} without a person); a detection-only source "
                                    "needs persons and objects")
    from hoi_mllm.data import default_image_root

    root = Path(image_root).absolute() if image_root is not None else default_image_root(path, samples)
    for s in samples:
        s.image_root = root
    report.seconds = time.perf_counter() - start
    return samples, report


def coco_image_id(file_name: str) -> int | None:
    """The COCO image id a file name carries (``COCO_train2014_000000000009.jpg`` -> 9; the last digit run of the
    stem), ``None`` without digits."""
    digits = re.findall(r"\d+", Path(str(file_name)).stem)
    return int(digits[-1]) if digits else None


def _sample_image_id(sample: HOISample) -> int | None:
    cid = sample.extra.get("coco_image_id")
    return int(cid) if isinstance(cid, int) else coco_image_id(sample.file_name)


def _restrict(samples: list[HOISample], report: DetectionOnlyReport, images_of, path: Path,
              human: int) -> list[HOISample]:
    """The samples whose COCO image id the ``images_of`` file lists; the others counted as ``images_outside_list``
    and taken out of the report's counts of kept images, persons, objects and candidate pairs."""
    from hoi_mllm.data import read_annotations

    listed = {coco_image_id(s.file_name) for s in read_annotations(images_of)[0]} - {None}
    if not listed:
        raise AnnotationError(path, f"images_of {images_of}: no file name there carries a COCO image id")
    keep, gone = [], []
    for s in samples:
        (keep if _sample_image_id(s) in listed else gone).append(s)
    if not keep:
        raise AnnotationError(path, f"none of the {len(samples)} images with a person is listed in images_of "
                                    f"{images_of} ({len(listed)} COCO image ids, e.g. {sorted(listed)[:3]}): a "
                                    "COCO file of another split?")
    report.images_outside_list = len(gone)
    for s in gone:
        persons = int((s.labels == human).sum())
        report.persons -= persons
        report.objects -= int(s.labels.shape[0]) - persons
        report.candidate_pairs -= persons * (int(s.labels.shape[0]) - 1)
    report.images = len(keep)
    return keep


def _keep(samples: list[HOISample], report: DetectionOnlyReport, human: int) -> list[HOISample]:
    """The samples with a person, counted into the report."""
    out = []
    for s in samples:
        persons = int((s.labels == human).sum())
        if persons == 0:
            report.images_without_person += 1
            continue
        report.persons += persons
        report.objects += int(s.labels.shape[0]) - persons
        report.candidate_pairs += persons * (int(s.labels.shape[0]) - 1)
        out.append(s)
    report.images = len(out)
    return out


def _empty_pairs() -> dict:
    return {"pair_human": np.zeros(0, dtype=np.int64), "pair_object": np.zeros(0, dtype=np.int64),
            "pair_verbs": [], "pair_classes": []}


def _read_coco(data: dict, path: Path, vocab, include_crowd: bool, skip_degenerate: bool):
    from hoi_mllm.prompts.vocabulary import coco_categories, normalise_name

    report = DetectionOnlyReport(str(path), COCO_FORMAT, vocab.name, images_in_file=len(data["images"]))
    coco = coco_categories()
    name_of = {int(c): n for c, n in zip(coco["category_ids"], coco["names"])}
    for c in data.get("categories", []) or []:  # a file whose categories renumber COCO's would be misread
        cid, name = c.get("id"), c.get("name")
        if cid in name_of and name is not None and normalise_name(str(name)) != normalise_name(name_of[cid]):
            raise AnnotationError(path, f"category id {cid} is named {name!r}, but in COCO's 91-id scheme it is "
                                        f"{name_of[cid]!r}; give a file with COCO's category ids", field="categories")
    to_object = vocab.coco91_to_object
    by_image: dict = {}
    for k, a in enumerate(data["annotations"]):
        by_image.setdefault(a.get("image_id"), []).append((k, a))
    samples = []
    for i, img in enumerate(data["images"]):
        file_name = str(img.get("file_name", ""))
        size = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else None
        boxes, labels = [], []
        for k, a in by_image.get(img.get("id"), []):
            where = f"annotations[{k}]"
            cid = a.get("category_id")
            if not isinstance(cid, int) or cid not in name_of:
                raise AnnotationError(path, f"category_id {cid!r} is outside COCO's 91-id scheme (allowed: the 80 "
                                            f"ids {min(name_of)}..{max(name_of)} in use, e.g. 1 person, 90 toothbrush)",
                                      image=i, file_name=file_name, field=f"{where}.category_id")
            if a.get("iscrowd", 0) and not include_crowd:
                report.crowd_excluded += 1
                continue
            bbox = a.get("bbox")
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) for v in bbox)):
                raise AnnotationError(path, f"bbox {bbox!r} is not 4 numbers [x, y, w, h]", image=i,
                                      file_name=file_name, field=f"{where}.bbox")
            if not (float(bbox[2]) > 0 and float(bbox[3]) > 0):
                if skip_degenerate:
                    report.degenerate_skipped += 1
                    continue
                raise AnnotationError(path, f"bbox {list(bbox)} has width or height <= 0 (COCO [x, y, w, h]); pass "
                                            "skip_degenerate (data source key skip_degenerate: true) to skip such "
                                            "boxes, counted", image=i, file_name=file_name, field=f"{where}.bbox")
            obj = to_object.get(cid)
            if obj is None:
                report.unmapped_objects[name_of[cid]] = report.unmapped_objects.get(name_of[cid], 0) + 1
                continue
            boxes.append(coco_xywh_to_xyxy(bbox))
            labels.append(obj)
        samples.append(HOISample(file_name, size, np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                 np.asarray(labels, dtype=np.int64), **_empty_pairs(), image_id=i,
                                 extra={DETECTION_ONLY: True, "coco_image_id": img.get("id")}))
    return _keep(samples, report, vocab.human_object), report


def _read_hoi(path: Path, vocab, source_vocabulary, skip_degenerate: bool):
    from hoi_mllm.data import read_annotations

    samples, load = read_annotations(path, source_vocabulary)
    from hoi_mllm.prompts import load_vocabulary

    src = load_vocabulary(source_vocabulary) if source_vocabulary is not None else None
    if src is None:
        from hoi_mllm.data import resolve_vocabulary

        src = resolve_vocabulary(path, load.format)
    report = DetectionOnlyReport(str(path), load.format, vocab.name, images_in_file=len(samples))
    to_target = np.array([-1 if vocab.object_index_or_none(n) is None else vocab.object_index_or_none(n)
                          for n in src.objects], dtype=np.int64)
    out = []
    for s in samples:
        keep = np.ones(s.labels.shape[0], dtype=bool)
        wh = s.boxes[:, 2:] - s.boxes[:, :2] if s.boxes.size else np.zeros((0, 2))
        flat = (wh <= 0).any(1)
        if flat.any():
            if not skip_degenerate:
                r = int(np.flatnonzero(flat)[0])
                raise AnnotationError(path, f"box {s.boxes[r].tolist()} has width or height 0; pass skip_degenerate "
                                            "to skip such boxes, counted", image=s.image_id, file_name=s.file_name)
            report.degenerate_skipped += int(flat.sum())
            keep &= ~flat
        mapped = to_target[s.labels] if s.labels.size else s.labels
        for r in np.flatnonzero(keep & (mapped < 0)):
            name = src.objects[int(s.labels[r])]
            report.unmapped_objects[name] = report.unmapped_objects.get(name, 0) + 1
        keep &= mapped >= 0
        report.dropped_pairs += s.num_pairs
        report.dropped_triplets += s.num_triplets
        out.append(HOISample(s.file_name, s.image_size, s.boxes[keep], mapped[keep], **_empty_pairs(),
                             image_id=s.image_id,
                             extra={**s.extra, DETECTION_ONLY: True, "dropped_labels": s,
                                    "dropped_vocabulary": src}))
    return _keep(out, report, vocab.human_object), report


def is_detection_only(sample: HOISample) -> bool:
    """Whether a sample comes from a detection-only source (no label says which of its pairs interact)."""
    return bool(sample.extra.get(DETECTION_ONLY, False))
