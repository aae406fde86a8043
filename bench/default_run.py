"""Where the time of a newcomer's first `dvc repro` goes, stage by stage.

    python bench/default_run.py                      # the default params, about 8 min on 2 cores
    python bench/default_run.py --params train.epochs_fine_tuning=3

Runs the pipeline on the default synthetic data in a scratch copy of the project (git
and DVC repos of their own), one `dvc repro -s <stage>` after another in the order of
`dvc stage list`, and writes `bench/default_run.json` after every stage: each stage's
wall time and, for the train stages, the seconds inside spent training, scoring test
and validation, computing stored features and writing (the stage's own `timing (s):`
line). Before the pipeline it times a fixed reference workload, in the same run:
ResNet-18 training steps on the CPU (`REFERENCE`, about 10 s), so that a figure from
one machine compares with another's as a ratio: `total / reference`.

The pretrained stages load the ImageNet weights of your torch hub cache when they are
there, else stand-in random weights of the same shape in a temporary TORCH_HOME (the
JSON says which): the time is what real weights cost, the accuracies are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gpu_pipeline import with_overrides, write_json  # noqa: E402
from measure import (STAND_IN_FILES, cpu_name, project_params, run_measured,  # noqa: E402
                     scratch_project, stand_in_torch_home)

REFERENCE = {"arch": "resnet18", "image_size": 96, "batch": 16, "steps": 30}
TIMING = re.compile(r"timing \(s\): (.*)")
ACTIVITY = re.compile(r"([a-z][a-z ]*?) (\d+(?:\.\d+)?)(?:,|$)")


def reference_seconds() -> float:
    """Seconds of ``REFERENCE["steps"]`` ResNet-18 training steps (SGD, random images,
    one thread per core), after two warm-up steps."""
    from torchvision import models

    torch.manual_seed(0)
    model = getattr(models, REFERENCE["arch"])(num_classes=5).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    size, batch = REFERENCE["image_size"], REFERENCE["batch"]
    images, grades = torch.randn(batch, 3, size, size), torch.randint(0, 5, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), grades).backward()
        optimizer.step()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(REFERENCE["steps"]):
        step()
    return time.perf_counter() - started


def activity_seconds(output: str) -> dict[str, float]:
    """The train stage's ``timing (s): training 101.2, scoring test 8.0`` line, as a dict
    (empty when the output has none)."""
    found = TIMING.search(output)
    if not found:
        return {}
    return {name.strip(): float(value) for name, value in ACTIVITY.findall(found.group(1))}


def weights_home() -> tuple[str, bool]:
    """A TORCH_HOME holding the ImageNet files the default run asks for, and whether they
    are real (the user's hub cache) or stand-ins made here."""
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    files = [name for names in STAND_IN_FILES.values() for name in names[:1]]
    if all((home / "hub" / "checkpoints" / name).is_file() for name in files):
        return str(home), True
    return str(stand_in_torch_home(Path(tempfile.mkdtemp(prefix="torch_home_")))), False


def model_results(folder: Path) -> dict[str, dict]:
    """Each model's test QWK and accuracy with their 95 % intervals (the run's
    metrics/<run>.json), and whether the QWK interval lies above the majority
    baseline's QWK, which is 0 (one grade for every eye agrees only by chance)."""
    results = {}
    for path in sorted((folder / "metrics").glob("resnet*.json")):
        report = json.loads(path.read_text())
        low, high = report["ci95"]["qwk"]
        results[path.stem] = {"qwk": round(report["qwk"], 3),
                              "qwk_ci95": [round(low, 3), round(high, 3)],
                              "acc": round(report["acc"], 1),
                              "acc_ci95": [round(v, 1) for v in report["ci95"]["acc"]],
                              "baseline_acc": round(report["baseline_acc"], 1),
                              "qwk_above_baseline": low > 0}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/default_run.json"))
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params.yaml overrides (the default run without them)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER",
                        help="build the scratch project in FOLDER (new) and keep it, to look "
                             "at its outputs or time a stage again")
    args = parser.parse_args()
    params = with_overrides(project_params(), args.params)
    report = {"date": time.strftime("%Y-%m-%d"),
              "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "overrides": args.params, "reference": dict(REFERENCE), "stages": []}
    report["reference"]["seconds"] = round(reference_seconds(), 2)
    home, real = weights_home()
    report["imagenet_weights"] = "real (torch hub cache)" if real else "stand-in (random)"
    if args.keep:
        if args.keep.exists():
            raise SystemExit(f"--keep {args.keep}: already exists; name a new folder")
        run_pipeline(args.keep.resolve(), params, home, report, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="retino_default_run_") as scratch:
        run_pipeline(Path(scratch) / "project", params, home, report, args.out)


def run_pipeline(folder: Path, params: dict, torch_home: str, report: dict, out: Path
                 ) -> None:
    env = {**os.environ, "TORCH_HOME": torch_home, "PYTHONPATH": str(folder),
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@retino.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@retino.invalid"}
    scratch_project(folder, params, env)
    stages = run_measured(["dvc", "stage", "list", "--name-only"], folder, env).output.split()
    for stage in stages:
        measured = run_measured(["dvc", "repro", "-s", stage], folder, env)
        report["stages"].append({"stage": stage, "seconds": round(measured.seconds, 1),
                                 "inside": activity_seconds(measured.output)})
        print(f"{stage}: {measured.seconds:.1f} s", flush=True)
        write_json(out, report)
    report["results"] = model_results(folder)
    total = sum(stage["seconds"] for stage in report["stages"])
    report["total_seconds"] = round(total, 1)
    report["total_per_reference"] = round(total / report["reference"]["seconds"], 1)
    write_json(out, report)
    for run, result in report["results"].items():
        print(f"{run}: QWK {result['qwk']} {result['qwk_ci95']}, accuracy {result['acc']} % "
              f"(majority baseline {result['baseline_acc']} %)")
    print(f"total {total / 60:.1f} min = {report['total_per_reference']} x the reference "
          f"workload ({report['reference']['seconds']} s) -> {out}")


if __name__ == "__main__":
    main()
