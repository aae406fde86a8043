"""Stage compute-stats: exact channel mean/std of the train split, class counts, weights."""

import argparse
from pathlib import Path

from retino.cli import run_stage
from retino.atomic import write_json
from retino.layout import IMAGE_FOLDER, image_path, read_layout
from retino.params import load_params
from retino.progress import console, counting, print_table
from retino.stats import channel_moments, stats_document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="downscaled lab-layout folder")
    parser.add_argument("--out", type=Path, required=True, help="stats JSON to write")
    args = parser.parse_args()
    params = load_params()
    splits = read_layout(args.data)
    train = splits["train"]
    paths = (image_path(args.data / IMAGE_FOLDER, name) for name in train.names)
    with counting("compute-stats", len(train)) as tick:
        moments = channel_moments(paths, tick)
    document = stats_document(moments, splits, params.data.image_size)
    write_json(args.out, document)
    rows = [[mode, *counts.values()] for mode, counts in document["class_counts"].items()]
    print_table("class counts", ["split", *document["class_weights"]], rows)
    console.print(f"mean {document['mean']}\nstd  {document['std']}\n"
                  f"majority baseline (test): {document['majority_baseline_test_accuracy']:.2f} %")


if __name__ == "__main__":
    run_stage(main)
