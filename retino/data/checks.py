"""What can be wrong with a user's data, and the ``data.on_bad_input`` policy that
settles it.

Every problem names its file (and CSV row where there is one) and what is wrong.
With ``stop`` (the default) the stage ends with all problems in one message; with
``skip`` the affected images are left out and listed in a git-tracked report, so a
run never trains on less data without saying so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Sequence

from retino.errors import DataError

REPORT_COLUMNS = ("file", "row", "problem")
SHOWN = 12  # problems quoted in a stop message; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One unusable input: ``row`` is the 1-based CSV line, None for image files."""

    file: str
    row: int | None
    what: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        return f"{where}: {self.what}"


SKIPPED_REPORT = "metrics/skipped_inputs.csv"  # downscale-images' list of what it left out


# said when the cheap checks stop a stage: the costly one has not looked yet
MORE_MAY_FOLLOW = ("these are what reading the CSVs and listing the files found; photos that "
                   "fail to decode are found once these are fixed, so more may follow")


def stop_on(problems: Sequence[Problem], on_bad_input: str, report: str = SKIPPED_REPORT,
            more_may_follow: bool = False) -> None:
    """Raise one ``DataError`` listing ``problems`` unless the policy is ``skip``; the
    message names ``report``, where ``skip`` would list them, and with
    ``more_may_follow`` says that a later check may find more."""
    if not problems or on_bad_input == "skip":
        return
    lines = [str(p) for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"... and {len(problems) - SHOWN} more")
    raise DataError(f"{len(problems)} bad input(s):\n  " + "\n  ".join(lines) +
                    (f"\n{MORE_MAY_FOLLOW}" if more_may_follow else "") +
                    "\nfix them, or set data.on_bad_input: skip in params.yaml to leave "
                    f"them out (they are then listed in {report})")


def report_csv(problems: Sequence[Problem]) -> str:
    """The skipped-inputs report: one row per problem, header always present."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for p in problems:
        writer.writerow([p.file, "" if p.row is None else p.row, p.what])
    return out.getvalue()
