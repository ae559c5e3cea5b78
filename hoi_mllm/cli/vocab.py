"""``hoi-mllm vocab``: summarise a vocabulary and a zero-shot split."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("vocab", help="summarise a vocabulary and its zero-shot splits",
                       description="Print counts of classes, verbs and objects, seen and unseen for a split.")
    p.add_argument("--dataset", default="hico-det",
                   help="built-in vocabulary (hico-det, vcoco) or a vocabulary.json path (default: hico-det)")
    p.add_argument("--split", default=None, help="zero-shot split name (e.g. rare_first, unseen_verb, uc0)")
    p.add_argument("--list", action="store_true", help="also list every class: id, object, verb, phrase, flags")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(args.dataset)
    summary = vocab.summary(args.split)
    summary["splits_available"] = sorted(vocab.splits)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            print(f"{key:<{width}}  {value}")
        if args.split:
            uv, uo = vocab.unseen_verbs(args.split), vocab.unseen_objects(args.split)
            if uv:
                print(f"{'unseen verb names':<{width}}  {', '.join(vocab.verbs[v] for v in sorted(uv))}")
            if uo:
                print(f"{'unseen object names':<{width}}  {', '.join(vocab.objects[o] for o in sorted(uo))}")
    if args.list:
        unseen = vocab.unseen_classes(args.split)
        for c, (o, v) in enumerate(vocab.classes):
            flags = ("unseen " if c in unseen else "") + ("rare" if c in vocab.rare else "")
            print(f"{c:4d}  {vocab.objects[o]:<16} {vocab.verbs[v]:<16} {vocab.phrases[c]:<45} {flags}")
    return 0
