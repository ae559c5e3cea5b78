"""New actions from detection-only data (issue 16, EoID's pseudo-V-COCO) on the synthetic world.

The world (``habits=hico``) has an ``unseen_verb`` split (push, throw). Its training images are split in two:
every image showing a held-out verb and the last of the others become a **detection-only** source
(``data.sources``, labels dropped), the first ``--labelled-share`` keep their labels (the ``unseen_verb``
zero-shot filter applies too): the held-out verbs exist only in detection-only images
(``--held-out-images anywhere``: the cut by position of the README's first tables, where labelled images show
the held-out actions with those labels removed). Runs, same seed and steps, then the held-out verbs'
mAP (``unseen`` of the split), seen and Full mAP and U-R@5 on the world's test images with ground-truth
boxes:

``without``      labelled images only (no teacher: nothing to distil);
``annotations``  plus the detection-only source, ``teacher.kind=annotations``: the ORACLE that reads the
                 labels the source dropped. It shows that targets flow through the detection-only path
                 (stage two only, no interactiveness loss); it is never a result. Its one-hot targets train as
                 labels (``loss.distill=eoid``, ``--oracle-distill``), as EoID trains its pseudo-V-COCO labels;
``likelihood``   plus the detection-only source, ``teacher.kind=likelihood``: the tiny model's frozen base
                 in training-free mode. The world has no language prior: its verbs are words no model was
                 ever taught to see (a random tiny LM warmed up on the prompts' text only), so this teacher's
                 scores of the held-out verbs carry no knowledge of them; whatever it reaches is the floor of
                 the method, not a measure of a real teacher.

::

    python benchmarks/detection_only.py --images 240 --test-images 80 --steps 200 --output runs/detonly.json
    python benchmarks/detection_only.py --images 120 --test-images 40 --steps 150 --image-size 128 \
        --pretrain-steps 60 --threads 1 --interactiveness-threshold 0 --held-out-images anywhere \
        --runs without annotations                                  # the README's earlier table
    python benchmarks/detection_only.py --images 60 --test-images 30 --steps 60 --image-size 128 \
        --pretrain-steps 60 --threads 1 --sap-pretrain-steps 300 --runs without annotations   # README, two stages

The README's tables before its last one ran before the teacher selected the detection-only pairs and the oracle
trained as labels: add ``--oracle-distill bce --eval-sets test --set matcher.detection_only_pairs=top-k`` to
reproduce them; the runs before 2026-12-03's evening also ignored the detection-only pairs the teacher does not name
(add ``--set matcher.detection_only_unselected=ignored``).

``--sap-pretrain-steps N`` first trains SAP alone on the labelled images (DA-HOI's stage 1), then every run loads
it (frozen by default, ``--no-sap-freeze``): its interactiveness has been trained, so potential pairs stay above the
recipe's threshold. ``--interactiveness-threshold 0`` lifts the potential pairs' threshold for every run: at the recipe's 0.5 the tiny
model's interactiveness falls under it within ~10 steps and no teacher target reaches a loss (README, "Why the
oracle did not help").

Torch threads are fixed (``--threads``) so a run's numbers do not depend on the machine's cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

RUNS = ("without", "annotations", "likelihood")
METRICS = ("unseen", "seen", "full", "ur5", "unseen_verb_only")
SPLIT = "unseen_verb"


def split_world(train_file: Path, labelled_share: float, out_dir: Path,
                held_out_verbs: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The world's UPT-format training file as two files of the same format, a labelled part (about
    ``labelled_share`` of the images) and the rest (to be read as a detection-only source). Returns their paths.

    Every image showing one of ``held_out_verbs`` goes to the second part, so those verbs exist only in
    detection-only images, unlabelled nowhere else (the issue's "hold some verbs out of every labelled image and
    put them only in detection-only images"); the labelled part is the first images of the others. With no
    ``held_out_verbs`` the cut is by position alone, and the labelled images still show the held-out actions,
    with their labels removed by the split (which then trains those pairs as non-interacting)."""
    data = json.loads(Path(train_file).read_text())
    n = len(data["filenames"])
    held = {i for i, name in enumerate(data["verbs"]) if name in set(held_out_verbs)}
    if len(held) != len(set(held_out_verbs)):
        raise ValueError(f"held-out verbs {sorted(held_out_verbs)} not all in the world's verbs {data['verbs']}")
    showing = {i for i, a in enumerate(data["annotation"]) if held & set(a["verb"])}
    clean = [i for i in range(n) if i not in showing]
    cut = max(1, min(len(clean), n - 1, round(n * labelled_share)))
    labelled = set(clean[:cut])
    out = []
    for name, rows in (("labelled", sorted(labelled)), ("detection_only", [i for i in range(n) if i not in labelled])):
        part = dict(data)
        part["annotation"] = [data["annotation"][i] for i in rows]
        part["filenames"] = [data["filenames"][i] for i in rows]
        part["size"] = [data["size"][i] for i in rows]
        part["empty"] = [k for k, i in enumerate(rows) if i in set(data.get("empty", []))]
        path = Path(out_dir) / f"instances_train_{name}.json"
        path.write_text(json.dumps(part))
        out.append(path)
    return out[0], out[1]


