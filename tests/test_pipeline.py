"""The real dvc CLI on the real dvc.yaml, in a temporary git repo, on tiny params."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT, tiny_params

pytestmark = pytest.mark.slow
RUNS = ("resnet18-pretrained", "resnet18-scratch", "resnet50-pretrained", "resnet50-scratch")


def run(repo: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                            env=repo_env(repo), timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def repo_env(repo: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(repo), "TORCH_HOME": os.environ["TORCH_HOME"],
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, stand_in_weights) -> Path:
    os.environ["TORCH_HOME"] = str(stand_in_weights)
    repo = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "retino"):
        shutil.copytree(ROOT / folder, repo / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    return repo


def test_repro_compute_stats_runs_only_the_data_stages(repo):
    output = run(repo, "dvc", "repro", "compute-stats")
    assert ran_stages(output) == {"synthesize", "downscale-images", "compute-stats"}
    stats = json.loads((repo / "metrics" / "data_stats.json").read_text())
    assert stats["images"]["train"] + stats["images"]["test"] == 60
    assert sum(stats["class_counts"]["train"].values()) == stats["images"]["train"]


def test_full_repro_then_nothing_to_do(repo):
    output = run(repo, "dvc", "repro")
    assert {f"train@{r}" for r in RUNS} | {f"evaluate@{r}" for r in RUNS} | {"compare"} \
        == ran_stages(output)
    for name in RUNS:
        assert (repo / "models" / f"{name}.pt").is_file()
        assert (repo / "plots" / "confusion" / f"{name}.png").is_file()
    assert ran_stages(run(repo, "dvc", "repro")) == set()
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")


def test_metrics_show_lists_every_model(repo):
    output = run(repo, "dvc", "metrics", "show")
    for name in RUNS:
        assert f"metrics/{name}.json" in output
    assert "quadratic_weighted_kappa" in output and "metrics/data_stats.json" in output


def test_resnet50_param_marks_only_resnet50_training(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["train"]["resnet50"]["lr"] = 0.005
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = run(repo, "dvc", "status")
    finally:
        params_file.write_text(original)
    changed = {line.rstrip(":").strip() for line in status.splitlines()
               if line and not line.startswith("\t") and line.rstrip().endswith(":")}
    assert changed == {"train@resnet50-pretrained", "train@resnet50-scratch"}


def test_weighted_loss_experiment_reruns_training_not_data(repo):
    before = {n: json.loads((repo / "metrics" / f"{n}.json").read_text()) for n in RUNS}
    output = run(repo, "dvc", "exp", "run", "-S", "train.weighted_loss=true")
    stages = ran_stages(output)
    assert {f"train@{r}" for r in RUNS} <= stages and "compare" in stages
    assert not stages & {"synthesize", "downscale-images", "compute-stats"}
    after = {n: json.loads((repo / "metrics" / f"{n}.json").read_text()) for n in RUNS}
    assert all(after[n]["weighted_loss"] is True for n in RUNS)
    assert any(after[n]["confusion_counts"] != before[n]["confusion_counts"] for n in RUNS)


def test_plots_diff_writes_html_with_the_plots(repo):
    run(repo, "dvc", "plots", "diff", "HEAD")
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "test accuracy per epoch" in html
    assert "resnet50-scratch confusion (test)" in html
    assert "resnet18.png" in html


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _interrupt(repo: Path, stage: str, resume_file: Path, sig: int) -> str:
    """Run ``dvc repro -f <stage>`` and, as soon as it has saved a new resume state,
    send ``sig`` to its whole process group (as a terminal's Ctrl-C does)."""
    before = _mtime(resume_file)
    process = subprocess.Popen(["dvc", "repro", "-f", stage], cwd=repo, env=repo_env(repo),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout))
    reader.start()
    while process.poll() is None and _mtime(resume_file) in (before, None):
        time.sleep(0.005)
    assert process.poll() is None, "the stage finished before it could be interrupted"
    os.killpg(process.pid, sig)
    process.wait(timeout=120)
    reader.join(timeout=10)
    assert " done in " not in "".join(output), "the stage ran to its end despite the signal"
    return "".join(output)


def _resumed_after(output: str) -> int:
    return int(re.search(r"resuming after epoch (\d+)", output).group(1))


def test_interrupted_training_resumes_and_ends_as_if_never_stopped(repo):
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["epochs_fine_tuning"] = 4  # scratch: 5 epochs, time to interrupt
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    stage, name = "train@resnet18-scratch", "resnet18-scratch"
    run(repo, "dvc", "repro", stage)
    history = (repo / "plots" / "history" / f"{name}.csv").read_text()
    weights = _weights(repo / "models" / f"{name}.pt")
    resume_file = repo / "models" / f"{name}.resume.pt"
    assert not resume_file.exists()  # removed once the stage has finished

    output = _interrupt(repo, stage, resume_file, signal.SIGINT)  # Ctrl-C
    assert resume_file.is_file(), output
    assert not (repo / "models" / f"{name}.pt").exists()
    first = _resumed_after(_interrupt(repo, stage, resume_file, signal.SIGKILL))  # killed
    output = run(repo, "dvc", "repro", stage)  # DVC sees the missing outputs by itself
    assert 1 <= first < _resumed_after(output) < 5 and ran_stages(output) == {stage}
    assert (repo / "plots" / "history" / f"{name}.csv").read_text() == history
    resumed = _weights(repo / "models" / f"{name}.pt")
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[key], weights[key]) for key in weights)
    assert not resume_file.exists()
