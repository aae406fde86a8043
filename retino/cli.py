"""``retino`` (also ``python -m retino``): commands beside the pipeline.

    retino summary                       reprint compare's table from metrics/ and
                                         plots/history/, without rerunning anything
    retino predict --model M PHOTOS...   grade new photos with a trained model
    retino preview PHOTO                 the photo beside what the network sees of it,
                                         under each data.preprocess choice
    retino preview --augment PHOTO       what the network trains on under
                                         train.augment: field, in a grid
    retino preset NAME                   the -S options of a preset, for
                                         `dvc exp run $(retino preset lab)`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retino.params import DEVICES, PREPROCESSING
from retino.stage import run_stage


def _example_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer from 1 to 64")
    return int(text)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="retino", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="reprint the summary table of the last "
                                  "run from its files, without rerunning anything")
    summary.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    summary.add_argument("--history-dir", type=Path, default=Path("plots/history"))
    grade = commands.add_parser(
        "predict", help="grade photos with a trained model",
        description="Grade photos (files, or folders searched for images) with a model "
        "file of the train stage, using the preprocessing stored in it. Writes one CSV "
        "row per photo; a photo that cannot be read gets a row with the reason. Exit "
        "status 1 when any photo could not be read.")
    grade.add_argument("--model", type=Path, required=True,
                       help="e.g. models/resnet50-pretrained.pt")
    grade.add_argument("photos", type=Path, nargs="+", help="photo files or folders")
    grade.add_argument("--out", type=Path, default=Path("predictions.csv"),
                       help="CSV to write (default predictions.csv)")
    grade.add_argument("--device", default="auto", help=f"one of: {', '.join(DEVICES)}")
    grade.add_argument("--batch-size", type=int, default=32)
    grade.add_argument("--workers", type=int, default=0,
                       help="processes decoding photos; 0 = one per CPU core")
    grade.add_argument("--explain", type=Path, metavar="DIR",
                       help="also write a Grad-CAM picture per photo into DIR")
    preview = commands.add_parser("preview", help="the photo beside what the network sees "
                                  "of it, under each data.preprocess choice")
    preview.add_argument("photo", type=Path)
    preview.add_argument("--size", type=int, default=256, help="data.image_size (px)")
    preview.add_argument("--out", type=Path, default=Path("preview.png"))
    preview.add_argument("--augment", action="store_true",
                         help="instead: a grid of the photo as downscaled and as train.augment: "
                         "field changes it, the draws of the first epoch of --seed")
    preview.add_argument("--count", type=_example_count, default=11,
                         help="augmented versions, 1 to 64 (--augment)")
    preview.add_argument("--seed", type=int, default=0, help="train.run_seed (--augment)")
    preview.add_argument("--preprocess", default="none", choices=PREPROCESSING,
                         help="data.preprocess of the downscaled photo (--augment)")
    preset = commands.add_parser("preset", help="print a preset's -S options for dvc exp run")
    preset.add_argument("name", help="lab: the lab's experiment on a GPU box; field: Huang "
                        "et al. 2023's EyePACS recipe on a GPU box")
    return main


def run_preview(args: argparse.Namespace) -> None:
    from retino.atomic import atomic_path
    from retino.data.photos import input_preview

    sheet = augment_preview(args) if args.augment else input_preview(args.photo, args.size)
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out}")


def augment_preview(args: argparse.Namespace):
    """The downscaled photo and ``args.count`` versions of it under train.augment: field."""
    from retino.data.photos import captioned_sheet, downscale_pixels
    from retino.train.augment import augmented_examples  # torch: only here

    pixels = downscale_pixels(args.photo, args.size, args.preprocess)
    examples = augmented_examples(pixels, args.count, args.seed)
    panels = [("as downscaled", pixels)]
    panels += [(f"augment: field, {index + 1}", image) for index, image in enumerate(examples)]
    return captioned_sheet(panels, columns=4)


def run_summary(args: argparse.Namespace) -> None:
    from retino.params import load_params
    from retino.report.comparison import print_summary, read_results

    external = load_params().external.source  # the external set of params.yaml, if any
    print_summary(read_results(args.metrics_dir, args.history_dir, external))


def run_predict(args: argparse.Namespace) -> None:
    from retino.predict import find_photos, predict, print_summary  # torch: only here

    summary = predict(args.model, find_photos(args.photos), args.out, args.device,
                      args.batch_size, args.workers, args.explain)
    print_summary(summary, args.out)
    if summary.failed:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "summary":
        run_stage(lambda: run_summary(args))
    elif args.command == "predict":
        run_stage(lambda: run_predict(args))
    elif args.command == "preview":
        run_stage(lambda: run_preview(args))
    elif args.command == "preset":
        from retino.presets import PRESETS, preset_line

        if args.name not in PRESETS:
            sys.exit(f"error: unknown preset {args.name!r}: choose {', '.join(PRESETS)}")
        print(preset_line(args.name))
