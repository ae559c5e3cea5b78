"""HOI annotation file formats: telling them apart by content, load errors and the load report, and
the per-image assembly every reader shares (instance de-duplication, pair grouping, box checks).

Accepted formats (``FORMATS``):

- ``hicodet-upt``: UPT-style HICO-DET ``instances_{train,test}2015.json`` (fredzzhang/hicodet), also
  what the synthetic world writes: one row per triplet.
- ``hicodet-ppdm``: PPDM / CDN / GEN-VLKT ``trainval_hico.json`` / ``test_hico.json``: per image a list
  of boxes with COCO-91 category ids and HOI rows pointing into it.
- ``vcoco-upt``: UPT-style V-COCO ``instances_vcoco_{trainval,test}.json`` (fredzzhang/vcoco).
- ``vcoco-cdn``: CDN / GEN-VLKT ``trainval_vcoco.json`` / ``test_vcoco.json``.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoi_mllm.boxes import invalid_box_mask
from hoi_mllm.data.sample import HOISample, SampleCounts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormatInfo:
    """One accepted annotation format: the vocabulary it implies and what its files look like."""

    name: str
    dataset: str  # built-in vocabulary used when no vocabulary.json lies beside the file
    description: str


FORMATS: dict[str, FormatInfo] = {f.name: f for f in (
    FormatInfo("hicodet-upt", "hico-det",
               "UPT-style HICO-DET instances_{train,test}2015.json: a dict with 'annotation' (per image "
               "'boxes_h', 'boxes_o', 'hoi', 'object', 'verb'), 'filenames', 'size', 'objects', 'verbs'"),
    FormatInfo("hicodet-ppdm", "hico-det",
               "PPDM/CDN/GEN-VLKT HICO-DET trainval_hico.json / test_hico.json: a list of images with "
               "'file_name', 'annotations' ('bbox' xyxy, COCO-91 'category_id') and 'hoi_annotation' "
               "('subject_id', 'object_id', 1-based verb 'category_id', optional 1-based 'hoi_category_id')"),
    FormatInfo("vcoco-upt", "vcoco",
               "UPT-style V-COCO instances_vcoco_{trainval,test}.json: a dict with 'annotations' (per image "
               "'boxes_h', 'boxes_o', 'actions', 'objects', 'file_name'), 'classes', 'objects'"),
    FormatInfo("vcoco-cdn", "vcoco",
               "CDN/GEN-VLKT V-COCO trainval_vcoco.json / test_vcoco.json: a list of images with 'file_name', "
               "'annotations' ('bbox', COCO-91 'category_id') and 'hoi_annotation' ('subject_id', "
               "'object_id' (-1: role absent), 0-based 'category_id' into the 29 CDN actions)"),
)}


def accepted_formats() -> str:
    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values())


class AnnotationError(ValueError):
    """A problem in an annotation file, named by file, image (position and file name) and field."""

    def __init__(self, path, problem: str, *, image: int | None = None, file_name: str | None = None,
                 field: str | None = None):
        where = [str(path)]
        if image is not None:
            where.append(f"image {image}" + (f" ({file_name})" if file_name else ""))
        if field:
            where.append(f"field {field}")
        super().__init__(": ".join(where) + ": " + problem)
        self.path, self.image, self.file_name, self.field = str(path), image, file_name, field


# ------------------------------------------------------------------------------------------ detection
def _hoi_list_evidence(data: list) -> tuple[int, int]:
    """Votes (hico, vcoco) from the rows of a list-of-images file (PPDM/CDN layout)."""
    hico = vcoco = 0
    for img in data:
        name = str(img.get("file_name", ""))
        hico += name.startswith("HICO_")
        vcoco += name.startswith("COCO_")
        for hoi in img.get("hoi_annotation") or ():
            if not isinstance(hoi, dict):
                continue
            hico += "hoi_category_id" in hoi
            vcoco += hoi.get("object_id") == -1 or hoi.get("category_id") == 0
    return hico, vcoco


def detect_format(data, path: str | Path = "<data>", hint: str | None = None) -> str:
    """Name of the format (a key of ``FORMATS``) of parsed annotation JSON ``data``.

    The layout decides between the dict forms (UPT-style) and the list-of-images form; within the
    latter, HICO-DET and V-COCO are told apart by content (``hoi_category_id`` or ``HICO_`` file names
    vs. absent roles ``object_id == -1``, 0-based verbs or ``COCO_`` file names), then by the file name,
    then by ``hint`` (a vocabulary name). Raises ``ValueError`` naming the accepted formats.
    """
    path = Path(path)
    if isinstance(data, dict):
        if "annotation" in data and "filenames" in data:
            return "hicodet-upt"
        anns = data.get("annotations")
        if isinstance(anns, list) and ("classes" in data or (anns and isinstance(anns[0], dict) and "actions" in anns[0])):
            return "vcoco-upt"
    elif isinstance(data, list) and all(isinstance(x, dict) and "annotations" in x and "hoi_annotation" in x
                                        for x in data[:50]) and data:
        hico, vcoco = _hoi_list_evidence(data)
        if hico and not vcoco:
            return "hicodet-ppdm"
        if vcoco and not hico:
            return "vcoco-cdn"
        for text in (path.name.lower(), str(hint or "").lower()):
            if "vcoco" in text or "v-coco" in text:
                return "vcoco-cdn"
            if "hico" in text:
                return "hicodet-ppdm"
        raise ValueError(f"{path}: a list of images with 'hoi_annotation', but whether it is HICO-DET (hicodet-ppdm) "
                         f"or V-COCO (vcoco-cdn) cannot be told from its content ({hico} HICO-DET and {vcoco} "
                         f"V-COCO signs); pass format='hicodet-ppdm' or format='vcoco-cdn'")
    kind = type(data).__name__ + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
    raise ValueError(f"{path}: not a recognised HOI annotation file (a JSON {kind}); accepted formats: "
                     f"{accepted_formats()}")


# ------------------------------------------------------------------------------------------ report
@dataclass
class LoadReport:
    """What loading one annotation file found and changed.

    Attributes:
        path / format / vocabulary / image_root: what was loaded, how, and where images are looked up.
        counts: images, images with pairs, instances, pairs, triplets and classes of the loaded samples.
        repairs: boxes changed by ``repair_boxes=True`` (each distinct instance box counted once).
        repair_kinds: those repairs by kind: ``swapped`` (x2 < x1 or y2 < y1), ``clipped`` (left the image).
        repair_examples: the first few repairs, ``"image 3 (x.jpg) boxes_h[0]: [..] -> [..]"``.
        duplicate_instances: source boxes merged into an identical box with the same label.
        duplicate_triplets: repeated (pair, verb) rows merged into one.
        no_class_triplets: triplets whose (verb, object) is not a class of the vocabulary (class ``-1``).
        roleless_triplets: triplets without an object (V-COCO roles marked absent, ``pair_object = -1``).
        skipped: rows not loaded, by reason (e.g. V-COCO actions without an action-role class).
        seconds: time spent reading and assembling.
    """

    path: str
    format: str
    vocabulary: str
    image_root: str | None = None
    counts: SampleCounts = field(default_factory=SampleCounts)
    repairs: int = 0
    repair_kinds: Counter = field(default_factory=Counter)
    repair_examples: list[str] = field(default_factory=list)
    duplicate_instances: int = 0
    duplicate_triplets: int = 0
    no_class_triplets: int = 0
    roleless_triplets: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "vocabulary": self.vocabulary,
                "image_root": self.image_root, **self.counts.as_dict(), "repairs": self.repairs,
                "repair_kinds": dict(self.repair_kinds), "repair_examples": list(self.repair_examples),
                "duplicate_instances": self.duplicate_instances, "duplicate_triplets": self.duplicate_triplets,
                "no_class_triplets": self.no_class_triplets, "roleless_triplets": self.roleless_triplets,
                "skipped": dict(self.skipped), "seconds": round(self.seconds, 3)}


@dataclass
class ReadContext:
    """What a format reader needs besides the parsed JSON."""

    path: Path
    vocabulary: object  # hoi_mllm.prompts.Vocabulary
    repair_boxes: bool
    report: LoadReport
    progress: bool = False

    def error(self, problem: str, image: int | None = None, file_name: str | None = None,
              field: str | None = None) -> AnnotationError:
        return AnnotationError(self.path, problem, image=image, file_name=file_name, field=field)


# ------------------------------------------------------------------------------------------ boxes
def box_problem(box: np.ndarray, size: tuple[int, int] | None) -> str:
    """Why one xyxy box is invalid (for error messages), or ``""``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not np.isfinite(box).all():
        return f"box {box.tolist()} has a non-finite coordinate"
    if x2 < x1 or y2 < y1:
        return f"box {box.tolist()} has x2 < x1 or y2 < y1 (xyxy pixels expected)"
    if size is not None and (x1 < 0 or y1 < 0 or x2 > size[0] or y2 > size[1]):
        return f"box {box.tolist()} lies outside the {size[0]}x{size[1]} image"
    if size is None and (x1 < 0 or y1 < 0):
        return f"box {box.tolist()} has a negative coordinate"
    return ""


