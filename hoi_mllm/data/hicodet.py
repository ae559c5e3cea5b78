"""HICO-DET readers: the UPT-style ``instances_*.json`` and the PPDM/CDN/GEN-VLKT ``*_hico.json``.

Conventions, as the source repositories use them:

- UPT-style (fredzzhang/hicodet): one row per triplet in ``annotation[i]`` (``boxes_h``, ``boxes_o``
  xyxy pixels, ``object`` into ``objects``, ``verb`` into ``verbs``, ``hoi`` into ``correspondence``
  rows ``[hoi, object, verb]``), ``size[i] = [w, h]``. The same box is repeated in every row that
  uses it; rows with the same human box, object box and object become one pair with several verbs.
  The synthetic world writes this format with its own ``objects``/``verbs`` and a ``vocabulary.json``.
- PPDM / CDN / GEN-VLKT: a list of images ``{file_name, annotations: [{bbox, category_id}],
  hoi_annotation: [{subject_id, object_id, category_id, hoi_category_id?}]}``; ``bbox`` is xyxy
  pixels, ``category_id`` a COCO-91 category id (1 = person; GEN-VLKT maps it through its
  ``_valid_obj_ids``), the HOI ``category_id`` a 1-based verb id (``_valid_verb_ids = 1..117``) and
  ``hoi_category_id`` (when present) the 1-based HICO-DET class id. There are no image sizes unless an
  image record carries COCO-style ``width``/``height``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm import tqdm

from hoi_mllm.data.formats import ReadContext, assemble_sample
from hoi_mllm.data.sample import HOISample


def is_index(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _lists(ctx: ReadContext, i: int, file_name: str, rec: dict, keys: tuple[str, ...], prefix: str,
           same_length: bool = True) -> list[list]:
    """The lists ``rec[key]`` (of equal length unless told) of one image record, or an error naming the field."""
    if not isinstance(rec, dict):
        raise ctx.error(f"expected a dict with {', '.join(keys)}, got {type(rec).__name__}", i, file_name, prefix)
    out = []
    for key in keys:
        value = rec.get(key)
        if not isinstance(value, list):
            raise ctx.error(f"missing or not a list (got {type(value).__name__})", i, file_name, f"{prefix}.{key}")
        if same_length and out and len(value) != len(out[0]):
            raise ctx.error(f"{len(value)} entries but {keys[0]} has {len(out[0])}", i, file_name, f"{prefix}.{key}")
        out.append(value)
    return out


def _image_size(ctx: ReadContext, i: int, file_name: str, value, field: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and v > 0 for v in value)):
        raise ctx.error(f"image size {value!r} is not [width, height] in pixels", i, file_name, field)
    return int(value[0]), int(value[1])


def name_map(ctx: ReadContext, file_names: list | None, lookup: Callable[[str], int | None], what: str,
             n_vocab: int) -> list[int]:
    """File index -> vocabulary index by name (``-1`` where a name has no entry); identity without names."""
    if file_names is None:
        return list(range(n_vocab))
    if not isinstance(file_names, list):
        raise ctx.error(f"expected a list of {what} names", field=what)
    found = [None if n == "background" else lookup(str(n)) for n in file_names]
    return [-1 if k is None else k for k in found]


def check_index(ctx: ReadContext, value, table: list[int], names: list | None, i: int, file_name: str, field: str,
                what: str) -> int:
    """Map a file index through ``table``; out of range or unmapped raises naming the field."""
    if not is_index(value) or not 0 <= value < len(table):
        raise ctx.error(f"{what} index {value!r} outside 0..{len(table) - 1}", i, file_name, field)
    mapped = table[value]
    if mapped < 0:
        name = names[value] if names else value
        raise ctx.error(f"{what} {name!r} (index {value}) is not among the {what}s of the {ctx.vocabulary.name} vocabulary",
                        i, file_name, field)
    return mapped


def read_triplet_table(ctx: ReadContext, i: int, file_name: str, rec: dict, prefix: str, obj_key: str,
                       verb_key: str, obj_map: list[int], verb_map: list[int], obj_names, verb_names):
    """Rows of a UPT-style image record -> (boxes, labels, where, rows_h, rows_o, verbs, objects).

    Each row contributes its human box (label ``human_object``) and its object box; ``verbs`` and
    ``objects`` are the ``T`` vocabulary ids of each row.
    """
    bh, bo, objs, verbs = _lists(ctx, i, file_name, rec, ("boxes_h", "boxes_o", obj_key, verb_key), prefix)
    human = ctx.vocabulary.human_object
    boxes, labels, where, out_v, out_o = [], [], [], [], []
    for r in range(len(objs)):
        o = check_index(ctx, objs[r], obj_map, obj_names, i, file_name, f"{prefix}.{obj_key}[{r}]", "object")
        v = check_index(ctx, verbs[r], verb_map, verb_names, i, file_name, f"{prefix}.{verb_key}[{r}]", "verb")
        boxes += (bh[r], bo[r])
        labels += (human, o)
        where += (f"{prefix}.boxes_h[{r}]", f"{prefix}.boxes_o[{r}]")
        out_v.append(v)
        out_o.append(o)
    n = len(objs)
    return boxes, labels, where, list(range(0, 2 * n, 2)), list(range(1, 2 * n, 2)), out_v, out_o


def read_hicodet_upt(data: dict, ctx: ReadContext) -> list[HOISample]:
    """Read a UPT-style HICO-DET dict (``annotation``, ``filenames``, ``size``, ...) into samples."""
    vocab = ctx.vocabulary
    ann, names = data.get("annotation"), data.get("filenames")
    if not isinstance(ann, list) or not isinstance(names, list):
        raise ctx.error("'annotation' and 'filenames' must be lists", field="annotation")
    if len(ann) != len(names):
        raise ctx.error(f"{len(names)} file names for {len(ann)} annotation records", field="filenames")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ctx.error(f"file name {name!r} is not a string (expected an image file name such as "
                            f"'HICO_train2015_00000001.jpg')", i, field=f"filenames[{i}]")
    sizes = data.get("size")
    if sizes is not None and (not isinstance(sizes, list) or len(sizes) != len(ann)):
        raise ctx.error(f"expected one [w, h] per image ({len(ann)})", field="size")
    obj_names, verb_names = data.get("objects"), data.get("verbs")
    obj_map = name_map(ctx, obj_names, vocab.object_index_or_none, "objects", vocab.num_objects)
    verb_map = name_map(ctx, verb_names, verb_lookup(vocab), "verbs", vocab.num_verbs)
    hoi_map = _correspondence(ctx, data.get("correspondence"), obj_map, verb_map)
    table = vocab.class_table  # [num_objects, num_verbs]

    samples = []
    for i, (rec, file_name) in enumerate(tqdm(zip(ann, names), total=len(ann), desc="HICO-DET", disable=not ctx.progress)):
        prefix = f"annotation[{i}]"
        size = _image_size(ctx, i, file_name, sizes[i] if sizes is not None else None, f"size[{i}]")
        boxes, labels, where, rows_h, rows_o, verbs, objs = read_triplet_table(
            ctx, i, file_name, rec, prefix, "object", "verb", obj_map, verb_map, obj_names, verb_names)
        hois = _lists(ctx, i, file_name, rec, ("object", "hoi"), prefix)[1]
        classes = []
        for r, (o, v) in enumerate(zip(objs, verbs)):
            c = int(table[o, v])
            if c < 0:
                raise ctx.error(f"(verb {vocab.verbs[v]!r}, object {vocab.objects[o]!r}) is not a class of the "
                                f"{vocab.name} vocabulary", i, file_name, f"{prefix}.verb[{r}]")
            h = hois[r]
            n_hoi = len(hoi_map) if hoi_map is not None else vocab.num_classes
            if not is_index(h) or not 0 <= h < n_hoi:
                raise ctx.error(f"class index {h!r} outside 0..{n_hoi - 1}", i, file_name, f"{prefix}.hoi[{r}]")
            expected = h if hoi_map is None else hoi_map[h]  # without correspondence: the vocabulary's class ids
            if expected != c:
                raise ctx.error(f"class {h} does not match the row's (verb {vocab.verbs[v]!r}, object "
                                f"{vocab.objects[o]!r}), which is class {c}", i, file_name, f"{prefix}.hoi[{r}]")
            classes.append(c)
        samples.append(assemble_sample(ctx, i, file_name, size, boxes, labels, where, rows_h, rows_o, verbs, classes))
    return samples


def verb_lookup(vocab) -> Callable[[str], int | None]:
    from hoi_mllm.prompts.vocabulary import normalise_name

    table = {normalise_name(v): k for k, v in enumerate(vocab.verbs)}
    return lambda name: table.get(normalise_name(name))


def _correspondence(ctx: ReadContext, corr, obj_map: list[int], verb_map: list[int]) -> list[int] | None:
    """File class id -> vocabulary class id through the file's ``correspondence`` rows (None: same ids)."""
    if corr is None:
        return None
    table = ctx.vocabulary.class_table
    out = []
    for k, row in enumerate(corr):
        ok = isinstance(row, list) and len(row) == 3 and all(is_index(x) for x in row) and row[0] == k
        if not ok or not (0 <= row[1] < len(obj_map) and 0 <= row[2] < len(verb_map)):
            raise ctx.error(f"row {row!r} is not [class {k}, object, verb] with indices in range",
                            field=f"correspondence[{k}]")
        o, v = obj_map[row[1]], verb_map[row[2]]
        out.append(int(table[o, v]) if o >= 0 and v >= 0 else -1)
    return out


