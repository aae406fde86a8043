"""Whether two built checkouts trained the same: their learning histories on the
columns both have, and their metrics files, byte for byte.

    python bench/same_histories.py OLD NEW    # e.g. a clone of the last release, and this one

OLD and NEW are project folders after ``dvc repro`` (or ``git show``-ed copies of an
experiment's ``plots/history`` and ``metrics``). A column that only NEW has (a new
column such as ``lr``) is left aside; every other cell must be equal as text. Exits
1 on the first difference it reports.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

RUNS = ("resnet18-pretrained", "resnet18-scratch", "resnet50-pretrained", "resnet50-scratch")
METRICS = ("compare", "data_stats", *RUNS)


def shared_columns(old: Path, new: Path) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The columns of ``old`` (all of which ``new`` must have), and both tables on them."""
    old_rows, new_rows = (list(csv.DictReader(path.open())) for path in (old, new))
    columns = list(old_rows[0]) if old_rows else []
    return (columns, [[row[c] for c in columns] for row in old_rows],
            [[row.get(c) for c in columns] for row in new_rows])


def differences(old: Path, new: Path) -> list[str]:
    found = []
    for run in RUNS:
        columns, before, after = shared_columns(old / "plots/history" / f"{run}.csv",
                                                new / "plots/history" / f"{run}.csv")
        if before != after:
            found.append(f"plots/history/{run}.csv differs on the columns {columns}")
    for name in METRICS:
        path = Path("metrics") / f"{name}.json"
        if (old / path).read_bytes() != (new / path).read_bytes():
            found.append(f"{path} differs")
    return found


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    old, new = Path(sys.argv[1]), Path(sys.argv[2])
    found = differences(old, new)
    for line in found:
        print(line)
    if found:
        sys.exit(1)
    print(f"the same: {len(RUNS)} histories on their shared columns, {len(METRICS)} "
          f"metrics files, {old} and {new}")


if __name__ == "__main__":
    main()
