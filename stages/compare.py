"""Stage compare: the lab's Result Comparison figure per architecture, the one DVC
metrics file (metrics/compare.json), a model card per model (metrics/<arch>-<init>.md)
and the summary table of all four models.

Reads no params (the cards quote what dvc.lock recorded). Reprint the table later,
without rerunning anything, with `python -m retino summary`.
"""

import argparse
import json
from pathlib import Path

import yaml

from retino.atomic import write_json, write_text
from retino.params import ARCHS
from retino.report.card import git_revision, model_card
from retino.report.comparison import (compared_metrics, leakage_warning, print_summary,
                                      read_results)
from retino.report.figures import result_comparison
from retino.stage import run_stage, stage_parser


def parse_args() -> argparse.Namespace:
    parser = stage_parser(__doc__)
    parser.add_argument("--history-dir", type=Path, required=True,
                        help="folder of the evaluate stages' <arch>-<init>.csv")
    parser.add_argument("--metrics-dir", type=Path, required=True,
                        help="folder of the evaluate stages' <arch>-<init>.json; the "
                        "model cards <arch>-<init>.md are written there too")
    parser.add_argument("--stats", type=Path, required=True, help="compute-stats JSON")
    parser.add_argument("--figure-dir", type=Path, required=True,
                        help="where <arch>.png goes")
    parser.add_argument("--out", type=Path, required=True, help="compare.json to write")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results = read_results(args.metrics_dir, args.history_dir)
    for arch in ARCHS:
        runs = {r.name.split("-")[1]: r for r in results if r.name.startswith(f"{arch}-")}
        result_comparison(arch, runs, leakage_warning(results), args.figure_dir / f"{arch}.png")
    write_json(args.out, compared_metrics(results))
    stats = json.loads(args.stats.read_text(encoding="utf-8"))
    lock_file = Path("dvc.lock")  # provenance as DVC recorded it; absent outside DVC
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else {}
    revision = git_revision()
    for result in results:
        write_text(args.metrics_dir / f"{result.name}.md",
                   model_card(result, stats, lock, revision))
    print_summary(results)


if __name__ == "__main__":
    run_stage(main)
