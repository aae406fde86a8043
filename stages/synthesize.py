"""Stage synthesize: draw the embedded synthetic fundus dataset in the lab's layout
(data/<patient>_<left|right>.jpeg and the four headerless CSVs).

Reads params.yaml: synthesize.patients, synthesize.canvas_height,
synthesize.test_fraction, synthesize.seed, compute.image_workers (0 = one per core).
"""

from pathlib import Path

from retino.atomic import atomic_path
from retino.data.synthetic import write_dataset
from retino.params import load_params
from retino.pool import default_workers
from retino.progress import counting, print_table
from retino.stage import run_stage, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    args = parser.parse_args()
    params = load_params(stage="synthesize")
    synthesize, workers = params.synthesize, default_workers(params.compute.image_workers)
    with atomic_path(args.out) as folder, counting("synthesize", 2 * synthesize.patients) as tick:
        splits = write_dataset(folder, synthesize.patients, synthesize.canvas_height,
                               synthesize.test_fraction, synthesize.seed, workers, tick)
    rows = [[mode, len(s), *(int((s.labels == g).sum()) for g in range(5))]
            for mode, s in splits.items()]
    print_table(f"synthetic dataset in {args.out}", ["split", "images", "0", "1", "2", "3", "4"],
                rows)


if __name__ == "__main__":
    run_stage(main)
