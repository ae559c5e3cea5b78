"""The ``hoi-mllm`` command line: one subcommand per module of this package.

Each module in ``COMMANDS`` defines ``add_parser(subparsers)`` (which registers its subcommand
and sets ``func``) and is imported only when needed, so ``hoi-mllm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

# subcommand name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "vocab": ("hoi_mllm.cli.vocab", "summarise a vocabulary and its zero-shot splits"),
    "detections": ("hoi_mllm.cli.detections", "run a detector on images; write detections JSON and pictures"),
    "data": ("hoi_mllm.cli.data", "inspect HOI datasets: counts after zero-shot filtering"),
    "synth": ("hoi_mllm.cli.synth", "generate the synthetic HOI world (images + annotations)"),
    "detect": ("hoi_mllm.cli.detect", "detect HOI triplets in images with a detector and a recogniser"),
    "evaluate": ("hoi_mllm.cli.evaluate", "evaluate predictions: HICO-DET mAP, V-COCO role AP, cross-detector"),
    "finetune": ("hoi_mllm.cli.finetune", "LoRA fine-tuning with two-stage matching"),
    "demo": ("hoi_mllm.cli.demo", "the whole system offline on the synthetic world, with a report"),
    "app": ("hoi_mllm.cli.app", "a web app: upload a photo, see its HOI triplets, swap detectors, add interactions"),
}


class CLIError(Exception):
    """An error to report to the user in one line, without a traceback."""


def parse_key_values(items: list[str] | None, what: str = "option") -> dict:
    """``["k=v", ...]`` -> dict, values parsed as YAML scalars (numbers, booleans, lists)."""
    import yaml

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"{what} {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value != "" else ""
    return out


# what the user most likely meant, by OSError subclass
_OS_HINTS = {IsADirectoryError: "a folder where a file was expected",
             NotADirectoryError: "a file where a folder was expected",
             FileExistsError: "already exists"}


def os_error_message(exc: BaseException) -> str:
    """One line for an error: an ``OSError`` from the system as ``<path>: <reason> (<hint>)``, else ``str(exc)``.

    Errors this package raises with their own message (``FileNotFoundError("image not found: ...")``)
    have no ``strerror`` and are printed as they are.
    """
    if not isinstance(exc, OSError) or exc.strerror is None:
        return str(exc)
    names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    hint = next((h for cls, h in _OS_HINTS.items() if isinstance(exc, cls)), None)
    return f"{names or 'OS error'}: {exc.strerror}" + (f" ({hint})" if hint else "")


def output_folder(path: str | Path, option: str = "--output") -> Path:
    """``path`` as the output folder: created if absent; an existing file there is a ``CLIError``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path}: is a file, expected a folder (give a new or existing folder)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoi-mllm",
        description="Zero-shot human-object interaction detection: any detector + a multimodal LLM recogniser.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(module).add_parser(sub)
        else:  # listed in the top-level help without importing its module
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, OSError, KeyError) as exc:  # OSError: FileNotFoundError, IsADirectoryError, ...
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else os_error_message(exc)
        print(f"hoi-mllm {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hoi-mllm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
