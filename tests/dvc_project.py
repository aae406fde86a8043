"""Helpers of the end-to-end modules (test_pipeline, test_experiments, test_gpu_box): the
real dvc and git CLIs run in a project folder, and what their output and files say.

The project they run in is conftest's ``repo``: a copy of the tiny pipeline that
``built_pipeline`` built and committed once per test session.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml


RUNS = ("resnet18-pretrained", "resnet18-scratch", "resnet50-pretrained", "resnet50-scratch")
CODES = ("r18p", "r18s", "r50p", "r50s")
HEADLINE = ("qwk", "qwk_ci", "acc")  # per model in metrics/compare.json, the DVC metric


def run(repo: Path, *args: str, ok: bool = True, columns: int = 200) -> str:
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                            env=repo_env(repo, columns), timeout=900)
    if ok:
        assert result.returncode == 0, \
            f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    else:
        assert result.returncode != 0, f"{' '.join(args)} should have failed"
    return result.stdout + result.stderr


def repo_env(repo: Path, columns: int = 200) -> dict:
    return {**os.environ, "PYTHONPATH": str(repo), "TORCH_HOME": os.environ["TORCH_HOME"],
            "COLUMNS": str(columns), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def back_to_the_commit(repo: Path) -> None:
    """Params, lock and outputs as last committed (large outputs from the DVC cache), so
    the next test starts with nothing to rerun."""
    run(repo, "git", "checkout", "HEAD", "--", ".")
    run(repo, "dvc", "checkout", "--force")


def set_raw(text: str, key: str, raw: str) -> str:
    """Replace the value of ``key`` (dotted) in params.yaml text, keeping the rest."""
    lines, path, depth = text.splitlines(), key.split("."), 0
    for index, line in enumerate(lines):
        if line.strip().startswith(f"{path[depth]}:") and \
                len(line) - len(line.lstrip()) == 2 * depth:
            if depth == len(path) - 1:
                lines[index] = f"{'  ' * depth}{path[depth]}: {raw}"
                return "\n".join(lines) + "\n"
            depth += 1
    raise KeyError(key)


def stored_history(path: Path) -> list[dict]:
    """The per-epoch rows the train stage stored in model file ``path``."""
    return torch.load(path, map_location="cpu", weights_only=True)["history"]


def model_hashes(lock_text: str) -> dict[str, str]:
    """The md5 of each train stage's output, as a dvc.lock text records it."""
    lock = yaml.safe_load(lock_text)
    return {out["path"]: out["md5"] for name in RUNS
            for out in lock["stages"][f"train@{name}"]["outs"]}


def widths(text: str) -> list[int]:
    return [len(line) for line in text.splitlines()]


def assert_exp_show_leads_with_every_headline(repo: Path) -> None:
    """In a terminal, ``dvc exp show`` opens a pager on a table up to 1,024 characters
    wide (DVC collapses what lies beyond into "…"); its first 200 columns, one screen,
    must hold every model's headline, and train.weighted_loss, the first params column,
    must follow right after them."""
    experiments = run(repo, "dvc", "exp", "show", "--no-pager", columns=1024)
    assert max(widths(experiments)) <= 1024, experiments
    header = next(line for line in experiments.splitlines() if "Experiment" in line)
    columns = header.split()
    headline = [f"{code}.{key}" for code in CODES for key in HEADLINE]
    assert columns[2:2 + len(headline)] == headline, header  # after Experiment, Created
    assert columns[2 + len(headline)] == "train.weighted_loss", header
    assert header.index(headline[-1]) + len(headline[-1]) <= 200, header


@dataclass(frozen=True)
class BuiltPipeline:
    folder: Path  # the committed project; copy it, never change it
    torch_home: Path  # the stand-in ImageNet weights its pretrained stages loaded
    outputs: dict[str, str]  # what each building command printed, by command
