"""``hoi-mllm synth``: generate the synthetic HOI world (images + HICO-DET-style annotation)."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate the synthetic HOI world (images + annotations)",
        description="Render a synthetic HOI world where every interaction is visible (pose, contact, relative "
                    "position) and write it as a UPT-style HICO-DET dataset: instances_{train,test}.json, "
                    "images/{train,test}/, vocabulary.json and world.json (every image's rendering parameters). "
                    "The same arguments give byte-identical files; an identical world already in the folder "
                    "is reused.")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--images", type=int, required=True, help="number of training images (>= 1)")
    p.add_argument("--test-images", type=int, default=None,
                   help="number of test images (>= 0; default: a quarter of --images, at least 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world; train and test are separate streams of it (default 0)")
    p.add_argument("--image-size", type=int, default=256, help="side of the square images in pixels, 128..2048 (default 256)")
    p.add_argument("--occlusion", action="store_true",
                   help="let people and objects overlap and draw posts and bushes in front of them (boxes stay amodal)")
    p.add_argument("--clutter", action="store_true", help="background clutter shapes and more distractor objects")
    p.add_argument("--format", dest="image_format", default="png", choices=["png", "jpg"],
                   help="image files: png (lossless, default) or jpg (quality 95)")
    p.add_argument("--habits", default="clean", choices=["clean", "hico"],
                   help="annotation habits: clean (exact boxes) or hico (every verb row its own jittered boxes, several "
                        "verbs on one pair, same-class objects beside a person, crowded scenes and a few crowds over "
                        "max_pairs, as HICO-DET's files; the demo's default)")
    p.add_argument("--workers", type=int, default=None, help="processes drawing images (default: all CPUs)")
    p.add_argument("--force", action="store_true", help="replace a different world (or other files) in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from hoi_mllm.data.synthetic import generate_world

    test = args.test_images if args.test_images is not None else max(1, args.images // 4)
    info = generate_world(args.output, args.images, test, args.seed, image_size=args.image_size,
                          occlusion=args.occlusion, clutter=args.clutter, progress=not args.quiet, force=args.force,
                          image_format=args.image_format, workers=args.workers, habits=args.habits)
    if args.json:
        print(json.dumps(info.to_dict(), indent=1))
        return 0
    state = "reused the identical world in" if info.reused else f"generated in {info.seconds:.1f} s:"
    print(f"synthetic world {state} {info.output_dir}")
    for split, c in info.counts.items():
        print(f"  {split:<5} {c['images']:>6} images  {c['pairs']:>7} person-object pairs  "
              f"{c['interactions']:>6} interactions  {c['triplets']:>7} triplets")
    print(f"  vocabulary {info.vocabulary} (default zero-shot split: {info.default_split})")
    return 0
