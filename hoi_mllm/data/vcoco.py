"""V-COCO readers: the UPT-style ``instances_vcoco_*.json`` and the CDN/GEN-VLKT ``*_vcoco.json``.

Both land on the ``vcoco`` vocabulary: 24 action-role "verbs" (``hold obj``, ``hit instr``, ...) over
objects in the HICO-DET object order.

- UPT-style (fredzzhang/vcoco): per image ``boxes_h``, ``boxes_o`` (xyxy pixels), ``actions`` (into
  the file's 24 ``classes``) and ``objects`` (into the file's 81 ``objects``, COCO order with
  ``background`` at 0), one row per (human, action-role, object); ``images`` holds COCO image ids.
  Objects and actions are mapped by name, so the file's orders do not matter. No image sizes.
- CDN/GEN-VLKT (``tools/convert_vcoco_annotations.py``): the PPDM list layout with all COCO boxes of
  the image in ``annotations`` (COCO-91 ``category_id``) and ``hoi_annotation`` rows whose
  ``category_id`` is a **0-based** index into the 29 actions of ``CDN_ACTIONS`` (GEN-VLKT uses
  ``_valid_verb_ids = range(29)``) and whose ``object_id`` is ``-1`` when the role object is absent.

Mapping the 29 CDN actions onto the 24 action-roles: the 29 are V-COCO's 26 actions in its own order,
each action with roles split per role (``hit``, ``eat`` and ``cut`` have ``instr`` and ``obj``), and the
agent-only actions kept bare. An action-role maps by name (``talk_on_phone_instr`` ->
``talk_on_phone instr``). The agent-only actions ``stand``, ``walk``, ``run``, ``smile`` and
``point_instr`` (left out of V-COCO's role evaluation) have no action-role class: their rows are
skipped and counted in ``LoadReport.skipped``. A role action whose object is absent is kept as a pair
with ``pair_object = -1`` and class ``-1`` (counted as ``roleless_triplets``), as V-COCO's Scenario 1/2
evaluation needs.
"""
from __future__ import annotations

import re

from tqdm import tqdm

from hoi_mllm.data.formats import ReadContext, assemble_sample
from hoi_mllm.data.hicodet import is_index, verb_lookup, name_map, read_image_list, read_triplet_table
from hoi_mllm.data.sample import HOISample

# the hoi_annotation category_id of the CDN/GEN-VLKT files indexes this list (0-based): a file-format fact
CDN_ACTIONS = (
    "hold_obj", "stand", "sit_instr", "ride_instr", "walk", "look_obj", "hit_instr", "hit_obj", "eat_obj",
    "eat_instr", "jump_instr", "lay_instr", "talk_on_phone_instr", "carry_obj", "throw_obj", "catch_obj",
    "cut_instr", "cut_obj", "run", "work_on_computer_instr", "ski_instr", "surf_instr", "skateboard_instr",
    "smile", "drink_instr", "kick_obj", "point_instr", "read_obj", "snowboard_instr",
)
_COCO_ID = re.compile(r"(\d+)\.[A-Za-z]+$")


def coco_image_id(file_name: str) -> int | None:
    """COCO image id from a file name like ``COCO_val2014_000000000294.jpg`` (``None`` if it has none)."""
    m = _COCO_ID.search(file_name)
    return int(m.group(1)) if m else None


def cdn_action_map(vocab) -> list[int]:
    """``[29]`` vocabulary verb id of each CDN action (``-1`` for actions with no action-role class)."""
    lookup = verb_lookup(vocab)
    return [-1 if lookup(a) is None else lookup(a) for a in CDN_ACTIONS]


def read_vcoco_upt(data: dict, ctx: ReadContext) -> list[HOISample]:
    """Read a UPT-style V-COCO dict (``annotations``, ``classes``, ``objects``, ``images``) into samples."""
    from hoi_mllm.prompts.vocabulary import coco_categories

    vocab = ctx.vocabulary
    anns, images = data["annotations"], data.get("images")
    if images is not None and (not isinstance(images, list) or len(images) != len(anns)):
        raise ctx.error(f"expected one COCO image id per annotation record ({len(anns)})", field="images")
    classes = data.get("classes")
    objects = data.get("objects") or ["background", *coco_categories()["names"]]
    verb_map = name_map(ctx, classes, verb_lookup(vocab), "classes", vocab.num_verbs)
    obj_map = name_map(ctx, objects, vocab.object_index_or_none, "objects", vocab.num_objects)
    table = vocab.class_table  # [num_objects, num_verbs]
    samples = []
    for i, rec in enumerate(tqdm(anns, desc="V-COCO", disable=not ctx.progress)):
        file_name = rec.get("file_name") if isinstance(rec, dict) else None
        if not isinstance(file_name, str):
            raise ctx.error(f"missing 'file_name' (got {file_name!r})", i, field=f"annotations[{i}].file_name")
        boxes, labels, where, rows_h, rows_o, verbs, objs = read_triplet_table(
            ctx, i, file_name, rec, f"annotations[{i}]", "objects", "actions", obj_map, verb_map, objects, classes)
        rows_c = [int(table[o, v]) for o, v in zip(objs, verbs)]
        ctx.report.no_class_triplets += sum(c < 0 for c in rows_c)
        cid = images[i] if images is not None else coco_image_id(file_name)
        samples.append(assemble_sample(ctx, i, file_name, None, boxes, labels, where, rows_h, rows_o, verbs, rows_c,
                                       extra={"coco_image_id": cid} if cid is not None else None))
    return samples


def read_vcoco_cdn(data: list, ctx: ReadContext) -> list[HOISample]:
    """Read a CDN/GEN-VLKT V-COCO list (``trainval_vcoco.json``, ``test_vcoco.json``) into samples."""
    action_map = cdn_action_map(ctx.vocabulary)
    skipped = ctx.report.skipped

    def verb_of(cid) -> int | None:  # 0-based index into CDN_ACTIONS
        if not is_index(cid) or not 0 <= cid < len(CDN_ACTIONS):
            raise LookupError(f"action category_id {cid!r} outside 0..{len(CDN_ACTIONS) - 1} (0-based CDN actions)")
        if action_map[cid] < 0:
            skipped[f"action {CDN_ACTIONS[cid]!r} (no action-role class in {ctx.vocabulary.name})"] += 1
            return None
        return action_map[cid]

    def extra_of(img: dict) -> dict:
        cid = coco_image_id(img["file_name"])
        return {"coco_image_id": cid} if cid is not None else {}

    return read_image_list(data, ctx, verb_of, what="V-COCO", allow_absent_object=True, keep_unknown_class=True,
                           extra_of=extra_of)