def run_config(kind: str, world, labelled: Path, detection_only: Path, recipe: str, steps: int, seed: int,
               threads: int, extra: dict | None = None, ratio: float = 1.0, oracle_distill: str = "eoid"):
    """The fine-tuning config of one of :data:`RUNS`; ``ratio``: the detection-only source's sampling ratio (the
    labelled one's is 1); ``oracle_distill``: ``loss.distill`` of the ``annotations`` run (``extra`` may override
    it)."""
    from hoi_mllm.data import read_annotations
    from hoi_mllm.finetune.config import load_config

    root = read_annotations(world.annotations["train"])[1].image_root
    vocab = str(world.output_dir / "vocabulary.json")
    over = {"data.train": str(labelled), "data.vocabulary": vocab, "data.image_root": root, "data.split": SPLIT,
            "data.val_images": 0, "train.seed": seed, "train.steps": steps, "train.tensorboard": False,
            "train.checkpoint_every": 0, "eval.at_end": False, "eval.every": 0, "train.threads": threads,
            "teacher.kind": "none" if kind == "without" else kind}
    if kind == "annotations":
        over["loss.distill"] = oracle_distill
    if kind != "without":
        over["data.sources"] = [{"file": str(detection_only), "labels": False, "ratio": ratio, "image_root": root,
                                 "vocabulary": vocab}]
    over.update(extra or {})
    return load_config(recipe, over)


class PositiveCounter:
    """Counts, while active, the teacher targets of value >= 0.5 that the training step builds on slots of
    ``verbs`` (the held-out ones), by wrapping :meth:`TrainingStep.image_targets`: how many held-out positives
    reach the loss in a run."""

    def __init__(self, verbs: frozenset[int]):
        self.verbs, self.count = verbs, 0

    def __enter__(self):
        import torch

        from hoi_mllm.finetune.step import TrainingStep

        self.original = original = TrainingStep.image_targets
        counter = self

        def counted(step, item, pairs, output):
            t = original(step, item, pairs, output)
            cands = output.candidates.cpu()
            verb_of = step.class_verbs[cands.clamp(min=0)]
            held = torch.isin(verb_of, torch.tensor(sorted(counter.verbs))) & (cands >= 0)
            counter.count += int(((t.teacher >= 0.5) & held).sum())
            return t

        TrainingStep.image_targets = counted
        return self

    def __exit__(self, *exc):
        from hoi_mllm.finetune.step import TrainingStep

        TrainingStep.image_targets = self.original


def evaluate(final_dir: str, test) -> dict:
    """Held-out verbs' (unseen), seen and Full mAP and U-R@5 of a trained recogniser, ground-truth boxes (percent),
    and ``unseen_verb_only``: the held-out verbs' mAP with the triplet score left without its interactiveness factor
    (``postprocess.interactiveness_exponent=0``). Detection-only images never train interactiveness, so the full
    score ranks the held-out verbs' pairs mostly by what the labelled images taught it; the verb-only mAP shows what
    the verb scores themselves learned."""
    from synthetic_runs import evaluate_ground_truth_boxes

    from hoi_mllm.pipeline import HOIPipeline
    from hoi_mllm.postprocess import PostprocessConfig

    rec = HOIPipeline.from_pretrained(final_dir).recogniser
    out = evaluate_ground_truth_boxes(rec, test, SPLIT)
    verb_only = evaluate_ground_truth_boxes(rec, test, SPLIT, post_config=PostprocessConfig(interactiveness_exponent=0.0))
    return out | {"unseen_verb_only": verb_only["unseen"]}


