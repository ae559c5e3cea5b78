"""``hoi-mllm data targets``: write what the trainer trains on (``targets.jsonl``) and print its summary.

``hoi-mllm data targets ANNOTATIONS [--split S] [--pairs ground-truth|DETECTOR_SPEC] [--rule union|one-to-one]
--output DIR``; the work is :func:`hoi_mllm.finetune.targets_file.write_targets`.
"""
from __future__ import annotations

import json


def add_parser(actions) -> None:
    t = actions.add_parser("targets", help="write the training targets of every image (targets.jsonl) and a summary",
                           description="Propose the training pairs of every image as the trainer does and build "
                                       "their targets with the trainer's code (finetune/targets.py); write "
                                       "DIR/targets.jsonl (one line per image) and DIR/summary.json, and print "
                                       "the summary: proposals by role, positive verbs per seen proposal, annotated "
                                       "verbs missing from targets, duplicates of interacting pairs trained as "
                                       "non-interacting, potential pairs on duplicates. No model: every "
                                       "proposal's interactiveness is taken as 1.")
    t.add_argument("annotations", metavar="ANNOTATIONS", help="training annotation file")
    t.add_argument("--split", default=None, help="zero-shot split of the vocabulary (default: the default setting)")
    t.add_argument("--pairs", default="ground-truth",
                   help="ground-truth (the annotated boxes) or a detector spec NAME[:key=value,...]")
    t.add_argument("--rule", default="union", choices=["union", "one-to-one"],
                   help="matcher.targets: union (DA-HOI, default) or one-to-one (the earlier rule)")
    t.add_argument("--vocabulary", default=None, help="vocabulary name or file (default: beside the file, else the "
                   "format's)")
    t.add_argument("--repair-boxes", action="store_true", help="clip / swap bad boxes instead of failing")
    t.add_argument("--output", required=True, metavar="DIR", help="folder for targets.jsonl and summary.json")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.set_defaults(func=run)


def run(args) -> int:
    from hoi_mllm.finetune.config import MatcherConfig
    from hoi_mllm.finetune.targets_file import write_targets

    summary = write_targets(args.annotations, args.output, args.split, args.pairs, MatcherConfig(targets=args.rule),
                            vocabulary=args.vocabulary, repair_boxes=args.repair_boxes, progress=not args.json).as_dict()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    r = summary["roles"]
    rows = [("rule", summary["rule"]), ("images", summary["images"]), ("proposals", summary["proposals"]),
            ("by role", ", ".join(f"{k} {v}" for k, v in r.items())),
            ("positive verbs per seen proposal", summary["positive_verbs_per_seen_proposal"]),
            ("annotated verbs missing from targets", f"{summary['missing_verbs']} of {summary['expected_verbs']} "
                                                     f"({100 * summary['missing_verbs_share']:.1f} %)"),
            ("duplicates of interacting pairs trained non-interacting",
             f"{summary['duplicates_not_interacting']} of {summary['duplicate_proposals']} "
             f"({100 * summary['duplicates_not_interacting_share']:.1f} %)"),
            ("potential pairs duplicating an annotated pair", summary["potential_duplicates"]),
            ("potential pairs of a person with its own duplicate", summary["potential_self_pairs"]),
            ("interactiveness negatives (target 0, in the loss)", summary["interactiveness_negatives"]),
            ("seconds", summary["seconds"]), ("written", f"{args.output}/targets.jsonl, summary.json")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
