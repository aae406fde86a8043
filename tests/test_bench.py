"""The benchmark harness itself, on tiny inputs, so that it cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import measure  # noqa: E402
import run as bench  # noqa: E402


def test_both_input_paths_deliver_every_train_image(tmp_path):
    result = bench.loader_speed(tmp_path, size=48, images=24, epochs=1, workers=0)
    assert result["images"] >= 12  # the train split of 12 patients
    assert result["lab_images_per_s"] > 0 and result["retino_images_per_s"] > 0
    assert result["speedup"] == pytest.approx(
        result["retino_images_per_s"] / result["lab_images_per_s"], rel=0.01)


def test_train_step_worker_reports_speed_and_its_own_peak_memory():
    result = bench.train_step_worker("resnet18", "cpu", size=32, batch=2, steps=1)
    assert result["images_per_s"] > 0 and result["field_images_per_s"] > 0
    # the ratio of the unrounded rates, within what rounding each rate to 0.1 allows
    field, flips = result["field_images_per_s"], result["images_per_s"]
    assert (field - 0.05) / (flips + 0.05) - 0.001 <= result["field_relative_rate"] <= \
        (field + 0.05) / (flips - 0.05) + 0.001
    # this test process imported torch: its high-water mark is hundreds of MiB
    assert 100 < result["peak_memory_mib"] == pytest.approx(measure.peak_rss_mib(), abs=1)


def test_targets_are_judged_in_the_right_direction():
    results = {"loader_speedup_512": 4.9, "feature_phase_speedup": 25.0,
               "noop_repro_seconds": 3.5, "train_step": []}
    targets = bench.check_targets(results)
    assert {name: t["met"] for name, t in targets.items()} == {
        "loader_speedup_512": False, "feature_phase_speedup": True, "noop_repro_seconds": False}


def test_run_measured_reports_a_child_peak_not_the_parent_one(tmp_path):
    grow = "b = bytearray(200 * 2**20); import time; time.sleep(0.2)"
    measured = measure.run_measured([sys.executable, "-c", grow], tmp_path)
    assert 200 < measured.largest_process_peak_mib < 260
    small = measure.run_measured([sys.executable, "-c", "import time; time.sleep(0.2)"],
                                 tmp_path)
    assert 0 < small.largest_process_peak_mib < 50  # not this torch-sized test process


BLOCK_PIPELINE_ONLY_PACKAGES = """
import builtins, runpy, sys
real = builtins.__import__
def refuse(name, *args, **kwargs):
    if name.split(".")[0] in ("dvc", "ruamel", "psutil"):
        raise ImportError(f"{name} is not on the GPU machine")
    return real(name, *args, **kwargs)
