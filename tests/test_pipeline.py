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

from retino.params import read_params_file
from tests.conftest import scratch_project, tiny_params

pytestmark = pytest.mark.slow
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


@pytest.fixture(scope="module")
def repo(tmp_path_factory, stand_in_weights) -> Path:
    os.environ["TORCH_HOME"] = str(stand_in_weights)
    repo = tmp_path_factory.mktemp("project")
    return scratch_project(repo, tiny_params(), repo_env(repo))


def test_repro_compute_stats_runs_only_the_data_stages(repo):
    output = run(repo, "dvc", "repro", "compute-stats")
    assert ran_stages(output) == {"check-params", "synthesize", "downscale-images",
                                  "compute-stats"}
    stats = json.loads((repo / "metrics" / "data_stats.json").read_text())
    assert stats["train_images"] + stats["test_images"] == 60
    assert sum(stats["class_counts"]["train"].values()) == stats["train_images"]


def test_full_repro_then_nothing_to_do(repo):
    output = run(repo, "dvc", "repro")
    assert {f"train@{r}" for r in RUNS} | {f"evaluate@{r}" for r in RUNS} \
        | {"compare", "plots-page"} == ran_stages(output)
    for name in RUNS:
        assert (repo / "models" / f"{name}.pt").is_file()
        assert (repo / "plots" / "confusion" / f"{name}.png").is_file()
    assert ran_stages(run(repo, "dvc", "repro")) == set()
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")


def _widths(text: str) -> list[int]:
    return [len(line) for line in text.splitlines()]


def assert_exp_show_leads_with_every_headline(repo: Path) -> None:
    """In a terminal, ``dvc exp show`` opens a pager on a table up to 1,024 characters
    wide (DVC collapses what lies beyond into "…"); its first 200 columns, one screen,
    must hold every model's headline, and train.weighted_loss, the first params column,
    must follow right after them."""
    experiments = run(repo, "dvc", "exp", "show", "--no-pager", columns=1024)
    assert max(_widths(experiments)) <= 1024, experiments
    header = next(line for line in experiments.splitlines() if "Experiment" in line)
    columns = header.split()
    headline = [f"{code}.{key}" for code in CODES for key in HEADLINE]
    assert columns[2:2 + len(headline)] == headline, header  # after Experiment, Created
    assert columns[2 + len(headline)] == "train.weighted_loss", header
    assert header.index(headline[-1]) + len(headline[-1]) <= 200, header


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
    assert max(_widths(table)) <= 200, table
    assert_exp_show_leads_with_every_headline(repo)
    exp_json = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    workspace = exp_json[0]["rev"] == "workspace" and exp_json[0]["data"]["metrics"]
    assert workspace["metrics/compare.json"]["data"].keys() == set(CODES)


def test_summary_reprints_the_table_without_rerunning(repo):
    output = run(repo, "python", "-m", "retino", "summary")
    for name in RUNS:
        assert name in output
    assert "majority baseline" in output and "QWK" in output


def changed_stages_after(repo: Path, key: str, value: str) -> set[str]:
    """The stages `dvc status` calls changed once ``key`` is set to ``value`` (the
    params file is restored afterwards)."""
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(_set_raw(original, key, value))
    try:
        status = run(repo, "dvc", "status")
    finally:
        params_file.write_text(original)
    return {line.rstrip(":").strip() for line in status.splitlines()
            if line and not line.startswith("\t") and line.rstrip().endswith(":")}


def test_resnet50_param_marks_only_resnet50_training(repo):
    assert changed_stages_after(repo, "train.resnet50.lr", "0.005") == {
        "check-params", "train@resnet50-pretrained", "train@resnet50-scratch"}


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


def _history(path: Path) -> list[dict]:
    """The per-epoch rows the train stage stored in model file ``path``."""
    return torch.load(path, map_location="cpu", weights_only=True)["history"]


def _model_hashes(lock_text: str) -> dict[str, str]:
    """The md5 of each train stage's output, as a dvc.lock text records it."""
    lock = yaml.safe_load(lock_text)
    return {out["path"]: out["md5"] for name in RUNS
            for out in lock["stages"][f"train@{name}"]["outs"]}


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
    assert _model_hashes((repo / "dvc.lock").read_text()) == \
        _model_hashes(run(repo, "git", "show", "HEAD:dvc.lock"))
    for name in RUNS:
        rows = (repo / "plots" / "history" / f"{name}.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,phase,train_loss,acc_train,acc_test,val_qwk")
        assert len(rows) == 1 + len(_history(repo / "models" / f"{name}.pt"))
    # the same models give the committed histories and metrics, byte for byte (the model
    # cards differ: they name the git revision they were written at)
    assert run(repo, "git", "diff", "--stat", "HEAD", "--", "plots/history",
               "metrics/*.json").strip() == ""


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
                  "resnet50-scratch, test split", "resnet18.png"):
        assert title in html
    charts = html.count("vegaEmbed('#")
    assert charts == 7  # three learning curves, four confusion matrices
    dom = rendered_dom(page, tmp_path / "profile")
    drawn = dom.count('class="marks"')  # the canvas or svg vega-embed draws into
    assert drawn == charts, f"{drawn} of {charts} charts drew"


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
    found = re.search(r"resuming after epoch (\d+)", output)
    assert found, output
    return int(found.group(1))


