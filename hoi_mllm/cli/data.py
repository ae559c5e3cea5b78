"""``hoi-mllm data``: inspect HOI annotation files.

``hoi-mllm data stats ANNOTATIONS [--split NAME] [--vocabulary V] [--repair-boxes] [--json]`` prints
images, images with pairs, pairs, triplets, distinct classes seen, box repairs, and for a zero-shot
split the same counts after the training filter with seen/unseen classes.

*Pairs* are the distinct (human box, object box) pairs of an image (rows on identical boxes merged);
*triplets* are the (pair, verb) labels, i.e. the rows of the file. The two differ where a file repeats
a pair's boxes in several rows: V-COCO test has 12,402 triplets (its action-role instances, the
"instances" of its README) on 7,797 distinct human-object pairs. HICO-DET's UPT files give every row
its own boxes, so there pairs = triplets (33,405 on the test set).
"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect HOI datasets: counts after zero-shot filtering",
                       description="Inspect HOI annotation files (HICO-DET, V-COCO, synthetic).")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = actions.add_parser("stats", help="counts of an annotation file, before and after a zero-shot filter",
                           description="Load an annotation file (format detected from its content) and print "
                                       "images, images with pairs, pairs, triplets, classes seen and box repairs; "
                                       "with --split, also the counts after removing that split's unseen "
                                       "interactions from training.")
    s.add_argument("annotations", metavar="ANNOTATIONS", help="annotation file (hicodet-upt, hicodet-ppdm, "
                   "vcoco-upt or vcoco-cdn format)")
    s.add_argument("--split", default=None, help="zero-shot split of the vocabulary (e.g. rare_first, uc0, unseen_verb)")
    s.add_argument("--vocabulary", default=None, help="built-in vocabulary (hico-det, vcoco) or a vocabulary.json "
                   "path (default: vocabulary.json beside the file, else the format's)")
    s.add_argument("--format", dest="fmt", default=None,
                   choices=["hicodet-upt", "hicodet-ppdm", "vcoco-upt", "vcoco-cdn"],
                   help="annotation format (default: detected from the content)")
    s.add_argument("--image-root", default=None, help="folder the image file names are relative to")
    s.add_argument("--repair-boxes", action="store_true",
                   help="clip boxes to the image and swap reversed coordinates instead of failing; repairs are counted")
    s.add_argument("--same-pair-iou", type=float, default=0.7,
                   help="with --split, also drop a pair with the same object whose human and object boxes both reach "
                        "this IoU with a dropped unseen pair (UPT files give each triplet its own boxes of one "
                        "physical pair; default 0.7, as GEN-VLKT's merged boxes; 0 turns it off)")
    s.add_argument("--detection-only", action="store_true",
                   help="read the file as a detection-only training source (a COCO instances_*.json, or an HOI file "
                        "with its interaction labels dropped) and print images, persons, objects, candidate pairs")
    s.add_argument("--include-crowd", action="store_true", help="--detection-only: keep COCO crowd boxes")
    s.add_argument("--images-of", default=None, metavar="FILE",
                   help="--detection-only: keep only the images this HOI file lists, by COCO image id (pseudo-V-COCO: "
                        "COCO train2014 boxes of the V-COCO trainval images)")
    s.add_argument("--json", action="store_true", help="print the counts as JSON")
    s.set_defaults(func=run)
    from hoi_mllm.cli import data_targets

    data_targets.add_parser(actions)


def stats(args) -> dict:
    """The counts ``data stats`` prints, as a dict."""
    from hoi_mllm.data import filter_zero_shot, read_annotations, resolve_vocabulary

    samples, report = read_annotations(args.annotations, args.vocabulary, args.image_root,
                                       repair_boxes=args.repair_boxes, fmt=args.fmt, progress=not args.json)
    vocab = resolve_vocabulary(args.annotations, report.format, args.vocabulary)
    out = report.as_dict()
    out["classes_total"] = vocab.num_classes
    if args.split:
        _, freport = filter_zero_shot(samples, vocab, args.split, same_pair_iou=args.same_pair_iou or None)
        out["split"] = freport.as_dict()
    return out


def detection_only_stats(args) -> dict:
    """The counts ``data stats --detection-only`` prints (:mod:`hoi_mllm.data.coco_detections`)."""
    from hoi_mllm.data.coco_detections import read_detection_only

    from pathlib import Path

    beside = Path(args.annotations).parent / "vocabulary.json"
    vocab = args.vocabulary or (beside if beside.is_file() else "hico-det")
    _, report = read_detection_only(args.annotations, vocab, args.image_root, include_crowd=args.include_crowd,
                                    images_of=args.images_of)
    return report.as_dict()


def run(args) -> int:
    if getattr(args, "detection_only", False):
        out = detection_only_stats(args)
        if args.json:
            print(json.dumps(out, indent=1))
        else:
            width = max(len(k) for k in out)
            for key, value in out.items():
                print(f"{key.replace('_', ' '):<{width}}  {value}")
        return 0
    out = stats(args)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    rows = [
        ("file", out["path"]), ("format", out["format"]), ("vocabulary", out["vocabulary"]),
        ("image root", out["image_root"]), ("images", out["images"]), ("images with pairs", out["images_with_pairs"]),
        ("instances", out["instances"]),
        ("pairs", f"{out['pairs']} (distinct human-object pairs)"),
        ("triplets", f"{out['triplets']} ({_triplet_words(out)})"),
        ("classes seen", f"{out['classes_seen']} of {out['classes_total']}"),
        ("box repairs", _repairs(out)),
    ]
    for key, label in (("duplicate_instances", "repeated boxes merged into one instance"), ("duplicate_triplets", "merged duplicate triplets"),
                       ("no_class_triplets", "triplets outside the classes"), ("roleless_triplets", "triplets without object")):
        if out[key]:
            rows.append((label, out[key]))
    for reason, n in out["skipped"].items():
        rows.append((f"skipped rows: {reason}", n))
    if "split" in out:
        f = out["split"]
        rows += [
            (f"split {f['split']}", f"{f['kind']}: {f['seen_classes']} seen, {f['unseen_classes']} unseen classes"
                                    + (f", {f['unseen_verbs']} unseen verbs" if f["unseen_verbs"] else "")),
            ("classes present before", f"{f['seen_present_before']} seen, {f['unseen_present_before']} unseen"),
            ("unseen classes after filter", f["unseen_present_after"]),
            ("after filter: images", f["images_after"]),
            ("after filter: images with pairs", f"{f['images_with_pairs_after']} ({f['images_emptied']} left without pairs, kept)"),
            ("after filter: pairs", f"{f['pairs_after']} (dropped {f['dropped_pairs']}{_overlap(f)})"),
            ("after filter: triplets", f"{f['triplets_after']} (dropped {f['dropped_triplets']}, of which "
                                       f"{f['dropped_seen_triplets']} seen on pairs with an unseen class)"),
            ("after filter: classes seen", f["classes_seen_after"]),
        ]
    rows.append(("load seconds", out["seconds"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _overlap(f: dict) -> str:
    if not f["same_pair_iou"]:
        return ""
    return (f", of which {f['dropped_overlap_pairs']} as the same pair as an unseen one: same object, both boxes "
            f"at IoU >= {f['same_pair_iou']}")


def _triplet_words(out: dict) -> str:
    """What a triplet is in this file's terms (V-COCO: an action-role instance)."""
    if out["format"].startswith("vcoco"):
        return "action-role instances: (human, action-role, object) rows"
    return "(pair, verb) labels"


def _repairs(out: dict) -> str:
    if not out["repairs"]:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in out["repair_kinds"].items() if v)
    return f"{out['repairs']} ({kinds})"
