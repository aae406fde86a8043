"""`dvc exp run` on the tiny pipeline: the lab's weighted-loss experiment, models from the
run-cache, the field's recipe end to end, DVC's queue."""

from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from retino.report.revisions import revision_label, runs_at
from tests.dvc_project import (RUNS, assert_exp_show_leads_with_every_headline, stored_history,
                               model_hashes, ran_stages, run)
from tests.readme import commands, fenced_blocks

pytestmark = pytest.mark.slow


def test_weighted_loss_experiment_reruns_training_not_data(repo):
    before = {n: json.loads((repo / "metrics" / f"{n}.json").read_text()) for n in RUNS}
    output = run(repo, "dvc", "exp", "run", "-S", "train.weighted_loss=true")
    stages = ran_stages(output)
    assert {f"train@{r}" for r in RUNS} <= stages and "compare" in stages
    assert not stages & {"synthesize", "downscale-images", "compute-stats", "plots-page"}
    after = {n: json.loads((repo / "metrics" / f"{n}.json").read_text()) for n in RUNS}
    assert all(after[n]["weighted_loss"] is True for n in RUNS)
    assert any(after[n]["confusion_counts"] != before[n]["confusion_counts"] for n in RUNS)
    assert_exp_show_leads_with_every_headline(repo)  # now with an experiment row


def test_the_readmes_daily_commands_run_as_written(repo):
    """The README's "Daily use" block, after the weighted-loss experiment it names (the
    module's first test ran it, exactly as written there)."""
    daily = commands(fenced_blocks("## Daily use", "bash")[0])
    assert daily[:4] == ["dvc repro", "dvc exp run -S train.weighted_loss=true",
                         "dvc metrics show", "dvc plots diff"]
    for line in [daily[0], *daily[2:]]:
        run(repo, *line.split())
    assert (repo / "dvc_plots" / "index.html").is_file()
    assert (repo / "out" / "compare-runs.png").is_file()


def test_one_png_sets_the_weighted_loss_beside_the_unweighted_one(repo):
    """``retino compare-runs``: HEAD (unweighted) against the workspace, which holds the
    weighted-loss experiment just run."""
    output = run(repo, "python", "-m", "retino", "compare-runs")
    assert "wrote out/compare-runs.png" in output
    with Image.open(repo / "out" / "compare-runs.png") as figure:
        assert figure.width > 1500 and figure.height > 900
    labels = [revision_label(r, first) for first in [runs_at_in(repo, "HEAD")]
              for r in (first, runs_at_in(repo, "workspace"))]
    assert labels == ["HEAD", "workspace: train.weighted_loss=true"]
    assert run(repo, "git", "status", "--porcelain", "out").strip() == ""  # git ignores it


def runs_at_in(repo, revision):
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        return runs_at(revision)
    finally:
        os.chdir(cwd)


def test_an_experiment_that_repeats_train_params_gets_its_models_from_the_run_cache(repo):
    """Back from the weighted-loss experiment to the committed params: DVC's run-cache
    restores every train stage (their one output is cached), nothing trains again, and
    evaluate still writes each history from the restored model file."""
    output = run(repo, "dvc", "exp", "run", "-S", "train.weighted_loss=false")
    stages = ran_stages(output)
    assert not {s for s in stages if s.startswith("train@")}, output
    for name in RUNS:
        assert f"Stage 'train@{name}' is cached - skipping run" in output, output
    assert {f"evaluate@{r}" for r in RUNS} | {"compare"} <= stages
    assert model_hashes((repo / "dvc.lock").read_text()) == \
        model_hashes(run(repo, "git", "show", "HEAD:dvc.lock"))
    for name in RUNS:
        rows = (repo / "plots" / "history" / f"{name}.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,phase,train_loss,acc_train,acc_test,val_qwk")
        assert len(rows) == 1 + len(stored_history(repo / "models" / f"{name}.pt"))
    # the same models give the committed histories and metrics, byte for byte (the model
    # cards differ: they name the git revision they were written at)
    assert run(repo, "git", "diff", "--stat", "HEAD", "--", "plots/history",
               "metrics/*.json").strip() == ""


RECIPE_RUNS = ("resnet18-scratch", "resnet50-pretrained")  # both archs, both inits


def test_the_fields_recipe_runs_end_to_end_through_dvc(from_the_commit, tmp_path):
    repo = from_the_commit
    output = run(repo, "dvc", "exp", "run", "-S", "train.head=regression",
                 "-S", "evaluate.tta=flips", "-S", "evaluate.pair_eyes=true",
                 "-S", "data.preprocess=graham", *(f"evaluate@{r}" for r in RECIPE_RUNS))
    assert "downscale-images" in ran_stages(output)
    stats = json.loads((repo / "metrics" / "data_stats.json").read_text())
    assert stats["preprocess"] == "graham"
    for name in RECIPE_RUNS:
        report = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert report["head"] == "regression" and report["tta"] == "flips"
        assert len(report["cuts"]) == 4 and report["cuts"] == sorted(report["cuts"])
        paired = report["paired_eyes"]
        assert {"acc", "qwk", "bacc", "ref_sens", "ref_spec", "ref_auc", "ci95"} <= set(paired)
    photos = sorted((repo / "data" / "synthetic" / "data").glob("*.jpeg"))[:3]
    run(repo, "python", "-m", "retino", "predict", "--model", "models/resnet18-scratch.pt",
        *map(str, photos), "--out", str(tmp_path / "p.csv"), "--device", "cpu")
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["file", "grade", "score"] and "p_grade_0" not in header


def test_queued_experiments_run_one_after_another(repo):
    run(repo, "dvc", "exp", "run", "--queue", "-S", "evaluate.batch_size=8",
        "evaluate@resnet18-scratch")
    run(repo, "dvc", "queue", "start", "-j", "1")
    deadline, status = time.monotonic() + 600, ""
    while time.monotonic() < deadline:
        status = run(repo, "dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Success" in status and "Failed" not in status, status
    experiments = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    params = [rev["data"]["params"]["params.yaml"]["data"]["evaluate"]["batch_size"]
              for commit in experiments for exp in commit.get("experiments") or []
              for rev in exp["revs"]]
    assert 8 in params


def test_a_bad_value_set_with_s_says_that_params_yaml_now_holds_it_and_how_to_undo(repo):
    output = run(repo, "dvc", "exp", "run", "-S", "train.weighted_loss=yes", ok=False)
    said = " ".join(output.split())
    assert "train.weighted_loss = 'yes': must be true or false" in said
    assert "params.yaml now holds it: put the committed file back with `git checkout " \
        "params.yaml`" in said
    assert "weighted_loss: yes" in (repo / "params.yaml").read_text()  # DVC left it there
    run(repo, "git", "checkout", "params.yaml")
    assert "weighted_loss: false" in (repo / "params.yaml").read_text()
    run(repo, "dvc", "exp", "run", "-S", "evaluate.batch_size=16", "check-params")