@pytest.fixture
def from_the_commit(repo):
    """Starts from the committed state and returns to it afterwards."""
    back_to_the_commit(repo)
    yield repo
    back_to_the_commit(repo)


def test_interrupted_training_resumes_and_ends_as_if_never_stopped(from_the_commit):
    repo = from_the_commit
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["epochs_fine_tuning"] = 4  # scratch: 5 epochs, time to interrupt
    params["compute"]["loader_workers"] = 2  # persistent DataLoader workers: still exact
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    stage, name = "train@resnet18-scratch", "resnet18-scratch"
    run(repo, "dvc", "repro", stage)
    history = _history(repo / "models" / f"{name}.pt")
    weights = _weights(repo / "models" / f"{name}.pt")
    resume_file = repo / "models" / f"{name}.resume.pt"
    assert not resume_file.exists()  # removed once the stage has finished

    output = _interrupt(repo, stage, resume_file, signal.SIGINT)  # Ctrl-C
    assert resume_file.is_file(), output
    assert not (repo / "models" / f"{name}.pt").exists()
    first = _resumed_after(_interrupt(repo, stage, resume_file, signal.SIGKILL))  # killed
    # As if the uninterrupted run above had never finished: the committed lock, and no
    # run-cache (it holds that run, and DVC would restore its model). DVC then sees by
    # itself that the stage must run.
    run(repo, "git", "checkout", "HEAD", "--", "dvc.lock")
    output = run(repo, "dvc", "repro", "--no-run-cache", stage)
    assert 1 <= first < _resumed_after(output) < 5
    assert ran_stages(output) == {"check-params", stage}  # params.yaml differs from the lock
    assert _history(repo / "models" / f"{name}.pt") == history
    resumed = _weights(repo / "models" / f"{name}.pt")
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[key], weights[key]) for key in weights)
    assert not resume_file.exists()


def test_a_train_stage_on_two_cpu_processes_ends_like_one(from_the_commit):
    """train.gpus: 2 with compute.device: cpu runs two gloo processes under torchrun;
    process 0 alone writes the same outputs, with a history of the same length. On 40
    fit images, BatchNorm over each process's half batch and per-process flips move
    the numbers: the tolerance is loose (final train loss within 2x, last test
    accuracy within 40 points), the layout is exact."""
    repo = from_the_commit
    params_file, stage, name = repo / "params.yaml", "train@resnet18-scratch", "resnet18-scratch"
    original = params_file.read_text()
    one_process = _set_raw(_set_raw(original, "compute.loader_workers", "0"),
                           "compute.device", "cpu")
    params_file.write_text(one_process)
    try:
        run(repo, "dvc", "repro", stage)
        alone = _history(repo / "models" / f"{name}.pt")
        params_file.write_text(_set_raw(one_process, "train.gpus", "2"))
        output = run(repo, "dvc", "repro", stage)
        together = _history(repo / "models" / f"{name}.pt")
    finally:
        params_file.write_text(original)
    assert ran_stages(output) == {"check-params", stage}
    assert output.count(" done in ") == 1  # process 0 alone reports
    assert len(together) == len(alone) and together[0].keys() == alone[0].keys()
    last = {"one": alone[-1], "two": together[-1]}
    assert 0.5 < last["two"]["train_loss"] / last["one"]["train_loss"] < 2
    assert abs(last["two"]["acc_test"] - last["one"]["acc_test"]) <= 40
    checkpoint = torch.load(repo / "models" / f"{name}.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert not (repo / "models" / f"{name}.resume.pt").exists()

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
    assert ran_stages(output) == {"check-params"}
    assert _model_files(repo) == before  # every model file still there, untouched
    params_file.write_text(original)
    assert ran_stages(run(repo, "dvc", "repro")) == set()


TRICKY = {"train.resnet18.lr": "1e-3", "train.momentum": ".5", "train.weighted_loss": "yes",
          "train.resnet18.batch_size": "0x10", "train.resnet50.weights_file": "~"}


def _set_raw(text: str, key: str, raw: str) -> str:
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


def test_stages_and_dvc_read_tricky_params_values_alike(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    text = original
    for key, raw in TRICKY.items():
        text = _set_raw(text, key, raw)
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
])
def test_each_recipe_param_reruns_only_the_stages_that_read_it(repo, key, value, stages):
    run(repo, "dvc", "repro")  # up to date first
    assert changed_stages_after(repo, key, value) == {"check-params", *stages}


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


