"""Shared fixtures: tiny params, a tiny synthetic lab-layout set, stand-in ImageNet weights."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from retino.data.downscale import prepare_downscaled
from retino.data.sources import read_source
from retino.data.synthetic import write_dataset
from retino.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from measure import STAND_IN_FILES, scratch_project, stand_in_torch_home  # noqa: E402, F401


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
