"""The real dvc CLI on the real dvc.yaml, in a temporary git repo, on tiny params: the first
repro, what `dvc metrics/exp/plots` show, and which params rerun which stages."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from retino.params import read_params_file
from tests.dvc_project import (CODES, HEADLINE, RUNS, assert_exp_show_leads_with_every_headline,
                               ran_stages, repo_env, run, set_raw, widths)

pytestmark = pytest.mark.slow


def test_repro_compute_stats_runs_only_the_data_stages(built_pipeline, repo):
    """The session's first command on the fresh project (conftest's ``built_pipeline``)."""
    output = built_pipeline.outputs["data stages"]
    assert ran_stages(output) == {"check-params", "synthesize", "downscale-images",
                                  "compute-stats"}
    stats = json.loads((repo / "metrics" / "data_stats.json").read_text())
    assert stats["train_images"] + stats["test_images"] == 60
    assert sum(stats["class_counts"]["train"].values()) == stats["train_images"]


def test_full_repro_then_nothing_to_do(built_pipeline, repo):
    """The session's full ``dvc repro`` after the data stages, then nothing to do: in the
    built project, and again in this module's copy of it."""
    assert {f"train@{r}" for r in RUNS} | {f"evaluate@{r}" for r in RUNS} \
        | {"compare", "plots-page"} == ran_stages(built_pipeline.outputs["full repro"])
    for name in RUNS:
        assert (repo / "models" / f"{name}.pt").is_file()
        assert (repo / "plots" / "confusion" / f"{name}.png").is_file()
    assert ran_stages(built_pipeline.outputs["second repro"]) == set()
    assert ran_stages(run(repo, "dvc", "repro")) == set()
    assert run(repo, "git", "status", "--porcelain").strip() == ""  # all of it committed


def test_metrics_show_and_exp_show_lead_with_every_models_headline(repo):
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json"))
    metrics = shown[""]["data"]
    assert list(metrics) == ["metrics/compare.json"]  # data stats and details are not metrics
    headline = metrics["metrics/compare.json"]["data"]
    assert list(headline) == list(CODES)
    for code in CODES:
        assert list(headline[code]) == list(HEADLINE), headline
        assert re.fullmatch(r"\[-?\d\.\d{3}, -?\d\.\d{3}\]", headline[code]["qwk_ci"])
    table = run(repo, "dvc", "metrics", "show")
    assert max(widths(table)) <= 200, table
    assert_exp_show_leads_with_every_headline(repo)
    exp_json = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    workspace = exp_json[0]["rev"] == "workspace" and exp_json[0]["data"]["metrics"]
    assert workspace["metrics/compare.json"]["data"].keys() == set(CODES)


def test_summary_reprints_the_table_without_rerunning(repo):
    result = subprocess.run(["python", "-m", "retino", "summary"], cwd=repo, text=True,
                            capture_output=True, env=repo_env(repo))
    for name in RUNS:  # on standard output: `retino summary > table.txt` keeps it
        assert name in result.stdout
    assert "majority baseline" in result.stdout and "QWK" in result.stdout
    markdown = run(repo, "python", "-m", "retino", "summary", "--format", "markdown")
    assert markdown == (repo / "metrics" / "summary.md").read_text()  # compare wrote it
    assert "| model | acc % | QWK |" in markdown and "| resnet18-pretrained | " in markdown
    rows = list(csv.DictReader(io.StringIO(run(repo, "python", "-m", "retino", "summary",
                                               "--format", "csv"))))
    assert [row["model"] for row in rows] == list(RUNS) and rows[0]["set"] == "test split"
    report = json.loads((repo / "metrics" / f"{RUNS[0]}.json").read_text())
    assert float(rows[0]["qwk"]) == pytest.approx(report["qwk"], abs=1e-4)
    assert float(rows[0]["qwk_low"]) == pytest.approx(report["ci95"]["qwk"][0], abs=1e-4)


def changed_stages_after(repo: Path, key: str, value: str) -> set[str]:
    """The stages `dvc status` calls changed once ``key`` is set to ``value`` (the
    params file is restored afterwards)."""
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(set_raw(original, key, value))
    try:
        status = run(repo, "dvc", "status")
    finally:
        params_file.write_text(original)
    return {line.rstrip(":").strip() for line in status.splitlines()
            if line and not line.startswith("\t") and line.rstrip().endswith(":")}


def test_resnet50_param_marks_only_resnet50_training(repo):
    assert changed_stages_after(repo, "train.resnet50.lr", "0.005") == {
        "check-params", "train@resnet50-pretrained", "train@resnet50-scratch"}


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM after headless Chromium ran its scripts, with no network."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it): apt-get install chromium")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-quic", f"--user-data-dir={profile}",
               "--virtual-time-budget=30000", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_plots_diff_draws_every_chart_offline(repo, tmp_path):
    run(repo, "dvc", "plots", "diff", "HEAD")
    page = repo / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html
    assert "cdn.jsdelivr" not in html and "<script src" not in html  # nothing fetched
    for title in ("test accuracy per epoch", "validation QWK per epoch",
                  "training loss per epoch", "learning rate per epoch",
                  "resnet50-scratch, test split", "resnet18.png"):
        assert title in html
    charts = html.count("vegaEmbed('#")
    assert charts == 9  # five learning curves, four confusion matrices
    dom = rendered_dom(page, tmp_path / "profile")
    drawn = dom.count('class="marks"')  # the canvas or svg vega-embed draws into
    assert drawn == charts, f"{drawn} of {charts} charts drew"


def _model_files(repo: Path) -> dict[str, bytes]:
    return {name: (repo / "models" / f"{name}.pt").read_bytes() for name in RUNS}


