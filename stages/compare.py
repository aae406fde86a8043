"""Stage compare: the lab's Result Comparison figure per architecture (with the training
loss beside it), the one DVC metrics file (metrics/compare.json), a model card per
model (metrics/<arch>-<init>.md) and the summary table of all four models, printed and
as Markdown to paste (metrics/summary.md); with an external set, each model's figures
on it beside the in-domain ones, in all of them.

Reads params.yaml: external (which set's reports under metrics/external/ to include;
the cards quote the other params from what dvc.lock recorded). Reprint the tables
later, without rerunning anything, with `retino summary` (--format markdown or csv).
"""

import argparse
import json
from pathlib import Path

import yaml

from retino.atomic import write_json, write_text
from retino.params import ARCHS, load_params
from retino.report.card import git_revision, model_card
from retino.report.comparison import (compared_metrics, external_left_out, leakage_warning,
                                      print_summary, read_results, summary_markdown)
from retino.report.figures import result_comparison
from retino.stage import run_stage, stage_parser


def parse_args() -> argparse.Namespace:
    parser = stage_parser(__doc__)
    parser.add_argument("--history-dir", type=Path, required=True,
                        help="folder of the evaluate stages' <arch>-<init>.csv")
    parser.add_argument("--metrics-dir", type=Path, required=True,
                        help="folder of the evaluate stages' <arch>-<init>.json (and of "
                        "external/<source>/); the model cards <arch>-<init>.md are written "
                        "there too")
    parser.add_argument("--stats", type=Path, required=True, help="compute-stats JSON")
    parser.add_argument("--figure-dir", type=Path, required=True,
                        help="where <arch>.png goes")
    parser.add_argument("--out", type=Path, required=True, help="compare.json to write")
    parser.add_argument("--summary-out", type=Path, required=True,
                        help="the summary as Markdown to write")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    external = load_params(stage="compare").external
    results = read_results(args.metrics_dir, args.history_dir, external.source)
    for arch in ARCHS:
        runs = {r.name.split("-")[1]: r for r in results if r.name.startswith(f"{arch}-")}
        result_comparison(arch, runs, leakage_warning(results), args.figure_dir / f"{arch}.png")
    write_json(args.out, compared_metrics(results))
    stats = json.loads(args.stats.read_text(encoding="utf-8"))
    lock_file = Path("dvc.lock")  # provenance as DVC recorded it; absent outside DVC
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else {}
    revision = git_revision()
    left_out = external_left_out(args.metrics_dir, external.source)
    for result in results:
        write_text(args.metrics_dir / f"{result.name}.md",
                   model_card(result, stats, lock, revision, left_out))
    write_text(args.summary_out, summary_markdown(results))
    print_summary(results)


if __name__ == "__main__":
    run_stage(main)
