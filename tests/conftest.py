"""Shared fixtures: tiny params, a tiny synthetic lab-layout set, stand-in ImageNet weights."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision import models as tv_models

from retino.data.downscale import prepare_downscaled
from retino.data.sources import read_source
from retino.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


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


WEIGHT_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds seeded random 'ImageNet' ResNet weights.

    They exercise torchvision's real loading path offline; they are not ImageNet.
    """
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for arch, filename in WEIGHT_FILES.items():
        torch.manual_seed(123)
        torch.save(getattr(tv_models, arch)().state_dict(), folder / filename)
    return home


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
