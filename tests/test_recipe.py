"""The field's recipe as params: regression head and its cut-points, paired eyes,
Graham's preprocessing, flip test-time augmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from retino.data.photos import downscale_pixels, graham
from retino.errors import DataError, TrainingDiverged
from retino.grading import (DEFAULT_CUTS, broken_rows, predicted_grades,
                            quadratic_weighted_kappa, referable_score, tune_cuts)
from retino import grading
from retino.report import evaluation
from retino.report.pairing import fit_pair_model, partners, refuse_leaky_split
from retino.train import fit as fit_module
from retino.train.fit import validation_decisions
from retino.train.inputs import ToModel, load_train_data, make_loader
from retino.train.loop import GradeRegressionLoss, make_criterion
from retino.train.models import build_model
from retino.train.recipe import TrainSettings

CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)


def test_tuned_cut_points_beat_halfway_cuts_and_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    actual = rng.choice(5, 300, p=[0.6, 0.1, 0.2, 0.05, 0.05])
    scores = 0.5 * actual + rng.normal(0, 0.25, 300)  # a compressed scale
    cuts = tune_cuts(actual, scores)
    assert list(cuts) == sorted(cuts)
    tuned = quadratic_weighted_kappa(actual, predicted_grades(scores[:, None], cuts))
    halfway = quadratic_weighted_kappa(actual, predicted_grades(scores[:, None]))
    assert tuned > halfway + 0.05
    grid = np.linspace(-0.25, 2.25, 11)  # every ordered choice of 4 cuts on a coarse grid
    best = max(quadratic_weighted_kappa(actual, np.searchsorted(c, scores, side="right"))
               for c in itertools.combinations(grid, 4))
    assert tuned >= best - 1e-9


def test_cut_points_are_tuned_on_validation_never_on_test(tiny_dataset, monkeypatch):
    data = load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    seen = {}
    real = grading.tune_cuts

    def spy(actual, scores):
        seen["actual"] = actual.copy()
        return real(actual, scores)

    monkeypatch.setattr(grading, "tune_cuts", spy)
    torch.manual_seed(0)
    settings = TrainSettings(init="scratch", epochs_feature_extraction=1, epochs_fine_tuning=1,
                             batch_size=8, lr=0.01, momentum=0.9, weight_decay=0,
                             class_weights=None, seed=0, head="regression")
    decisions = validation_decisions(build_model("resnet18", False, outputs=1), data,
                                     settings, CPU)
    assert seen["actual"].tolist() == data.validation.labels.tolist()
    assert decisions["validation"]["names"] == data.validation.names
    assert len(decisions["cuts"]) == 4 and decisions["validation"]["outputs"].shape[1] == 1


def test_regression_loss_weighs_each_image_by_its_grade():
    outputs = torch.tensor([[0.5], [1.0], [3.0], [2.0]])
    grades = torch.tensor([0, 1, 4, 2])
    weights = torch.tensor([0.3, 3.0, 1.2, 8.0, 9.0])
    squared = torch.tensor([0.25, 0.0, 1.0, 0.0])
    w = weights[grades]
    torch.testing.assert_close(GradeRegressionLoss("mse", weights)(outputs, grades),
                               (w * squared).sum() / w.sum())
    torch.testing.assert_close(make_criterion(None, CPU, "regression", "smooth_l1")(
        outputs, grades), torch.tensor([0.125, 0.0, 0.5, 0.0]).mean())
    assert isinstance(make_criterion(None, CPU), nn.CrossEntropyLoss)


def test_a_regression_score_decodes_at_its_cuts_and_ranks_referable_cases():
    scores = np.array([[-0.2], [0.7], [1.6], [2.4], [3.9]])
    assert predicted_grades(scores).tolist() == [0, 1, 2, 2, 4]
    assert predicted_grades(scores, (0.0, 1.0, 2.0, 3.0)).tolist() == [0, 1, 2, 3, 4]
    assert referable_score(scores).tolist() == scores[:, 0].tolist()
    assert DEFAULT_CUTS == (0.5, 1.5, 2.5, 3.5)


def test_pairing_refuses_a_leaky_split_and_pairs_only_eyes_of_one_patient():
    with pytest.raises(DataError, match="evaluate.pair_eyes = true needs a patient-level "
                                        "split, but 79.6 % of the test images"):
        refuse_leaky_split(79.6)
    refuse_leaky_split(0.0)
    names = ["10_left", "11_right", "10_right", "12_left", "11_left"]
    assert partners(names).tolist() == [2, 4, 0, 3, 1]  # 12 has one eye: its own


def test_the_two_eye_model_uses_the_other_eye_when_it_helps():
    """Patients' two eyes share a grade; each eye's own score is noisy: both together
    grade better than one, on new patients."""
    rng = np.random.default_rng(1)

    def patients(count):
        grades = np.repeat(rng.choice(5, count, p=[0.6, 0.1, 0.2, 0.05, 0.05]), 2)
        names = [f"{p}_{eye}" for p in range(count) for eye in ("left", "right")]
        return names, grades, (grades + rng.normal(0, 0.8, 2 * count))[:, None]

    model = fit_pair_model(*patients(300))
    assert model.coefficients[1] > 0.2  # the other eye carries weight
    names, grades, outputs = patients(300)
    alone = quadratic_weighted_kappa(grades, predicted_grades(outputs, tune_cuts(
        grades, outputs[:, 0])))  # even with cuts tuned on the test set itself
    paired = quadratic_weighted_kappa(grades, predicted_grades(model.scores(names, outputs),
                                                               model.cuts))
    assert paired > alone


def test_graham_keeps_the_eye_mid_grey_and_the_rim_black():
    disc = Image.new("RGB", (200, 200))
    ImageDraw.Draw(disc).ellipse((0, 0, 199, 199), fill=(180, 90, 40))
    out = graham(np.asarray(disc))
    centre = out[60:140, 60:140].reshape(-1, 3)
    assert np.abs(centre.mean(axis=0) - 128).max() < 3  # flat colour: no local contrast
    ys, xs = np.mgrid[0:200, 0:200]
    rim = (ys + 0.5 - 100) ** 2 + (xs + 0.5 - 100) ** 2 > (0.9 * 100) ** 2
    assert out[rim].max() == 0 and out[0, 0].tolist() == [0, 0, 0]


def test_graham_is_applied_when_downscaling(tiny_raw):
    photo = next((tiny_raw / "data").glob("*.jpeg"))
    plain, processed = downscale_pixels(photo, 64), downscale_pixels(photo, 64, "graham")
    np.testing.assert_array_equal(processed, graham(plain))


class FlipInvariant(nn.Module):
    """Mean colour -> logits: mirroring an image cannot change it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def forward(self, images):
        return self.fc(images.mean(dim=(2, 3)))


