"""retino (also: python -m retino): commands beside the pipeline.

  retino summary                      the results table of the last run, from its files
                                      (--format markdown or csv: to paste or to load)
  retino compare-runs [REV ...]       one PNG of the runs of two or more revisions or
                                      experiments (default: HEAD against the workspace)
  retino predict --model M PHOTOS     grade new photos with a trained model
  retino preview PHOTO                the photo beside what the network sees of it
  retino preview --augment PHOTO      what the network trains on under train.augment: field
  retino preset NAME                  the -S options of a preset:
                                      dvc exp run $(retino preset lab)

Files these commands write go under out/ unless told otherwise (git ignores it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retino.params import DEVICES, PREPROCESSING
from retino.stage import run_stage

OUT = Path("out")  # what the commands write by default; ignored by git (.gitignore)
SUMMARY_FORMATS = ("table", "markdown", "csv")


def _int_from(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``, else a message saying so."""
    def check(text: str) -> int:
        if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: must be an integer from {low} to "
                                             f"{high}")
        return int(text)
    return check


def _summary_parser(commands) -> None:
    summary = commands.add_parser(
        "summary", help="the results table of the last run, from its files",
        description="The results of the four models (and of the external set, when "
        "params.yaml names one), read from the files compare reads; nothing is rerun. "
        "Written to standard output: retino summary --format markdown > results.md")
    summary.add_argument("--format", choices=SUMMARY_FORMATS, default="table",
                         help="table (for the terminal), markdown (to paste into a "
                         "report) or csv (one row per model and set, intervals in columns)")
    summary.add_argument("--metrics-dir", type=Path, default=Path("metrics"),
                         help="where the evaluate stages wrote <arch>-<init>.json "
                         "(default metrics)")
    summary.add_argument("--history-dir", type=Path, default=Path("plots/history"),
                         help="where the evaluate stages wrote <arch>-<init>.csv "
                         "(default plots/history)")


def _compare_runs_parser(commands) -> None:
    runs = commands.add_parser(
        "compare-runs", help="one PNG of the runs of revisions or experiments",
        description="The lab report's Result Comparison across experiments, as one PNG: "
        "test accuracy and training loss per epoch of every model, and each model's test "
        "accuracy and QWK with their 95 %% intervals, for each revision: a git commit, "
        "branch or tag, a DVC experiment's name (dvc exp show), or 'workspace' for the "
        "files on disk. After dvc exp run -S train.weighted_loss=true, the default (HEAD "
        "against the workspace) sets the weighted loss beside the unweighted one.")
    runs.add_argument("revisions", nargs="*", default=["HEAD", "workspace"], metavar="REV",
                      help="revisions or experiment names, two or more (default: HEAD "
                      "workspace)")
    runs.add_argument("--out", type=Path, default=OUT / "compare-runs.png",
                      help="PNG to write (default out/compare-runs.png)")


def _predict_parser(commands) -> None:
    grade = commands.add_parser(
        "predict", help="grade photos with a trained model",
        description="Grade photos (files, or folders searched for images) with a model "
        "file of the train stage, using the preprocessing stored in it. Writes one CSV "
        "row per photo; a photo that cannot be read gets a row with the reason. Exit "
        "status 1 when any photo could not be read.")
    grade.add_argument("--model", type=Path, required=True,
                       help="a train stage's model file, e.g. models/resnet50-pretrained.pt")
    grade.add_argument("photos", type=Path, nargs="+", help="photo files or folders")
    grade.add_argument("--out", type=Path, default=OUT / "predictions.csv",
                       help="CSV to write (default out/predictions.csv)")
    grade.add_argument("--device", default="auto", choices=DEVICES,
                       help="where to run the model (default auto: cuda when present)")
    grade.add_argument("--batch-size", type=_int_from(1, 4096), default=32,
                       help="photos graded at a time (default 32)")
    grade.add_argument("--workers", type=_int_from(0, 256), default=0,
                       help="processes decoding photos; 0 = one per CPU core")
    grade.add_argument("--explain", type=Path, metavar="DIR",
                       help="also write a Grad-CAM picture per photo into DIR (e.g. "
                       "out/explain)")


def _preview_parser(commands) -> None:
    preview = commands.add_parser(
        "preview", help="the photo beside what the network sees of it, under each "
        "data.preprocess choice")
    preview.add_argument("photo", type=Path, help="a fundus photo")
    preview.add_argument("--size", type=_int_from(32, 2048), default=256,
                         help="data.image_size in px, 32 to 2048 (default 256)")
    preview.add_argument("--out", type=Path, default=OUT / "preview.png",
                         help="PNG to write (default out/preview.png)")
    preview.add_argument("--augment", action="store_true",
                         help="instead: a grid of the photo as downscaled and as train.augment: "
                         "field changes it, the draws of the first epoch of --seed")
    preview.add_argument("--count", type=_int_from(1, 64), default=11,
                         help="augmented versions, 1 to 64 (--augment)")
    preview.add_argument("--seed", type=_int_from(0, 2**32 - 1), default=0,
                         help="train.run_seed (--augment)")
    preview.add_argument("--preprocess", default="none", choices=PREPROCESSING,
                         help="data.preprocess of the downscaled photo (--augment)")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="retino", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _summary_parser(commands)
    _compare_runs_parser(commands)
    _predict_parser(commands)
    _preview_parser(commands)
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
    from rich.console import Console

    from retino.params import load_params
    from retino.report.comparison import (print_summary, read_results, summary_csv,
                                          summary_markdown)

    external = load_params().external.source  # the external set of params.yaml, if any
    results = read_results(args.metrics_dir, args.history_dir, external)
    if args.format == "markdown":
        sys.stdout.write(summary_markdown(results))
    elif args.format == "csv":
        sys.stdout.write(summary_csv(results))
    else:
        print_summary(results, Console(width=None if sys.stdout.isatty() else 200))


def run_compare_runs(args: argparse.Namespace) -> None:
    from retino.report.revisions import compare_runs  # matplotlib: only here

    compare_runs(args.revisions, args.out)
    print(f"wrote {args.out}")


def run_predict(args: argparse.Namespace) -> None:
    from retino.predict import find_photos, predict, print_summary  # torch: only here

    summary = predict(args.model, find_photos(args.photos), args.out, args.device,
                      args.batch_size, args.workers, args.explain)
    print_summary(summary, args.out)
    if summary.failed:
        sys.exit(1)


def run_preset(args: argparse.Namespace) -> None:
    from retino.errors import ParamsError
    from retino.presets import PRESETS, preset_line

    if args.name not in PRESETS:
        raise ParamsError(f"unknown preset {args.name!r}: choose {', '.join(PRESETS)}")
    print(preset_line(args.name))


COMMANDS = {"summary": run_summary, "compare-runs": run_compare_runs,
            "predict": run_predict, "preview": run_preview, "preset": run_preset}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_stage(lambda: COMMANDS[args.command](args))