builtins.__import__ = refuse
sys.argv = ["bench/gpu.py", *sys.argv[1:]]
runpy.run_path("bench/gpu.py", run_name="__main__")
"""


def test_gpu_check_runs_the_pipelines_loop_without_dvc(tmp_path):
    """bench/gpu.py on the CPU at a tiny size, on a Python without dvc, ruamel or psutil,
    as the lent GPU machine is."""
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_PIPELINE_ONLY_PACKAGES, "--device", "cpu", "--archs",
         "resnet18", "--sizes", "32", "64", "--lab-size", "64", "--images", "8", "--batch", "2",
         "--steps", "1", "--epochs", "1", "--lab-images", "8", "--lab-workers", "1",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [(r["arch"], r["size"]) for r in runs] == [("resnet18", 32), ("resnet18", 64)]
    for run in runs:
        assert run["train_step"]["images_per_s"] > 0 and run["fit"]["images_per_s"] > 0
        assert run["field_relative_rate"] == pytest.approx(
            run["train_step_field"]["images_per_s"] / run["train_step"]["images_per_s"],
            abs=0.01)
    field = runs[1]["field_preset_fit"]
    assert field["batch"] == 16 and field["recipe"]["augment"] == "field"
    assert runs[1]["field_stage_minutes"] == pytest.approx(
        25 * 28_100 / field["images_per_s"] / 60, rel=0.02)
    lab = runs[1]["lab_preset_fit"]
    assert "lab_preset_fit" not in runs[0]  # only at --lab-size
    assert (lab["batch"], lab["loader_workers"]) == (4, 1)  # the preset's batch
    assert runs[1]["lab_epoch_minutes"] == {
        "lab_preset": pytest.approx(28_100 / lab["images_per_s"] / 60, rel=0.01),
        "batch_2": pytest.approx(28_100 / runs[1]["fit"]["images_per_s"] / 60, rel=0.01)}


def test_the_dvc_free_pipeline_runs_the_stages_dvc_knows_with_its_commands():
    """bench/gpu_pipeline.py expands dvc.yaml as DVC does: the same stage names in
    the same order, and no ``${...}`` left in a command."""
    import gpu_pipeline
    import yaml

    runs = gpu_pipeline.stage_runs(yaml.safe_load((ROOT / "dvc.yaml").read_text()),
                                   yaml.safe_load((ROOT / "params.yaml").read_text()))
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, text=True,
                            capture_output=True, check=True).stdout.split()
    assert [name for name, _ in runs] == listed
    assert not [command for _, command in runs if "${" in command]
    commands = dict(runs)
    assert "--arch resnet50 --init scratch" in commands["train@resnet50-scratch"]
    assert "models/resnet50-scratch.pt" in commands["train@resnet50-scratch"]


def test_the_dvc_free_pipeline_expands_the_external_stages_as_dvc_does(tmp_path):
    import gpu_pipeline
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["external"]["source"] = ["aptos"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=tmp_path, text=True,
                            capture_output=True, check=True).stdout.split()
    runs = gpu_pipeline.stage_runs(yaml.safe_load((ROOT / "dvc.yaml").read_text()), params)
    assert [name for name, _ in runs] == listed
    assert "downscale-external@aptos" in listed
    command = dict(runs)["evaluate-external@resnet50-scratch-aptos"]
    assert "--external data/external/aptos" in command


def test_the_dvc_free_pipeline_reports_every_stage_as_it_goes_and_stops_at_a_failure(
        tmp_path):
    """Its JSON names the running stage before it ends and, once it has, its seconds,
    exit status and last lines; nothing runs after a failure."""
    import gpu_pipeline

    out = tmp_path / "pipeline.json"
    script = (f"{sys.executable} -c \"import json; "
              f"seen = json.load(open('{out}')); print('running', seen['running'])\"")
    runs = [("first", script), ("second", f"{script} && exit 3"), ("third", "echo never")]
    done = gpu_pipeline.run_all(runs, out, ["compute.device=cuda"], cwd=tmp_path)
    report = json.loads(out.read_text())
    assert [run["stage"] for run in report["stages"]] == ["first", "second"] == \
        [run["stage"] for run in done]
    assert report["stages"][0]["last_lines"] == ["running first"]
    assert report["stages"][1]["returncode"] == 3 and report["running"] is None
    assert report["overrides"] == ["compute.device=cuda"]
    params = {"compute": {"device": "auto"}, "train": {"resnet18": {"lr": 0.001}}}
    changed = gpu_pipeline.with_overrides(params, ["compute.device=cuda",
                                                   "train.resnet18.lr=1e-2"])
    assert changed["compute"]["device"] == "cuda" and params["compute"]["device"] == "auto"
    assert changed["train"]["resnet18"]["lr"] == 0.01  # as DVC reads it (YAML 1.2)
    with pytest.raises(SystemExit, match="--params 'train.lr=0.1': give KEY=VALUE"):
        gpu_pipeline.with_overrides(params, ["train.lr=0.1"])


def test_the_default_run_benchmark_reads_the_train_stages_timing_line():
    import default_run

    from retino.progress import Stopwatch

    watch = Stopwatch()
    for activity in ("training", "scoring test", "training", "stored features"):
        with watch.timing(activity):
            pass
    line = watch.line()
    assert line.startswith("timing (s): training ") and line.count("training") == 1
    parsed = default_run.activity_seconds(f"some output\n{line}\nmore")
    assert list(parsed) == ["training", "scoring test", "stored features"]
    assert default_run.activity_seconds(
        "timing (s): training 101.2, scoring test 8.0, writing 0.4") == {
        "training": 101.2, "scoring test": 8.0, "writing": 0.4}
    assert default_run.activity_seconds("no timing here") == {}


def test_the_default_run_benchmark_says_which_models_beat_the_baseline(tmp_path):
    """A model is above the majority baseline in QWK when its whole interval is above
    0, the QWK of grading every eye alike."""
    import default_run

    (tmp_path / "metrics").mkdir()
    for name, low in (("resnet18-scratch", 0.61), ("resnet50-pretrained", -0.02)):
        report = {"qwk": low + 0.1, "acc": 80.04, "baseline_acc": 74.79,
                  "ci95": {"qwk": [low, low + 0.2], "acc": [75.0, 85.0]}}
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(report))
    (tmp_path / "metrics" / "data_stats.json").write_text("{}")  # not a model
    results = default_run.model_results(tmp_path)
    assert list(results) == ["resnet18-scratch", "resnet50-pretrained"]
    assert results["resnet18-scratch"] == {
        "qwk": 0.71, "qwk_ci95": [0.61, 0.81], "acc": 80.0, "acc_ci95": [75.0, 85.0],
        "baseline_acc": 74.8, "qwk_above_baseline": True}
    assert results["resnet50-pretrained"]["qwk_above_baseline"] is False


def test_the_levers_benchmark_takes_turns_and_reports_each_work():
    import levers

    calls = []
    seconds = levers.interleaved({"a": lambda: calls.append("a"),
                                  "b": lambda: calls.append("b")}, repeats=2, rounds=3)
    assert set(seconds) == {"a", "b"} and all(value >= 0 for value in seconds.values())
    assert calls[:4] == ["a", "a", "b", "b"]  # two warm-up calls each
    assert calls[4:] == ["a", "a", "b", "b"] * 3  # then the rounds, taking turns


QUEUE_STATUS = """Task     Name        Created    Status
5bfa2b8  ablation-2  12:27 AM   Running
7ba97bb  ablation-1  12:27 AM   Success
1c2d3e4  other       12:28 AM   Failed
0a0a0a0  ablation-2  11:02 PM   Success

Worker status: 1 active, 0 idle
"""


def test_the_ablation_reads_its_own_experiments_states_from_dvc_queue_status(monkeypatch):
    import ablation

    monkeypatch.setattr(ablation, "dvc", lambda *args: QUEUE_STATUS)
    assert ablation.queue_states(["ablation-1", "ablation-2", "ablation-3"]) == {
        "ablation-1": "Success", "ablation-2": "Running"}
    monkeypatch.setattr(ablation, "dvc", lambda *args: QUEUE_STATUS.replace("Running", "Failed"))
    with pytest.raises(SystemExit, match="ablation-2 failed"):
        ablation.wait_for(["ablation-1", "ablation-2"])
    # DVC files experiment names under their baseline commit; names repeat across commits
    assert ablation.experiment_ref("987b7751f2", "ablation-1") == \
        "refs/exps/98/7b7751f2/ablation-1"
