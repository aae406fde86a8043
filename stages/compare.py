"""Stage compare: the lab's Result Comparison figure per architecture and a summary."""

import argparse
import json
from pathlib import Path

import pandas as pd

from retino.atomic import write_json
from retino.params import ARCHS, INITS, run_name
from retino.progress import print_table
from retino.report.comparison import (SUMMARY_COLUMNS, feature_phase_epochs, model_summary,
                                      summary_rows)
from retino.report.figures import result_comparison
from retino.stage import run_stage


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history-dir", type=Path, required=True)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--figure-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="summary JSON to write")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    baseline = None
    summary: dict[str, dict] = {}
    for arch in ARCHS:
        histories = {init: pd.read_csv(args.history_dir / f"{run_name(arch, init)}.csv")
                     for init in INITS}
        for init, history in histories.items():
            report = json.loads((args.metrics_dir / f"{run_name(arch, init)}.json").read_text())
            baseline = report["majority_baseline_accuracy"]
            summary[run_name(arch, init)] = model_summary(history, report)
        result_comparison(arch, histories, baseline,
                          feature_phase_epochs(histories["pretrained"]),
                          args.figure_dir / f"{arch}.png")
    write_json(args.out, {"majority_baseline_accuracy": baseline, "models": summary})
    print_table(f"test set (majority baseline {baseline:.1f} %)", SUMMARY_COLUMNS,
                summary_rows(summary))


if __name__ == "__main__":
    run_stage(main)
