"""Stage synthesize: draw the embedded synthetic fundus dataset in the lab's layout."""

import argparse
from pathlib import Path

from retino.cli import run_stage
from retino.atomic import atomic_path
from retino.params import load_params
from retino.preprocess import default_workers
from retino.progress import counting, print_table
from retino.synthetic import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    args = parser.parse_args()
    params = load_params().synthesize
    with atomic_path(args.out) as folder, counting("synthesize", 2 * params.patients) as tick:
        splits = write_dataset(folder, params.patients, params.canvas_height,
                               params.test_fraction, params.seed, default_workers(0), tick)
    rows = [[mode, len(s), *(int((s.labels == g).sum()) for g in range(5))]
            for mode, s in splits.items()]
    print_table(f"synthetic dataset in {args.out}", ["split", "images", "0", "1", "2", "3", "4"],
                rows)


if __name__ == "__main__":
    run_stage(main)
