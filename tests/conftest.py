"""Shared fixtures: tiny params, a tiny synthetic lab-layout set, stand-in ImageNet weights,
and the tiny pipeline built once per test session.

Every end-to-end module (test_pipeline, test_experiments, test_gpu_box) starts from the
same committed run of the tiny params: ``built_pipeline`` runs ``dvc repro
compute-stats`` and then ``dvc repro`` once per session, in a folder that all
pytest-xdist workers share (the first worker builds it under a file lock, the others
wait for it), and records what those commands printed; each module's ``repo`` is its
own copy of that folder (git and DVC repos, cache and run-cache included), so the
modules run on separate workers without building the pipeline again or touching each
other's state.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from pathlib import Path

# Under pytest-xdist, the cores shared out among the workers: each worker's torch, and
# the dvc stages it starts, use its share of threads, set before torch is imported.
# (Every worker on every core made the suite slower than one process: torch's threads
# spin while they wait for each other.)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _SHARE = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_SHARE))

import numpy as np
import pytest
from filelock import FileLock

from retino.data.downscale import prepare_downscaled
from retino.data.sources import read_source
from retino.data.synthetic import write_dataset
from retino.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from measure import STAND_IN_FILES, scratch_project, stand_in_torch_home  # noqa: E402, F401

from tests.dvc_project import BuiltPipeline, back_to_the_commit, repo_env, run  # noqa: E402


def project_params() -> dict:
    return read_params_file(ROOT / "params.yaml")


def tiny_params() -> dict:
    """The project's params.yaml shrunk so that the whole pipeline runs in seconds."""
    params = copy.deepcopy(project_params())
    params["data"]["image_size"] = 32
    params["synthesize"].update(patients=30, canvas_height=64)
    params["train"].update(epochs_feature_extraction=1, epochs_fine_tuning=1)
    for arch in ("resnet18", "resnet50"):
        params["train"][arch]["batch_size"] = 8
    return params


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """A 30-patient synthetic set of JPEG photos in the lab layout."""
    raw = tmp_path_factory.mktemp("raw")
    write_dataset(raw, patients=30, canvas_height=64, test_fraction=0.3, seed=7, workers=1)
    return raw


@pytest.fixture(scope="session")
def tiny_dataset(tiny_raw, tmp_path_factory) -> Path:
    """``tiny_raw`` downscaled to 32 px: the four CSVs plus train.npy and test.npy."""
    source = read_source("synthetic", tiny_raw, resplit=False, test_fraction=0.3, seed=0)
    small = tmp_path_factory.mktemp("downscaled") / "set"
    prepare_downscaled(source, small, 32, workers=1, on_bad_input="stop")
    return small


WEIGHT_FILES = {arch: files[0] for arch, files in STAND_IN_FILES.items()}


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds seeded random 'ImageNet' ResNet weights.

    They exercise torchvision's real loading path offline; they are not ImageNet.
    """
    return stand_in_torch_home(tmp_path_factory.mktemp("torch_home"))


@pytest.fixture
def torch_home(stand_in_weights, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(stand_in_weights))
    return stand_in_weights


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """An empty TORCH_HOME and a dead proxy, so any download fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    return tmp_path / "empty_torch_home"


def rgb_pixels(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


BUILD_STEPS = {"data stages": ("dvc", "repro", "compute-stats"),
               "full repro": ("dvc", "repro"),
               "second repro": ("dvc", "repro")}


def shared_folder(tmp_path_factory) -> Path:
    """A folder of this test session that every xdist worker sees (each worker's own
    base temporary folder lies in it); without xdist, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def build_pipeline(folder: Path) -> BuiltPipeline:
    torch_home = stand_in_torch_home(folder / "torch_home")
    os.environ["TORCH_HOME"] = str(torch_home)
    project = folder / "project"
    scratch_project(project, tiny_params(), repo_env(project))
    outputs = {step: run(project, *command) for step, command in BUILD_STEPS.items()}
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "baseline")
    (folder / "outputs.json").write_text(json.dumps(outputs))
    return BuiltPipeline(project, torch_home, outputs)


@pytest.fixture(scope="session")
def built_pipeline(tmp_path_factory) -> BuiltPipeline:
    folder = shared_folder(tmp_path_factory) / "built_pipeline"
    with FileLock(str(folder) + ".lock"):
        if (folder / "outputs.json").is_file():
            outputs = json.loads((folder / "outputs.json").read_text())
            return BuiltPipeline(folder / "project", folder / "torch_home", outputs)
        if folder.exists():  # a build that failed half-way: start again
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return build_pipeline(folder)


@pytest.fixture(scope="module")
def repo(built_pipeline, tmp_path_factory) -> Path:
    """This module's own copy of the built, committed pipeline."""
    os.environ["TORCH_HOME"] = str(built_pipeline.torch_home)
    project = tmp_path_factory.mktemp("project") / "project"
    shutil.copytree(built_pipeline.folder, project, symlinks=True)
    shutil.rmtree(project / ".dvc" / "tmp", ignore_errors=True)  # the original's locks
    return project


@pytest.fixture
def from_the_commit(repo):
    """Starts from the committed state and returns to it afterwards."""
    back_to_the_commit(repo)
    yield repo
    back_to_the_commit(repo)