def test_flip_tta_of_a_flip_invariant_model_equals_the_plain_output(tiny_dataset):
    torch.manual_seed(0)
    model = FlipInvariant()
    images = load_train_data(tiny_dataset, MEAN, STD, 0.3, 0).test
    loader, to_model = make_loader(images, 8, False, 0, CPU), ToModel(MEAN, STD, CPU)
    _, plain = evaluation.predict_with_tta(model, loader, CPU, to_model, "none")
    _, flipped = evaluation.predict_with_tta(model, loader, CPU, to_model, "flips")
    # flips averages probabilities (returned as log-probabilities): compare those
    np.testing.assert_allclose(_softmax(flipped), _softmax(plain), atol=1e-6)
    torch.manual_seed(0)
    resnet = build_model("resnet18", False).eval()  # not invariant: TTA changes it
    _, resnet_plain = evaluation.predict_with_tta(resnet, loader, CPU, to_model, "none")
    _, resnet_flipped = evaluation.predict_with_tta(resnet, loader, CPU, to_model, "flips")
    assert not np.allclose(_softmax(resnet_flipped), _softmax(resnet_plain), atol=1e-5)


def _softmax(outputs: np.ndarray) -> np.ndarray:
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_a_diverging_run_stops_with_the_learning_rate_to_lower(tiny_dataset):
    data = load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    torch.manual_seed(0)
    settings = TrainSettings(init="scratch", epochs_feature_extraction=1, epochs_fine_tuning=2,
                             batch_size=8, lr=1e6, momentum=0.9, weight_decay=0,
                             class_weights=None, seed=0, head="regression",
                             regression_loss="mse", lr_key="train.resnet18.lr")
    with pytest.raises(TrainingDiverged, match=r"train\.resnet18\.lr \(now 1e\+06\) or "
                                               r"train\.regression_loss: smooth_l1"):
        fit_module.fit(build_model("resnet18", False, outputs=1), data, settings, CPU)


def test_a_finite_loss_goes_on():
    settings = TrainSettings(init="scratch", epochs_feature_extraction=1, epochs_fine_tuning=1,
                             batch_size=8, lr=0.1, momentum=0.9, weight_decay=0,
                             class_weights=None, seed=0)
    fit_module.stop_if_diverged(1e30, 0, "scratch", settings)
    with pytest.raises(TrainingDiverged, match="became inf in epoch 3 "):
        fit_module.stop_if_diverged(float("inf"), 2, "scratch", settings)


def test_weights_with_nan_outputs_get_no_cut_points_or_operating_points(tiny_dataset, capsys):
    data = load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    model = build_model("resnet18", False, outputs=1)
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    settings = TrainSettings(init="scratch", epochs_feature_extraction=1, epochs_fine_tuning=1,
                             batch_size=8, lr=0.01, momentum=0.9, weight_decay=0,
                             class_weights=None, seed=0, head="regression")
    decisions = validation_decisions(model, data, settings, CPU)
    assert decisions["cuts"] is None and decisions["operating_points"] == {}
    assert "NaN or infinite outputs on" in capsys.readouterr().err
    names = decisions["validation"]["names"]
    with pytest.raises(DataError, match="evaluate.pair_eyes: the model's validation outputs"):
        fit_pair_model(names, np.asarray(decisions["validation"]["grades"]),
                       decisions["validation"]["outputs"].numpy())


def test_flip_averaging_of_finite_logits_is_finite_so_no_model_is_called_broken():
    """A confident model (logits [120, 0, ...]) gives probabilities that underflow to 0:
    their average in log space stays finite; only NaN or infinite passes are broken."""
    confident = np.array([[120.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 130.0, 0.0, -5.0]],
                         dtype=np.float32)
    averaged = evaluation.average_outputs([confident, confident[:, ::-1].copy()])
    assert np.isfinite(averaged).all() and broken_rows(averaged) == 0
    np.testing.assert_allclose(_softmax(averaged).sum(axis=1), 1.0, rtol=1e-6)
    assert averaged.argmax(axis=1).tolist() == [0, 2]
    mild = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(_softmax(evaluation.average_outputs([mild, 2 * mild])),
                               (_softmax(mild) + _softmax(2 * mild)) / 2, atol=1e-6)
    broken = confident.copy()
    broken[1, 3] = np.nan
    assert broken_rows(evaluation.average_outputs([broken, confident])) == 1