def invalid_boxes(boxes: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``[B, 4]`` xyxy -> ``[B]`` bool: non-finite, reversed, or outside the image (negative when size unknown)."""
    bad = invalid_box_mask(boxes, size)
    if size is None:
        bad = bad | (boxes[:, 0] < 0) | (boxes[:, 1] < 0)
    return bad


def repair_boxes(boxes: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swap reversed coordinates, then clip to the image (to ``>= 0`` when its size is unknown).

    ``boxes [B, 4]`` xyxy -> ``(repaired [B, 4], swapped [B] bool, clipped [B] bool)``.
    """
    lo = np.minimum(boxes[:, :2], boxes[:, 2:])
    hi = np.maximum(boxes[:, :2], boxes[:, 2:])
    swapped = (lo != boxes[:, :2]).any(1)
    fixed = np.concatenate([lo, hi], axis=1)
    limit = np.array([size[0], size[1]] * 2, dtype=fixed.dtype) if size is not None else np.full(4, np.inf)
    clipped_boxes = np.clip(fixed, 0, limit)
    clipped = (clipped_boxes != fixed).any(1)
    return clipped_boxes, swapped, clipped


# ------------------------------------------------------------------------------------------ assembly
def assemble_sample(ctx: ReadContext, index: int, file_name: str, size: tuple[int, int] | None,
                    boxes: list, labels: list[int], where: list[str],
                    rows_h: list[int], rows_o: list[int], rows_verb: list[int], rows_class: list[int],
                    extra: dict | None = None) -> HOISample:
    """Build one :class:`HOISample` from source instances and triplet rows.

    Args:
        boxes: ``R`` source boxes (xyxy pixels), possibly repeated; ``labels`` their ``R`` object ids;
            ``where`` their ``R`` field names for messages (e.g. ``"annotation[3].boxes_h[1]"``).
        rows_h / rows_o: ``T`` source-box indices of each triplet's human and object (``-1``: no object).
        rows_verb / rows_class: ``T`` verb ids and class ids (``-1``: not a class of the vocabulary).

    Instances that are the same box with the same label become one; instance order is first use by
    the rows (human, then object), then unused source boxes in source order. Rows with the same human
    and object instances become one pair (pairs in order of first row, verbs sorted). Invalid boxes
    raise, or with ``ctx.repair_boxes`` are repaired and counted.
    """
    try:  # [R, 4]; a ragged or non-numeric box raises here
        src = np.array(boxes, dtype=np.float64).reshape(len(boxes), 4)
    except (ValueError, TypeError):
        r = next((r for r, b in enumerate(boxes) if not _is_box(b)), 0)
        raise ctx.error(f"box {boxes[r]!r} is not 4 numbers [x1, y1, x2, y2]", index, file_name, where[r]) from None
    boxes = src.tolist()
    order: list[int] = []
    used = bytearray(len(boxes))
    for h, o in zip(rows_h, rows_o):
        for r in (h, o):
            if r >= 0 and not used[r]:
                used[r] = 1
                order.append(r)
    order.extend(r for r in range(len(boxes)) if not used[r])

    key_to_new: dict[tuple, int] = {}
    new_of: list[int] = [0] * len(boxes)
    first_src: list[int] = []
    for r in order:
        key = (labels[r], *boxes[r])
        j = key_to_new.get(key)
        if j is None:
            j = key_to_new[key] = len(first_src)
            first_src.append(r)
        new_of[r] = j
    ctx.report.duplicate_instances += len(boxes) - len(first_src)
    out_boxes = src[first_src].reshape(-1, 4)
    out_labels = np.array([labels[r] for r in first_src], dtype=np.int64)
    out_boxes = _checked_boxes(ctx, index, file_name, size, out_boxes, [where[r] for r in first_src])

    pair_of: dict[tuple[int, int], int] = {}
    verbs: list[dict[int, int]] = []
    for h, o, v, c in zip(rows_h, rows_o, rows_verb, rows_class):
        key = (new_of[h], new_of[o] if o >= 0 else -1)
        p = pair_of.get(key)
        if p is None:
            p = pair_of[key] = len(verbs)
            verbs.append({})
        if v in verbs[p]:
            ctx.report.duplicate_triplets += 1
        verbs[p][v] = c
    keys = list(pair_of)
    return HOISample(
        file_name=file_name, image_size=size, boxes=out_boxes.astype(np.float32), labels=out_labels,
        pair_human=np.array([k[0] for k in keys], dtype=np.int64),
        pair_object=np.array([k[1] for k in keys], dtype=np.int64),
        pair_verbs=[tuple(sorted(d)) for d in verbs],
        pair_classes=[tuple(d[v] for v in sorted(d)) for d in verbs],
        image_id=index, extra=extra or {},
    )


def _is_box(b) -> bool:
    return isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(x, (int, float)) for x in b)


def _checked_boxes(ctx: ReadContext, index: int, file_name: str, size, boxes: np.ndarray,
                   where: list[str]) -> np.ndarray:
    bad = invalid_boxes(boxes, size)  # [B]
    if not bad.any():
        return boxes
    first = int(np.flatnonzero(bad)[0])
    if not ctx.repair_boxes or not np.isfinite(boxes[bad]).all():
        hint = "" if not np.isfinite(boxes[first]).all() else "; load with repair_boxes=True (--repair-boxes) to clip and swap"
        raise ctx.error(box_problem(boxes[first], size) + hint, index, file_name, where[first])
    fixed, swapped, clipped = repair_boxes(boxes[bad], size)
    report = ctx.report
    report.repairs += int(bad.sum())
    report.repair_kinds["swapped"] += int(swapped.sum())
    report.repair_kinds["clipped"] += int(clipped.sum())
    for k, j in enumerate(np.flatnonzero(bad)):
        if len(report.repair_examples) >= 10:
            break
        report.repair_examples.append(f"image {index} ({file_name}) {where[j]}: "
                                      f"{boxes[j].tolist()} -> {fixed[k].tolist()}")
    boxes = boxes.copy()
    boxes[bad] = fixed
    return boxes
