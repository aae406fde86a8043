"""Stage downscale-images: check the source, split by patient if asked, and store every
image cropped, padded square and resized as uint8 arrays.

Reads params.yaml: data.source (synthetic | lab | kaggle | aptos | messidor2 | idrid |
folders), data.image_size,
data.on_bad_input (stop | skip), data.resplit (true | false),
data.resplit_test_fraction, data.split_seed, data.preprocess (none | graham),
compute.image_workers (0 = one per core).
"""

from pathlib import Path

from retino.atomic import atomic_path, write_text
from retino.data.checks import report_csv
from retino.data.downscale import left_out_lines, prepare_downscaled
from retino.data.sources import read_source, source_folder
from retino.data.layout import VALIDATION
from retino.data.splits import patient_leakage, seen_in_training
from retino.params import load_params
from retino.pool import default_workers
from retino.progress import console, counting
from retino.stage import run_stage, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="downscaled set to write")
    parser.add_argument("--skipped-out", type=Path, required=True,
                        help="CSV report of the inputs left out")
    args = parser.parse_args()
    params = load_params(stage="downscale-images")
    data = params.data
    folder = source_folder(data.source)
    source = read_source(data.source, folder, data.resplit, data.resplit_test_fraction,
                         data.split_seed)  # CSV problems surface before any image work
    total = sum(len(split) for split in source.splits.values())
    workers = default_workers(params.compute.image_workers)
    with atomic_path(args.out) as out, counting("downscale-images", total) as tick:
        splits, skipped = prepare_downscaled(source, out, data.image_size, workers,
                                             data.on_bad_input, tick, data.preprocess)
    write_text(args.skipped_out, report_csv(skipped))
    leaked = patient_leakage(seen_in_training(splits), splits["test"].names)
    made_here = "by patient" if leaked is not None else "per image"
    counts = " and ".join(f"{len(split)} {mode}" for mode, split in splits.items())
    console.print(f"{data.source} ({folder}): {counts} images at {data.image_size} px, "
                  f"{workers} workers -> {args.out}; "
                  + (f"split made here {made_here}" if source.resplit else "split as given"))
    if VALIDATION in splits:
        console.print(f"validation: the source's own {VALIDATION} split "
                      f"({len(splits[VALIDATION])} images); the train stages choose their "
                      "epoch on it instead of holding out train patients")
    for line in left_out_lines(source, skipped, args.skipped_out):
        console.print(line)
    if leaked is None:
        console.print("[yellow]patients unknown: the image names carry none "
                      "(<patient>_<left|right>), so the split is per image and its patient "
                      "leakage is unknown[/]")
    elif leaked:
        console.print(f"[yellow]patient leakage: {leaked} of {len(splits['test'])} test images "
                      "have the other eye in train; set data.resplit: true to split by "
                      "patient[/]")


if __name__ == "__main__":
    run_stage(main)