def test_a_params_typo_stops_repro_before_any_output_is_deleted(repo):
    params_file = repo / "params.yaml"
    run(repo, "dvc", "repro")  # everything up to date first
    before = _model_files(repo)
    original = params_file.read_text()
    params_file.write_text(original.replace("lr: 0.001", "lr: -0.001", 1))
    output = run(repo, "dvc", "repro", ok=False)
    assert "train.resnet18.lr = -0.001: must be a number > 0 and <= 10" in output
    assert "params.yaml now holds it: put the committed file back with `git checkout " \
        "params.yaml`" in " ".join(output.split())
    assert ran_stages(output) == {"check-params"}
    assert _model_files(repo) == before  # every model file still there, untouched
    params_file.write_text(original)
    assert ran_stages(run(repo, "dvc", "repro")) == set()


TRICKY = {"train.resnet18.lr": "1e-3", "train.momentum": ".5", "train.weighted_loss": "yes",
          "train.resnet18.batch_size": "0x10", "train.resnet50.weights_file": "~"}


def test_stages_and_dvc_read_tricky_params_values_alike(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    text = original
    for key, raw in TRICKY.items():
        text = set_raw(text, key, raw)
    params_file.write_text(text)
    try:
        diff = json.loads(run(repo, "dvc", "params", "diff", "--all", "--json"))["params.yaml"]
        ours = read_params_file(params_file)
    finally:
        params_file.write_text(original)
    for key in TRICKY:
        value = ours
        for part in key.split("."):
            value = value[part]
        assert diff[key]["new"] == value and type(diff[key]["new"]) is type(value), key
    assert diff["train.resnet18.lr"]["new"] == 0.001 and diff["train.weighted_loss"]["new"] == "yes"
    assert diff["train.resnet18.batch_size"]["new"] == 16
    assert diff["train.resnet50.weights_file"]["new"] is None


@pytest.mark.parametrize("key, value, stages", [
    ("train.head", "regression", {f"train@{r}" for r in RUNS}),
    ("train.regression_loss", "mse", {f"train@{r}" for r in RUNS}),
    ("evaluate.tta", "flips", {f"evaluate@{r}" for r in RUNS}),
    ("evaluate.pair_eyes", "true", {f"evaluate@{r}" for r in RUNS}),
    ("data.preprocess", "graham", {"downscale-images", "compute-stats"}),  # recorded in stats
    ("train.augment", "field", {f"train@{r}" for r in RUNS}),
    ("train.lr_schedule", "cosine", {f"train@{r}" for r in RUNS}),
    ("train.warmup_epochs", "1", {f"train@{r}" for r in RUNS}),
    ("train.optimizer", "adamw", {f"train@{r}" for r in RUNS}),
    ("train.ema", "0.999", {f"train@{r}" for r in RUNS}),
    ("train.label_smoothing", "0.1", {f"train@{r}" for r in RUNS}),
])
def test_each_recipe_param_reruns_only_the_stages_that_read_it(repo, key, value, stages):
    run(repo, "dvc", "repro")  # up to date first
    assert changed_stages_after(repo, key, value) == {"check-params", *stages}


def test_the_lab_preset_resolves_through_dvc_with_overrides(repo):
    """`dvc exp run $(retino preset lab)`, with tiny overrides for this CPU: DVC applies
    the options (later ones win) and records them; queued here, not run."""
    preset = run(repo, "python", "-m", "retino", "preset", "lab").split()
    overrides = ["-S", "data.source=synthetic", "-S", "data.image_size=32",
                 "-S", "compute.device=cpu", "-S", "compute.loader_workers=0"]
    run(repo, "dvc", "exp", "run", "--queue", "--name", "lab-preset", *preset, *overrides)
    try:
        experiments = json.loads(run(repo, "dvc", "exp", "show", "--json"))
        queued = next(rev for commit in experiments for exp in commit.get("experiments") or []
                      for rev in exp["revs"] if rev.get("name") == "lab-preset")
        params = queued["data"]["params"]["params.yaml"]["data"]
    finally:
        run(repo, "dvc", "queue", "remove", "--queued")
    assert params["train"]["epochs_feature_extraction"] == 4
    assert params["train"]["epochs_fine_tuning"] == 6
    assert params["train"]["resnet50"]["batch_size"] == 4
    assert params["compute"]["loader_workers"] == 0 and params["compute"]["device"] == "cpu"
    assert params["data"]["image_size"] == 32 and params["data"]["source"] == "synthetic"


def test_a_public_set_downscales_through_dvc_with_its_leakage_unknown(repo):
    """`data.source: aptos` on an APTOS-layout folder, through the real dvc: split here
    per image, the leakage unknown (null), said by the stage; then back to the default."""
    from tests import public_sets

    public_sets.write_aptos(repo / "data" / "aptos", count=40)
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(set_raw(original, "data.source", "aptos"))
    try:
        output = run(repo, "dvc", "repro", "compute-stats")
        stats = json.loads((repo / "metrics" / "data_stats.json").read_text())
    finally:
        params_file.write_text(original)
    assert "aptos (data/aptos): 30 train and 10 test images" in output
    assert "split made here per image" in output and "patients unknown" in output
    assert stats["test_patient_leakage_percent"] is None
    assert stats["train_images"] + stats["test_images"] == 40
    assert (repo / "metrics" / "skipped_inputs.csv").read_text() == "file,row,problem\n"
    run(repo, "dvc", "repro", "compute-stats")  # the default set again
    assert json.loads((repo / "metrics" / "data_stats.json").read_text())[
        "test_patient_leakage_percent"] is not None
