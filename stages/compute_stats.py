"""Stage compute-stats: exact channel mean/std of the train split, class counts, weights,
and the split's patient leakage."""

import argparse
from pathlib import Path

from retino.atomic import write_json
from retino.data.arrays import array_path, iter_chunks
from retino.data.layout import read_layout
from retino.data.stats import channel_moments, stats_document
from retino.params import load_params
from retino.progress import console, counting, print_table
from retino.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="downscaled set")
    parser.add_argument("--out", type=Path, required=True, help="stats JSON to write")
    args = parser.parse_args()
    params = load_params()
    splits = read_layout(args.data)
    train = splits["train"]
    with counting("compute-stats", len(train)) as tick:
        moments = channel_moments(iter_chunks(array_path(args.data, "train"), len(train)), tick)
    document = stats_document(moments, splits, params.data.image_size)
    write_json(args.out, document)
    rows = [[mode, *counts.values()] for mode, counts in document["class_counts"].items()]
    print_table("class counts", ["split", *document["class_weights"]], rows)
    leakage = document["patient_leakage"]
    console.print(f"mean {document['mean']}\nstd  {document['std']}\n"
                  f"majority baseline (test): {document['majority_baseline_test_accuracy']:.2f} %"
                  f"\npatient leakage: {leakage['test_images_with_other_eye_in_train']} test "
                  f"images ({leakage['percent_of_test']} %) have the other eye in train")


if __name__ == "__main__":
    run_stage(main)
