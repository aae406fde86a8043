"""Stage downscale-external@<source>: the external test set that external.source names,
checked and downscaled exactly as the training data is (the same crop to the eye,
data.image_size and data.preprocess), as one test split: every gradable image
(external.split: all) or the set's own test split (test), in the order of their names:
nothing of how the training data is split decides which images or in what order.
Cached like downscale-images, so a second experiment on the same set reuses it.

Reads params.yaml: external.split (all | test), data.image_size, data.preprocess (none |
graham), data.on_bad_input (stop | skip), compute.image_workers (0 = one per core).
"""

from pathlib import Path

from retino.atomic import atomic_path, write_text
from retino.data.checks import report_csv
from retino.data.downscale import left_out_lines, prepare_downscaled
from retino.data.sources import EXTERNAL_MODE, read_external, source_folder
from retino.params import EXTERNAL_SPLIT_TEXT, SOURCES, load_params
from retino.pool import default_workers
from retino.progress import console, counting
from retino.stage import run_stage, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--source", required=True, choices=SOURCES, help="the external set")
    parser.add_argument("--out", type=Path, required=True, help="downscaled set to write")
    parser.add_argument("--skipped-out", type=Path, required=True,
                        help="CSV report of the inputs left out")
    args = parser.parse_args()
    params = load_params(stage="downscale-external")
    data, split = params.data, params.external.split
    folder = source_folder(args.source)
    source = read_external(args.source, folder, split)  # CSV problems before any image work
    workers = default_workers(params.compute.image_workers)
    with atomic_path(args.out) as out, counting(f"downscale-external@{args.source}",
                                                len(source.splits[EXTERNAL_MODE])) as tick:
        splits, skipped = prepare_downscaled(source, out, data.image_size, workers,
                                             data.on_bad_input, tick, data.preprocess,
                                             str(args.skipped_out))
    write_text(args.skipped_out, report_csv(skipped))
    console.print(f"external set {args.source} ({folder}): {len(splits[EXTERNAL_MODE])} "
                  f"images ({EXTERNAL_SPLIT_TEXT[split]}) at {data.image_size} px, data.preprocess "
                  f"{data.preprocess}, {workers} workers -> {args.out}")
    for line in left_out_lines(source, skipped, args.skipped_out):
        console.print(line)


if __name__ == "__main__":
    run_stage(main)
