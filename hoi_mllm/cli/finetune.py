"""``hoi-mllm finetune CONFIG.yaml [key=value ...] [--resume]``: LoRA fine-tuning with two-stage matching.

CONFIG is a YAML file or a built-in recipe name (``hico_det``, ``rare_first``, ..., ``vcoco``,
``synthetic``, ``synthetic_quick``, ``sap_pretrain``: DA-HOI's SAP pre-training stage); ``key.sub=value`` pairs override it. Several GPUs (or CPU
processes): ``accelerate launch --num_processes N -m hoi_mllm finetune CONFIG ...`` (see
``finetune/configs/accelerate_*.yaml``).
"""
from __future__ import annotations

import json
import os


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune", help="LoRA fine-tuning with two-stage matching",
        description="Fine-tune the recogniser: LoRA (or QLoRA with model.quantization=4bit, or full) on the "
                    "language model, SAP and projector trained fully, EoID two-stage matching with potential pairs "
                    "taught by a teacher. CONFIG is a YAML file or a built-in recipe; key=value pairs override it "
                    "(e.g. optim.lr=2e-4 data.split=rare_first). Run folder: --output (default runs/NAME).")
    p.add_argument("config", nargs="?", help="recipe YAML file or built-in recipe name")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    p.add_argument("--output", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the run folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument("--list-recipes", action="store_true", help="list the built-in recipes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from hoi_mllm.cli import CLIError, parse_key_values
    from hoi_mllm.finetune.config import builtin_recipes, config_help, load_config

    if args.help_config:
        print(config_help())
        return 0
    if args.list_recipes:
        print("\n".join(builtin_recipes()))
        return 0
    if not args.config:
        raise CLIError("give a recipe: a YAML file or one of " + ", ".join(builtin_recipes()))
    config = load_config(args.config, parse_key_values(args.overrides, what="override"))
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from pathlib import Path

    from hoi_mllm.finetune.trainer import finetune

    output = Path(args.output or Path("runs") / config.name)
    result = finetune(config, output, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under `accelerate launch`, only the main process reports
        return 0
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), indent=1))
        return 0
    print(f"fine-tuned {result.steps} steps in {result.seconds:.1f} s ({result.steps_per_second:.2f} steps/s, "
          f"{result.images_per_second:.1f} images/s)")
    if result.eval:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in result.eval.items() if k in ("full", "seen", "unseen", "rare", "non_rare")
                          and v is not None)
        print(f"held-out mAP (ground-truth boxes, {result.eval['images']} images): {shown}")
    if result.final_dir and config.train.stage == "sap":
        from hoi_mllm.finetune.sap_stage import SAP_WEIGHTS

        weights = Path(result.final_dir) / SAP_WEIGHTS
        print(f"pre-trained SAP saved to {weights} (next stage: hoi-mllm finetune RECIPE sap.pretrained={weights})")
    elif result.final_dir:
        print(f"recogniser saved to {result.final_dir} (hoi-mllm detect --model {result.final_dir} ...)")
    return 0
