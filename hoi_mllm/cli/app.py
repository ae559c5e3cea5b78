"""``hoi-mllm app``: the web app (Gradio) on a model and the detectors given; this module parses and launches.

The app itself is :mod:`hoi_mllm.app`. It binds to 127.0.0.1 (this machine only); ``--host 0.0.0.0``
serves it to the network.
"""
from __future__ import annotations

import sys

from hoi_mllm.device import DEVICE_HELP


def add_parser(sub) -> None:
    from hoi_mllm.app.ui import DEFAULT_HOST, DEFAULT_PORT
    from hoi_mllm.cli.detect import DTYPES, MODES

    p = sub.add_parser(
        "app", help="a web app: upload a photo, see its HOI triplets, swap detectors, add interactions as text",
        description="Serve a Gradio web app: upload a photo (or click a synthetic example), choose a detector among "
                    "those given, set thresholds, add interactions as text, and see the triplets drawn, in a "
                    "sortable table and as a predictions JSON to download.")
    p.add_argument("--model", required=True, metavar="PATH_OR_PRESET",
                   help="a folder saved by HOIPipeline.save_pretrained, a preset (tiny-qwen2-vl ...: an untrained "
                        "recogniser), a hub id or a local checkpoint")
    p.add_argument("--detector", action="append", default=None, metavar="SPEC",
                   help="a detector spec offered in the page (repeatable; the first is the default; default: yolo)")
    p.add_argument("--vocabulary", default=None, help="hico-det, vcoco or a vocabulary.json (default: the model's)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="default: a saved model's own, matching for a preset, training-free for a hub id")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="backbone precision")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument("--examples", default=None, metavar="DIR",
                   help="folder of the synthetic example pictures (drawn there when missing; default: "
                        "$HOI_MLLM_CACHE/app-examples)")
    p.add_argument("--no-examples", action="store_true", help="offer no example pictures")
    p.set_defaults(func=run)


def run(args) -> int:
    from hoi_mllm.cli import CLIError

    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be from 1 to 65535, got {args.port}")
    from hoi_mllm.app.ui import launch

    detectors = args.detector or ["yolo"]
    if args.host == "127.0.0.1":
        print("serving on this machine only; --host 0.0.0.0 exposes the app to the network", file=sys.stderr)
    demo, url = launch(args.model, detectors, host=args.host, port=args.port, vocabulary=args.vocabulary,
                       mode=args.mode, device=args.device, dtype=args.dtype, examples_dir=args.examples,
                       no_examples=args.no_examples, block=False)
    print(f"hoi-mllm app: {url} (Ctrl-C stops it)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0
