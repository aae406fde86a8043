"""Stage compute-stats: exact channel mean/std of the train split, class counts, weights,
the majority baseline and the split's patient leakage, into metrics/data_stats.json.

Reads params.yaml: data.image_size and data.preprocess (none | graham), both recorded
with the statistics, so that every model file says how its inputs were made.
"""

from pathlib import Path

from retino.atomic import write_json
from retino.data.arrays import array_path, iter_chunks
from retino.data.layout import read_layout
from retino.data.stats import channel_moments, stats_document
from retino.params import load_params
from retino.progress import console, counting, print_table
from retino.stage import run_stage, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="downscaled set")
    parser.add_argument("--out", type=Path, required=True, help="stats JSON to write")
    args = parser.parse_args()
    params = load_params(stage="compute-stats")
    splits = read_layout(args.data, eye_names=False)
    train = splits["train"]
    with counting("compute-stats", len(train)) as tick:
        moments = channel_moments(iter_chunks(array_path(args.data, "train"), len(train)), tick)
    document = stats_document(moments, splits, params.data.image_size,
                              params.data.preprocess)
    write_json(args.out, document)
    rows = [[mode, *counts.values()] for mode, counts in document["class_counts"].items()]
    print_table("class counts", ["split", *document["class_weights"]], rows)
    console.print(f"mean {document['mean']}\nstd  {document['std']}\n"
                  f"majority baseline (test): {document['baseline_acc']:.2f} %\n"
                  f"patient leakage: {document['test_images_with_other_eye_in_train']} test "
                  f"images ({document['test_patient_leakage_percent']} %) have the other eye "
                  "in train")


if __name__ == "__main__":
    run_stage(main)
