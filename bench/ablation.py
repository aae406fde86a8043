"""The ablation of docs/performance.md: the lab's recipe and then each ingredient
added on top of the previous ones, each one queued `dvc exp run` of the whole
pipeline on the default data, run one after the other by DVC's queue.

    python bench/ablation.py          # in a checkout whose default run is committed

Each experiment reruns only the stages its params reach (the regression head
retrains, pairing and TTA re-evaluate, Graham re-downscales and retrains, the
augmentation, the schedule and the moving average retrain), and runs
``compare``, so its ``dvc exp show`` row holds its own metrics/compare.json. The
experiments (``ablation-1`` ...) are kept; the ``dvc exp show`` command it prints shows
them. Writes bench/ablation.json and prints the table for ResNet-18 scratch (QWK,
accuracy, balanced accuracy and referable AUC with their 95 % intervals, patients
resampled), read from each experiment's metrics/resnet18-scratch.json.
ResNet-18 pretrained is in the experiments too, but means something only with real
ImageNet weights in the hub cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retino.params import run_code  # noqa: E402
from retino.progress import console, print_table  # noqa: E402
from retino.report.comparison import with_interval  # noqa: E402

RUN = "resnet18-scratch"
CODE = run_code(*RUN.split("-"))  # its columns in compare.json: r18s
STEPS = [
    ("the lab's recipe", []),
    ("+ regression head", ["train.head=regression"]),
    ("+ paired eyes", ["evaluate.pair_eyes=true"]),
    ("+ flip TTA", ["evaluate.tta=flips"]),
    ("+ Graham preprocessing", ["data.preprocess=graham"]),
    ("+ field augmentation", ["train.augment=field"]),
    ("+ cosine schedule", ["train.lr_schedule=cosine"]),
    ("+ EMA of the weights", ["train.ema=0.999"]),
]
COLUMNS = ("step", "QWK", "acc %", "bal. acc. %", "ref. AUC")
# dvc exp show of the ablation: RUN's columns of compare.json (QWK, its interval, accuracy,
# and the two-eye ones once pairing is on) and the params the steps set
EXP_SHOW_OPTIONS = (f"--drop '.*' --keep 'Experiment|{CODE}.qwk$|{CODE}.qwk_paired|train.head|"
                    "evaluate.pair_eyes|evaluate.tta|data.preprocess|train.augment|"
                    "train.lr_schedule|train.ema'")


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def start_queue() -> None:
    """``dvc queue start``: its worker lives on after the command and keeps the output
    streams it was given, so a pipe would hold this script until the worker quits (it
    did, for 14 minutes once); its output goes to a file instead."""
    with tempfile.TemporaryFile("w+") as log:
        result = subprocess.run(["dvc", "queue", "start", "--jobs", "1"], cwd=ROOT, text=True,
                                stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            log.seek(0)
            raise SystemExit(f"dvc queue start failed:\n{log.read()}")


def headline(report: dict) -> dict:
    """The single-eye figures, or the paired ones once pairing is on."""
    figures = report.get("paired_eyes", report)
    return {key: figures[key] for key in ("qwk", "acc", "bacc", "ref_auc", "ci95")}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def experiment_name(index: int) -> str:
    return f"ablation-{index}"


def queue_steps() -> list[list[str]]:
    """Queue one experiment per step (cumulative settings); the settings of each."""
    settings: list[str] = []
    queued = []
    for index, (step, changes) in enumerate(STEPS, start=1):
        settings += changes
        options = [option for setting in settings for option in ("-S", setting)]
        dvc("exp", "run", "--queue", "--name", experiment_name(index), *options)
        console.print(f"queued {experiment_name(index)}: {step} "
                      f"({' '.join(settings) or 'params.yaml as it is'})")
        queued.append(list(settings))
    return queued


def queue_states(names: list[str]) -> dict[str, str]:
    """Status of each named task in ``dvc queue status`` (Queued, Running, Success ...).
    DVC lists queued and running tasks before finished ones, so where an earlier run
    left a finished task of the same name, the first line is this run's."""
    states: dict[str, str] = {}
    for line in dvc("queue", "status").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] in names:
            states.setdefault(fields[1], fields[-1])
    return states


def wait_for(names: list[str]) -> None:
    """Until DVC's queue has run every named experiment; stop on the first failure."""
    while True:
        states = queue_states(names)
        failed = [name for name, state in states.items() if state == "Failed"]
        if failed:
            raise SystemExit(f"{failed[0]} failed:\n{dvc('queue', 'logs', failed[0])}")
        if len(states) == len(names) and all(s == "Success" for s in states.values()):
            return
        time.sleep(30)


def experiment_ref(baseline: str, name: str) -> str:
    """The git ref DVC keeps experiment ``name`` of commit ``baseline`` under (names
    repeat across baselines)."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def experiment_report(name: str) -> dict:
    """metrics/<RUN>.json as the experiment ``name`` of this commit committed it."""
    ref = experiment_ref(git("rev-parse", "HEAD").strip(), name)
    return json.loads(git("show", f"{ref}:metrics/{RUN}.json"))


def main() -> None:
    if git("status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit("commit or stash your changes first: queued experiments start "
                         "from the last commit")
    names = [experiment_name(index) for index in range(1, len(STEPS) + 1)]
    existing = set(dvc("exp", "list", "--name-only").split())
    if existing & set(names):
        dvc("exp", "remove", *sorted(existing & set(names)))
    settings = queue_steps()
    start_queue()
    wait_for(names)
    rows = [{"step": step, "experiment": name, "settings": step_settings,
             **headline(experiment_report(name))}
            for (step, _), name, step_settings in zip(STEPS, names, settings)]
    (ROOT / "bench" / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_table(f"{RUN}, test split, [95 % interval]", COLUMNS,
                [[row["step"], with_interval(row, "qwk", 3), with_interval(row, "acc", 1),
                  with_interval(row, "bacc", 1), with_interval(row, "ref_auc", 3)]
                 for row in rows])
    console.print(f"the experiments: dvc exp show {EXP_SHOW_OPTIONS}")


if __name__ == "__main__":
    main()
