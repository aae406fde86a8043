"""The ablation of README "Beyond the lab": ResNet-18 from scratch on the default data,
the lab's recipe and then each ingredient added on top of the previous ones, each
one `dvc exp run` of that model's train and evaluate stages.

    python bench/ablation.py          # in a checkout whose default run is built

Writes bench/ablation.json and prints the table (QWK, accuracy, balanced accuracy and
referable AUC with their 95 % intervals, patients resampled). The experiments
(``ablation-1`` ...) are removed at the end, since they stop before compare and their
`dvc exp show` rows would repeat the baseline's metrics/compare.json; the workspace
ends as it was.
Only ResNet-18 scratch is run: an experiment of all four models costs four times as
long, and the pretrained ones need real ImageNet weights to mean anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retino.progress import console, print_table  # noqa: E402
from retino.report.comparison import with_interval  # noqa: E402

RUN = "resnet18-scratch"
STEPS = [
    ("the lab's recipe", []),
    ("+ regression head", ["train.head=regression"]),
    ("+ paired eyes", ["evaluate.pair_eyes=true"]),
    ("+ flip TTA", ["evaluate.tta=flips"]),
    ("+ Graham preprocessing", ["data.preprocess=graham"]),
]
COLUMNS = ("step", "QWK", "acc %", "bal. acc. %", "ref. AUC")


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def headline(report: dict) -> dict:
    """The single-eye figures, or the paired ones once pairing is on."""
    figures = report.get("paired_eyes", report)
    return {key: figures[key] for key in ("qwk", "acc", "bacc", "ref_auc", "ci95")}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def main() -> None:
    if git("status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit("commit or stash your changes first: the ablation restores the "
                         "workspace with git checkout at the end")
    settings: list[str] = []
    rows = []
    for index, (step, changes) in enumerate(STEPS, start=1):
        settings += changes
        options = [option for setting in settings for option in ("-S", setting)]
        console.rule(f"{step}: {' '.join(settings) or 'params.yaml as it is'}")
        dvc("exp", "run", "--name", f"ablation-{index}", *options, f"evaluate@{RUN}")
        report = json.loads((ROOT / "metrics" / f"{RUN}.json").read_text())
        rows.append({"step": step, "settings": list(settings), **headline(report)})
    git("checkout", "--", ".")
    dvc("checkout")
    dvc("exp", "remove", *(f"ablation-{index}" for index in range(1, len(STEPS) + 1)))
    (ROOT / "bench" / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_table(f"{RUN}, test split, [95 % interval]", COLUMNS,
                [[row["step"], with_interval(row, "qwk", 3), with_interval(row, "acc", 1),
                  with_interval(row, "bacc", 1), with_interval(row, "ref_auc", 3)]
                 for row in rows])


if __name__ == "__main__":
    main()
