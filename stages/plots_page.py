"""Stage plots-page: the HTML page `dvc plots show` and `dvc plots diff` fill, with Vega,
Vega-Lite and Vega-Embed inlined from the vl-convert-python package, so the charts draw
offline (DVC's own page loads them from a CDN). Reads no params.
"""

from pathlib import Path

from retino.atomic import write_text
from retino.report.page import plots_page
from retino.stage import run_stage, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="HTML page to write")
    write_text(parser.parse_args().out, plots_page())


if __name__ == "__main__":
    run_stage(main)
