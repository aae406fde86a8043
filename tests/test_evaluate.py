"""The evaluate stage on model files made here: decisions fitted on validation outputs
made as the test outputs are (test-time augmentation), the gallery explaining the grade
it shows, and a model that learned nothing saying so everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from retino.grading import (fit_decisions, learned_nothing, learned_nothing_text,
                            quadratic_weighted_kappa)
from retino.report import evaluation
from retino.report.card import model_card
from retino.report.comparison import ModelResult, print_summary
from retino.report.gallery import explained_maps
from retino.report.gradcam import grad_cam
from retino.train.checkpoints import save_checkpoint
from retino.train.fit import training_verdict, validation_decisions
from retino.train.inputs import ImageArray, ToModel, load_train_data, make_loader
from retino.train.models import build_model
from retino.train.recipe import TrainSettings
from tests.conftest import ROOT, tiny_params

CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)
SETTINGS = TrainSettings(init="scratch", epochs_feature_extraction=1, epochs_fine_tuning=1,
                         batch_size=8, lr=0.01, momentum=0.9, weight_decay=0,
                         class_weights=None, seed=0)


def _model_file(folder: Path, model: torch.nn.Module, dataset: Path) -> Path:
    """``model`` saved as the train stage saves a run, its validation outputs inside."""
    data = load_train_data(dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    decisions = validation_decisions(model.eval(), data, SETTINGS, CPU)
    path = folder / "resnet18-scratch.pt"
    save_checkpoint(path, model.state_dict(), arch="resnet18", init="scratch", num_class=5,
                    head="classification", outputs=5, epoch=1, phase="scratch",
                    image_size=32, preprocess="none", mean=list(MEAN), std=list(STD),
                    weighted_loss=False, params={}, history=[{"epoch": 1, "acc_test": 70.0}],
                    **decisions)
    return path


def _constant_model() -> torch.nn.Module:
    """A ResNet-18 that grades every image 0, whatever it sees."""
    model = build_model("resnet18", pretrained=False)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0]))
    return model


def _evaluate(folder: Path, model_file: Path, dataset: Path, tta: str = "none") -> tuple:
    """Run stages/evaluate.py as DVC would, in ``folder`` with tiny params."""
    params = tiny_params()
    params["evaluate"]["tta"] = tta
    params["compute"]["device"] = "cpu"
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outputs = {option: folder / name for option, name in (
        ("--history-out", "history.csv"), ("--metrics-out", "metrics.json"),
        ("--predictions-out", "predictions.json"), ("--figure-out", "confusion.png"),
        ("--gallery-out", "gallery.png"))}
    command = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--arch", "resnet18",
               "--init", "scratch", "--data", str(dataset), "--model", str(model_file),
               *(str(part) for pair in outputs.items() for part in pair)]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(outputs["--metrics-out"].read_text()), result.stdout + result.stderr


def test_with_flip_tta_every_decision_is_fitted_on_flip_averaged_validation_outputs(
        tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()  # not flip-invariant
    model_file = _model_file(tmp_path, model, tiny_dataset)
    report, _ = _evaluate(tmp_path, model_file, tiny_dataset, tta="flips")
    stored = torch.load(model_file, weights_only=True)
    held_out = ImageArray.from_split(tiny_dataset, "train")
    rows = [held_out.names.index(name) for name in stored["validation"]["names"]]
    to_model = ToModel(MEAN, STD, CPU)
    grades, averaged = evaluation.predict_with_tta(
        model, make_loader(held_out.subset(rows), 64, False, 0, CPU), CPU, to_model, "flips")
    expected = fit_decisions(grades, averaged).operating_points
    for name, point in report["operating_points"].items():
        assert point["threshold"] == pytest.approx(expected[name].threshold, abs=1e-6)
        assert point["validation_sensitivity"] == pytest.approx(expected[name].sensitivity)
        assert point["validation_specificity"] == pytest.approx(expected[name].specificity)
    single = stored["operating_points"]  # what train chose on single-pass outputs
    assert any(abs(single[n]["threshold"] - report["operating_points"][n]["threshold"]) > 1e-6
               for n in single)


def test_without_tta_evaluate_applies_the_decisions_train_stored(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model_file = _model_file(tmp_path, build_model("resnet18", pretrained=False),
                             tiny_dataset)
    report, _ = _evaluate(tmp_path, model_file, tiny_dataset)
    stored = torch.load(model_file, weights_only=True)["operating_points"]
    for name, point in report["operating_points"].items():
        assert point["threshold"] == stored[name]["threshold"]
        assert point["validation_sensitivity"] == stored[name]["sensitivity"]


def test_the_gallery_explains_the_grade_it_shows(tiny_dataset):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    images = ImageArray.from_split(tiny_dataset, "test")
    pixels = np.stack([images[i][0].numpy() for i in range(4)])
    to_model = ToModel(MEAN, STD, CPU)
    inputs = to_model(torch.from_numpy(pixels)).clone()
    maps, outputs = grad_cam(model, inputs)
    shown = (outputs.argmax(dim=1).numpy() + 1) % 5  # a grade other than the argmax
    explained = explained_maps(model, to_model, pixels, shown)
    np.testing.assert_allclose(explained, grad_cam(model, inputs, torch.from_numpy(shown))[0],
                               atol=1e-6)
    assert not np.allclose(explained, maps, atol=1e-3)


def test_a_model_that_predicts_a_constant_says_it_learned_nothing_everywhere(
        tiny_dataset, tmp_path, capsys):
    model_file = _model_file(tmp_path, _constant_model(), tiny_dataset)
    decisions = {key: value for key, value in torch.load(model_file, weights_only=True).items()
                 if key in ("cuts", "validation")}
    assert "learned nothing: it predicts grade 0 (none) almost always" in training_verdict(
        "resnet18-scratch", decisions)
    report, printed = _evaluate(tmp_path, model_file, tiny_dataset)
    assert report["learned_nothing"]["grade"] == 0
    assert report["learned_nothing"]["share"] == 100.0
    assert "resnet18-scratch learned nothing: it predicts grade 0 (none) almost always" in \
        " ".join(printed.split())
    assert "train.weighted_loss: true" in printed
    assert "ImageNet weights (the pretrained runs)" in printed  # a scratch run
    pretrained = learned_nothing_text("resnet50-pretrained", learned_nothing(
        np.zeros(10, int), 0.0))
    assert "make sure its weights are ImageNet's" in pretrained
    result = ModelResult("resnet18-scratch", report,
                         pd.DataFrame({"epoch": [1], "acc_test": [70.0]}))
    card = model_card(result, {"image_size": 32, "test_patient_leakage_percent": 0.0,
                               "class_counts": {s: {f"{g}-x": 1 for g in range(5)}
                                                for s in ("train", "test")}}, {}, "abc")
    assert "**Warning: resnet18-scratch learned nothing: it predicts grade 0 (none) almost " \
        "always" in card
    capsys.readouterr()
    print_summary([result])  # compare's table and `retino summary`
    assert "resnet18-scratch learned nothing: it predicts grade 0 (none) almost always" in \
        " ".join(capsys.readouterr().err.split())  # rich writes to stderr


def test_a_model_that_learned_gets_no_verdict():
    grades = np.arange(100) % 5
    assert learned_nothing(grades, 0.41) is None
    flat = learned_nothing(grades, -0.02)  # varied grades, but no agreement beyond chance
    assert flat is not None and "its QWK is not above 0 (-0.020)" in learned_nothing_text(
        "m", flat)


def test_a_model_whose_qwk_interval_lies_above_0_never_learned_nothing():
    # failed before: 95 % or more of the predictions in one grade was a verdict whatever
    # the QWK, so a model with QWK 0.985 on a set 97.5 % grade 0 had learned "nothing"
    actual = np.r_[np.zeros(195, int), [1, 2, 3, 4, 4]]
    predicted = actual.copy()
    predicted[-1] = 3
    qwk = quadratic_weighted_kappa(actual, predicted)
    assert qwk > 0.98 and learned_nothing(predicted, qwk) is None
    assert learned_nothing(np.r_[np.zeros(96, int), [1, 2, 3, 4]], 0.2) is None


def test_the_verdict_says_what_was_observed():
    # failed before: a verdict on the QWK alone still said "always predicting grade X"
    # and "its accuracy is then the share of that grade" of predictions spread over all
    spread = learned_nothing(np.arange(100) % 5, -0.01)
    text = learned_nothing_text("resnet18-scratch", spread)
    assert "no better than chance" in text and "its QWK is not above 0 (-0.010)" in text
    assert "always" not in text and "share of that grade" not in text
    assert "train.weighted_loss: true" in text  # a remedy the run has not tried
    weighted = learned_nothing_text("resnet18-scratch", spread, weighted_loss=True)
    assert "train.weighted_loss" not in weighted and "train.head: regression" in weighted
    constant = learned_nothing_text("m", learned_nothing(np.zeros(40, int), 0.0))
    assert "it predicts grade 0 (none) almost always (100.0 % of its validation " \
        "predictions)" in constant and "share of that grade" in constant


def test_an_undefined_qwk_is_no_better_than_chance():
    # a NaN QWK (no interval: undefined in most resamples) is not above 0
    verdict = learned_nothing(np.arange(10) % 5, float("nan"))
    assert verdict is not None and "not above 0 (undefined)" in learned_nothing_text(
        "m", verdict)