# ------------------------------------------------------------------------------------------ PPDM layout
def read_image_list(data: list, ctx: ReadContext, verb_of: Callable[[object], int | None], *, what: str,
                    allow_absent_object: bool, keep_unknown_class: bool,
                    extra_of: Callable[[dict], dict] | None = None) -> list[HOISample]:
    """Read the PPDM/CDN list-of-images layout (shared by HICO-DET and V-COCO files).

    Args:
        verb_of: the file's HOI ``category_id`` -> vocabulary verb id; ``None`` skips the row (the
            caller counts it); raises ``LookupError`` with a message for an invalid id.
        allow_absent_object: accept ``object_id == -1`` (V-COCO role absent: ``pair_object = -1``).
        keep_unknown_class: keep (verb, object) combinations outside the vocabulary with class ``-1``
            (counted) instead of raising.
        extra_of: per image record -> ``HOISample.extra``.
    """
    vocab = ctx.vocabulary
    coco = vocab.coco91_to_object
    if not coco:
        raise ctx.error(f"this format names objects by COCO category id, but the {vocab.name} vocabulary has no "
                        f"COCO objects")
    samples = []
    for i, img in enumerate(tqdm(data, desc=what, disable=not ctx.progress)):
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(file_name, str):
            raise ctx.error(f"missing 'file_name' (got {file_name!r})", i, field=f"[{i}].file_name")
        anns, hois = _lists(ctx, i, file_name, img, ("annotations", "hoi_annotation"), f"[{i}]", same_length=False)
        size = None
        if "width" in img or "height" in img:
            size = _image_size(ctx, i, file_name, [img.get("width"), img.get("height")], f"[{i}].width/height")
        boxes, labels, where = [], [], []
        for k, a in enumerate(anns):
            cid = a.get("category_id") if isinstance(a, dict) else None
            if not is_index(cid) or cid not in coco:
                raise ctx.error(f"category_id {cid!r} is not a COCO-91 category id of a {vocab.name} object "
                                f"(allowed: {min(coco)}..{max(coco)}, COCO ids)", i, file_name,
                                f"[{i}].annotations[{k}].category_id")
            boxes.append(a.get("bbox"))
            labels.append(coco[cid])
            where.append(f"[{i}].annotations[{k}].bbox")
        rows_h, rows_o, rows_v, rows_c = [], [], [], []
        for r, hoi in enumerate(hois):
            field = f"[{i}].hoi_annotation[{r}]"
            if not isinstance(hoi, dict):
                raise ctx.error("expected a dict with subject_id, object_id, category_id", i, file_name, field)
            s, o = hoi.get("subject_id"), hoi.get("object_id")
            if not is_index(s) or not 0 <= s < len(anns):
                raise ctx.error(f"subject_id {s!r} outside 0..{len(anns) - 1}", i, file_name, f"{field}.subject_id")
            if labels[s] != vocab.human_object:
                raise ctx.error(f"subject_id {s} is a {vocab.objects[labels[s]]!r}, not a person", i, file_name,
                                f"{field}.subject_id")
            lo = -1 if allow_absent_object else 0
            if not is_index(o) or not lo <= o < len(anns):
                raise ctx.error(f"object_id {o!r} outside {lo}..{len(anns) - 1}", i, file_name, f"{field}.object_id")
            try:
                v = verb_of(hoi.get("category_id"))
            except LookupError as exc:
                raise ctx.error(str(exc.args[0]), i, file_name, f"{field}.category_id") from None
            if v is None:
                continue
            c = int(vocab.class_table[labels[o], v]) if o >= 0 else -1
            if o < 0:
                ctx.report.roleless_triplets += 1
            elif c < 0 and keep_unknown_class:
                ctx.report.no_class_triplets += 1
            elif c < 0:
                raise ctx.error(f"(verb {vocab.verbs[v]!r}, object {vocab.objects[labels[o]]!r}) is not a class of "
                                f"the {vocab.name} vocabulary", i, file_name, f"{field}.category_id")
            hc = hoi.get("hoi_category_id")
            if hc is not None and (not is_index(hc) or not 1 <= hc <= vocab.num_classes):
                raise ctx.error(f"hoi_category_id {hc!r} outside 1..{vocab.num_classes}", i, file_name,
                                f"{field}.hoi_category_id")
            if hc is not None and hc - 1 != c:
                raise ctx.error(f"hoi_category_id {hc} (1-based) does not match (verb {vocab.verbs[v]!r}, object "
                                f"{vocab.objects[labels[o]]!r}), which is class {c + 1}", i, file_name,
                                f"{field}.hoi_category_id")
            rows_h.append(s)
            rows_o.append(o)
            rows_v.append(v)
            rows_c.append(c)
        samples.append(assemble_sample(ctx, i, file_name, size, boxes, labels, where, rows_h, rows_o, rows_v,
                                       rows_c, extra=extra_of(img) if extra_of else None))
    return samples


def read_hicodet_ppdm(data: list, ctx: ReadContext) -> list[HOISample]:
    """Read a PPDM/CDN/GEN-VLKT HICO-DET list (``trainval_hico.json``, ``test_hico.json``) into samples."""
    n_verbs = ctx.vocabulary.num_verbs

    def verb_of(cid) -> int:  # 1-based verb id
        if not is_index(cid) or not 1 <= cid <= n_verbs:
            raise LookupError(f"verb category_id {cid!r} outside 1..{n_verbs} (1-based verb ids)")
        return cid - 1

    return read_image_list(data, ctx, verb_of, what="HICO-DET", allow_absent_object=False, keep_unknown_class=False)