def measure(args, root: Path, kinds=RUNS) -> dict:
    import torch

    from hoi_mllm.data import load_annotations
    from hoi_mllm.data.synthetic import generate_world
    from hoi_mllm.finetune.trainer import finetune

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    world = generate_world(root / "world", args.images, args.test_images, args.seed, image_size=args.image_size,
                           progress=False, workers=1, habits="hico")
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(str(world.vocabulary))
    held_verbs = frozenset(vocab.unseen_verbs(SPLIT))
    held_out = ()
    if args.held_out_images == "detection-only":
        held_out = tuple(vocab.verb_name(v) for v in sorted(held_verbs))
    labelled, detection_only = split_world(world.annotations["train"], args.labelled_share, root, held_out)
    image_root = str(world.output_dir / "images" / "train")
    eval_sets = {"test": lambda: load_annotations(world.annotations["test"]),
                 # the detection-only part with the labels the oracle reads: what the runs learned on those images
                 "detection-only": lambda: load_annotations(detection_only, str(world.vocabulary), image_root=image_root)}
    sets = {name: eval_sets[name]() for name in args.eval_sets}
    extra = {} if args.pretrain_steps is None else {"model.pretrain_steps": args.pretrain_steps}
    if args.interactiveness_threshold is not None:
        extra["matcher.interactiveness_threshold"] = args.interactiveness_threshold
    if args.set:
        from hoi_mllm.cli import parse_key_values

        extra.update(parse_key_values(args.set, what="--set"))
    rows, sap = {}, {}
    if args.sap_pretrain_steps:
        # DA-HOI's stage 1 on the labelled images (SAP, its interactiveness and a verb classifier), shared by every run
        cfg = run_config("without", world, labelled, detection_only, args.recipe, args.sap_pretrain_steps, args.seed,
                         args.threads, extra | {"train.stage": "sap"})
        start = time.perf_counter()
        result = finetune(cfg, root / "sap_stage", progress=False)
        sap = {"sap.pretrained": str(Path(result.final_dir) / "sap.safetensors"), "sap.freeze": args.sap_freeze}
        print(f"{'sap stage':>12}: {args.sap_pretrain_steps} steps ({time.perf_counter() - start:.1f} s)", flush=True)
    for kind in kinds:
        cfg = run_config(kind, world, labelled, detection_only, args.recipe, args.steps, args.seed, args.threads,
                         extra | sap, args.detection_only_ratio, args.oracle_distill)
        start = time.perf_counter()
        with PositiveCounter(held_verbs) as counter:
            result = finetune(cfg, root / f"run_{kind}", progress=False)
        row = {"train_seconds": round(time.perf_counter() - start, 1), "held_out_positives": counter.count}
        for name, samples in sets.items():
            row |= {(m if name == "test" else f"{m}@{name}"): v for m, v in evaluate(result.final_dir, samples).items()}
        rows[kind] = row
        print(f"{kind:>12}: " + "  ".join(f"{m} {row[m]}" for m in row if m.split("@")[0] in METRICS)
              + f"  held-out positives {counter.count}  ({row['train_seconds']} s)", flush=True)
    return {"runs": rows, "seconds": round(time.perf_counter() - t0, 1),
            "setting": {k: getattr(args, k) for k in ("images", "test_images", "steps", "image_size", "recipe",
                                                      "labelled_share", "seed", "threads", "pretrain_steps",
                                                      "interactiveness_threshold", "sap_pretrain_steps", "held_out_images",
                                                      "sap_freeze", "detection_only_ratio", "oracle_distill", "set",
                                                      "eval_sets")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=240, help="training images of the world (both parts)")
    p.add_argument("--test-images", type=int, default=80)
    p.add_argument("--labelled-share", type=float, default=0.5, help="share of the training images kept labelled")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--recipe", default="synthetic_quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pretrain-steps", type=int, default=None, help="language warm-up steps (default: the recipe's)")
    p.add_argument("--interactiveness-threshold", type=float, default=None,
                   help="matcher.interactiveness_threshold of every run (default: the recipe's, 0.5). The potential pairs "
                        "are the top-k above it; at 0.5 the tiny model's interactiveness falls under it within a few "
                        "steps and no potential pair is left, so no teacher's target reaches a loss (README)")
    p.add_argument("--held-out-images", choices=("detection-only", "anywhere"), default="detection-only",
                   help="detection-only: every image showing a held-out verb is in the detection-only part, so no "
                        "labelled image shows one; anywhere: the images are cut by position (the README's first "
                        "tables), so labelled images show held-out actions with those labels removed")
    p.add_argument("--sap-pretrain-steps", type=int, default=0,
                   help="first train SAP alone this many steps on the labelled images (DA-HOI's stage 1, "
                        "train.stage=sap) and load it into every run (sap.pretrained); 0: SAP trains from scratch "
                        "in the joint stage. The pre-trained interactiveness is what keeps potential pairs above "
                        "the threshold (README)")
    p.add_argument("--sap-freeze", action=argparse.BooleanOptionalAction, default=True,
                   help="sap.freeze of the runs that load the pre-trained SAP (DA-HOI: frozen)")
    p.add_argument("--detection-only-ratio", type=float, default=1.0,
                   help="sampling ratio of the detection-only source (the labelled one's is 1): at 3, three of four "
                        "images of a step are detection-only")
    p.add_argument("--oracle-distill", choices=("eoid", "bce"), default="eoid",
                   help="loss.distill of the annotations run. eoid (default): the oracle's ones are focal positives "
                        "and the other slots of a named pair focal negatives, as labels (EoID trains its pseudo-V-COCO "
                        "labels as labels); bce: the recipe's soft BCE, a mean over every slot of the taught pairs, "
                        "under which a positive weighs about one slot count's share of a label")
    p.add_argument("--eval-sets", nargs="+", choices=("test", "detection-only"), default=["test", "detection-only"],
                   help="where to evaluate: the world's test images, and the detection-only training images with the "
                        "labels the oracle reads (metrics suffixed @detection-only: what a run learned on them)")
    p.add_argument("--set", nargs="+", metavar="key=value", default=[],
                   help="config overrides of every run (dotted keys, as hoi-mllm finetune's)")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    p.add_argument("--output", default=None, help="also write the results as JSON here (atomically)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = measure(args, Path(tmp), tuple(args.runs))
    print(f"total {out['seconds']} s")
    if args.output:
        from hoi_mllm.io import atomic_write_json

        atomic_write_json(args.output, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
