"""bench/gpu_check.py's CPU dry run: every section of the GPU box check, tiny, on a Python
that cannot import dvc or psutil (as the lent machine), so the script cannot rot
between leases. A module of its own: pytest-xdist runs it beside the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.dvc_project import RUNS

pytestmark = pytest.mark.slow

WITHOUT_DVC = """
import builtins, runpy, sys
real = builtins.__import__
def refuse(name, *args, **kwargs):
    if name.split(".")[0] in ("dvc", "psutil"):
        raise ImportError(f"{name} is not on the GPU machine")
    return real(name, *args, **kwargs)
builtins.__import__ = refuse
sys.argv = ["bench/gpu_check.py", *sys.argv[1:]]
runpy.run_path("bench/gpu_check.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "gpu_check.json"
    result = subprocess.run([sys.executable, "-c", WITHOUT_DVC, "--cpu-dry-run", "--out",
                             str(out), "--workdir", str(folder / "work")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_stage_runs_in_both_recipes(dry_run):
    assert dry_run["running"] is None and list(dry_run["sections"]) == [
        "pipeline", "pipeline_field", "predict", "agreement", "syncs", "fit_rates",
        "determinism", "compile_field"]
    for name in ("pipeline", "pipeline_field"):
        section = dry_run["sections"][name]
        assert section["returncode"] == 0, section.get("error")
        assert all(stage["returncode"] == 0 for stage in section["stages"])
    stages = [stage["stage"] for stage in dry_run["sections"]["pipeline"]["stages"]]
    assert stages[:4] == ["check-params", "synthesize", "downscale-images", "compute-stats"]
    assert {f"evaluate@{run}" for run in RUNS[:2]} <= set(stages)  # ResNet-18, both inits
    field_stages = [stage["stage"] for stage in dry_run["sections"]["pipeline_field"]["stages"]]
    assert field_stages[-2:] == ["train@resnet18-scratch", "evaluate@resnet18-scratch"]
    field = dry_run["sections"]["pipeline_field"]["overrides"]
    assert {"train.head=regression", "train.augment=field", "train.ema=0.99"} <= set(field)


def test_predict_agreement_and_determinism_report_their_figures(dry_run):
    sections = dry_run["sections"]
    assert sections["predict"]["cpu"]["returncode"] == 0
    assert sections["predict"]["cpu"]["explained"] == len(sections["predict"]["cpu"]["grades"])
    assert sections["agreement"]["test_images"] > 0 and "qwk_cpu" in sections["agreement"]
    assert sections["agreement"]["tf32"]["skipped"].startswith("needs CUDA")
    assert sections["syncs"]["skipped"].startswith("needs CUDA")
    assert sections["determinism"]["deterministic_false"]["identical_weights"]  # the CPU
    rates = sections["fit_rates"]
    assert rates["batch_2"]["images_per_s"] > 0 and rates["batch_4"]["images_per_s"] > 0
    assert sections["compile_field"]["field_relative_rate"] > 0
    assert sections["compile_field"]["compiled"]["skipped"].startswith("needs CUDA")