def commit_and_push(clone: Path, message: str) -> None:
    """What a user does after a run: commit the small files, push the large ones."""
    run(clone, "git", "add", "-A")
    run(clone, "git", "commit", "-qm", message)
    run(clone, "dvc", "push")


def _branch(repo: Path) -> str:
    return run(repo, "git", "rev-parse", "--abbrev-ref", "HEAD").strip()


def test_results_travel_between_a_laptop_and_a_gpu_box_through_a_dvc_remote(repo, tmp_path):
    """README "On a GPU box": the laptop pushes what it built; the box pulls, has nothing
    to rerun, changes a param, reruns only its stages and pushes; the laptop pulls and
    sees the box's metrics without rerunning anything."""
    laptop, box = repo, tmp_path / "box"
    run(laptop, "dvc", "repro")
    run(laptop, "dvc", "remote", "add", "-d", "store", str(tmp_path / "store"))
    commit_and_push(laptop, "results and remote")
    run(tmp_path, "git", "clone", "-q", str(laptop), str(box))
    run(box, "dvc", "pull")
    assert "up to date" in run(box, "dvc", "status")
    assert ran_stages(run(box, "dvc", "repro")) == set()
    params = box / "params.yaml"
    params.write_text(_set_raw(params.read_text(), "train.resnet18.lr", "0.002"))
    output = run(box, "dvc", "repro")
    assert ran_stages(output) == {"check-params", "train@resnet18-pretrained",
                                  "train@resnet18-scratch", "evaluate@resnet18-pretrained",
                                  "evaluate@resnet18-scratch", "compare"}
    commit_and_push(box, "box: resnet18 lr 0.002")
    run(laptop, "git", "pull", "-q", str(box), _branch(box))
    run(laptop, "dvc", "pull")
    assert "up to date" in run(laptop, "dvc", "status")
    shown = {clone: json.loads(run(clone, "dvc", "metrics", "show", "--json"))
             for clone in (laptop, box)}
    assert shown[laptop] == shown[box]
    assert (laptop / "models" / "resnet18-scratch.pt").read_bytes() == \
        (box / "models" / "resnet18-scratch.pt").read_bytes()


def test_a_box_pulls_and_trains_what_a_laptop_that_trained_nothing_pushed(repo, tmp_path):
    """README "On a GPU box" when the laptop ran only the cheap data stages, in a clone
    whose dvc.lock still names the models of an earlier run (as a clone of retino's
    repository does): no remote holds those, so a plain `dvc pull` fails on them; the
    README's `dvc pull --allow-missing` fetches what the laptop pushed, and the box
    trains without rerunning a data stage."""
    if run(repo, "git", "status", "--porcelain").strip() or \
            not (repo / "dvc.lock").is_file():  # alone: build and commit a full run first
        run(repo, "dvc", "repro")
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", "full run")
    laptop, box = tmp_path / "laptop", tmp_path / "box"
    run(tmp_path, "git", "clone", "-q", str(repo), str(laptop))  # no DVC cache, full lock
    params = laptop / "params.yaml"
    # another size than 2015: git's stat check misses a same-size edit made in the
    # second of the clone once dvc has refreshed the index
    params.write_text(_set_raw(params.read_text(), "synthesize.seed", "7"))
    run(laptop, "dvc", "repro", "compute-stats")
    run(laptop, "dvc", "remote", "add", "-d", "-f", "store", str(tmp_path / "store"))
    run(laptop, "git", "add", "-A")
    run(laptop, "git", "commit", "-qm", "new data, not trained")
    run(laptop, "dvc", "push")
    run(tmp_path, "git", "clone", "-q", str(laptop), str(box))
    failed = run(box, "dvc", "pull", ok=False)
    assert "models/resnet50-scratch.pt" in failed, failed
    run(box, "dvc", "pull", "--allow-missing")
    assert (box / "data" / "downscaled" / "train.npy").read_bytes() == \
        (laptop / "data" / "downscaled" / "train.npy").read_bytes()
    output = run(box, "dvc", "repro", "train@resnet18-scratch")
    assert ran_stages(output) == {"train@resnet18-scratch"}, output


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
