"""Stage check-params: validate all of params.yaml before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a typo that a
stage found only after starting would already have cost its results. Every stage
waits for this one, whose output is the same whenever params.yaml is valid (so it
causes no reruns); a problem stops `dvc repro` here, naming each bad key, what it
holds and what is allowed, and every output stays where it was.

With data.source: synthetic, the data set follows from params.yaml: its splits are
planned (no pixel drawn) and a combination that leaves no test images, a grade missing
from train or no validation hold-out stops here too; so does a data.source or
external.source whose folder data/<source> is not there, and external.split: test
with an external set that has no test split of its own.

Reads all of params.yaml (a file dependency: any edit reruns this check alone).
"""

from pathlib import Path

from retino.atomic import write_text
from retino.data.planned import split_problems
from retino.data.sources import external_split_problems, missing_folders
from retino.errors import ParamsError
from retino.params import load_params
from retino.stage import run_stage, stage_parser

CHECKED = "params.yaml passed retino's checks\n"
# dvc exp run -S writes its values into params.yaml before any stage runs, and leaves
# them there when the run fails: every later experiment would fail on them again
SET_WITH_S = ("If you set a value with `dvc exp run -S`, params.yaml now holds it: put the "
              "committed file back with `git checkout params.yaml`, then run again with a "
              "valid value.")


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="marker file to write")
    args = parser.parse_args()
    try:
        params = load_params()  # every problem of the whole file, in one message
    except ParamsError as error:
        raise ParamsError(f"{error}\n{SET_WITH_S}") from None
    problems = split_problems(params)  # the synthetic set's splits, planned from params
    problems += missing_folders(params.data.source, params.external.source)
    problems += external_split_problems(params.external.source, params.external.split)
    if problems:
        raise ParamsError("params.yaml: " + "\n  ".join(problems) + f"\n{SET_WITH_S}")
    write_text(args.out, CHECKED)


if __name__ == "__main__":
    run_stage(main)
