"""The field's training recipe: augmentation, learning-rate schedule, optimizers, the
weights' moving average, label smoothing; and that each leaves the lab's default as
it was."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from retino.data.stats import class_weights
from retino.train.augment import (FieldAugmentation, augmented_examples, augmented_pixels,
                                  field_draws, sampling_grid_matrices)
from retino.train.averaging import WeightAverage
from retino.train.fit import fit
from retino.train.inputs import ToModel, epoch_generator, load_train_data
from retino.train.loop import make_criterion
from retino.train.models import build_model
from retino.train.optim import LearningRateSchedule, lr_factor, make_optimizer
from retino.train.recipe import TrainSettings
from tests.test_training import assert_resume_is_exact

CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)
SIZE = 64


def _settings(**changes) -> TrainSettings:
    base = TrainSettings(init="scratch", epochs_feature_extraction=2, epochs_fine_tuning=2,
                         batch_size=8, lr=0.01, momentum=0.9, weight_decay=5e-4,
                         class_weights=None, seed=0)
    return dataclasses.replace(base, **changes)


def _eye(size: int = SIZE, radius: float = 0.45) -> torch.Tensor:
    """A ``1 x 3 x size x size`` uint8 'fundus': a textured disc on black."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    inside = (ys - size / 2) ** 2 + (xs - size / 2) ** 2 <= (radius * size) ** 2
    texture = torch.stack([120 + 60 * torch.sin(xs / 3), 80 + 40 * torch.cos(ys / 4),
                           40 + 20 * torch.sin((xs + ys) / 5)])
    return (texture * inside).round().to(torch.uint8).unsqueeze(0)


def _identity_except(draws, **kept):
    """``draws`` with every change off but the fields named in ``kept``."""
    off = field_draws(len(draws.angle), None)
    return off._replace(**{name: getattr(draws, name) for name in kept})


# --- augmentation --------------------------------------------------------------------

def test_field_augmentation_is_drawn_from_seed_and_epoch_alone():
    batch = _eye().permute(0, 2, 3, 1).expand(6, -1, -1, -1).contiguous()
    augment = FieldAugmentation(ToModel(MEAN, STD, CPU))
    first = augment(batch, epoch_generator(0, 3, 1))
    again = augment(batch, epoch_generator(0, 3, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, augment(batch, epoch_generator(0, 4, 1)))
    assert not torch.equal(first, augment(batch, epoch_generator(1, 3, 1)))
    assert not torch.equal(first[0], first[1])  # each image its own draw


def test_field_augmentation_draws_the_flips_of_the_labs_recipe_first():
    from retino.train.inputs import flip_draws
    field = field_draws(16, epoch_generator(0, 0, 1))
    horizontal, vertical = flip_draws(16, epoch_generator(0, 0, 1))
    assert field.horizontal.tolist() == horizontal and field.vertical.tolist() == vertical


def test_the_black_background_stays_black():
    draws = field_draws(32, epoch_generator(5, 0, 1))
    images = _eye().expand(32, -1, -1, -1)
    out = augmented_pixels(images, draws)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    distance = torch.sqrt((ys - SIZE / 2) ** 2 + (xs - SIZE / 2) ** 2) / SIZE
    # the disc (0.45 of the side) zoomed by at most 1.1 and shifted by 0.05 of the side
    # in x and y reaches 0.57 of the side from the centre; beyond, all is black
    assert (out[:, :, distance > 0.58] == 0).all()
    assert (out[:, :, distance < 0.3] > 0).any()  # the eye itself was not blacked out


def test_rotation_fills_with_black_not_with_edge_pixels():
    bright = torch.full((1, 3, SIZE, SIZE), 200, dtype=torch.uint8)  # no border at all
    draws = _identity_except(field_draws(1, epoch_generator(0, 0, 1)))
    draws = draws._replace(angle=torch.tensor([45.0], dtype=torch.float64))
    out = augmented_pixels(bright, draws)
    assert (out[0, :, 0, 0] == 0).all() and (out[0, :, -1, -1] == 0).all()  # corners
    assert (out[0, :, SIZE // 2, SIZE // 2] == 200).all()  # an unchanged middle


def test_a_rotation_alone_keeps_the_rim_as_bright_as_the_geometry_leaves_it():
    # failed before: the colour step multiplied the resampled rim by the resampled mask
    # again, so a pure 45-degree rotation left the rim about 30 % darker
    images = _eye()
    draws = _identity_except(field_draws(1, epoch_generator(0, 0, 1)))
    draws = draws._replace(angle=torch.tensor([45.0], dtype=torch.float64))
    grid = torch.nn.functional.affine_grid(sampling_grid_matrices(draws).float(),
                                           [1, 3, SIZE, SIZE], align_corners=False)
    geometry = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear",
                                               padding_mode="zeros", align_corners=False)
    out = augmented_pixels(images, draws)
    rim = (geometry > 0).any(dim=1) & (geometry < images.float().amax()).all(dim=1)
    assert rim.sum() > 50  # the blended pixels at the eye's edge are there to compare
    torch.testing.assert_close(out, geometry, atol=1e-3, rtol=0)


def _spot_angle(image: torch.Tensor) -> float:
    """The direction of the bright spot from the centre, counter-clockwise as displayed
    (degrees, 0 = to the right)."""
    weights = image.float().sum(dim=0)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    x = float((weights * xs).sum() / weights.sum()) - SIZE / 2
    y = float((weights * ys).sum() / weights.sum()) - SIZE / 2
    return math.degrees(math.atan2(-y, x)) % 360  # y grows downwards


def test_a_marked_image_turns_by_the_angle_its_draw_reports():
    marked = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)
    marked[0, :, 30:34, 50:54] = 255  # a spot right of the centre: 0 degrees
    draws = field_draws(12, epoch_generator(2, 7, 1))
    turned = augmented_pixels(marked.expand(12, -1, -1, -1), _identity_except(draws, angle=1))
    assert _spot_angle(marked[0]) == pytest.approx(0, abs=1)
    for image, angle in zip(turned, draws.angle.tolist()):
        difference = (_spot_angle(image) - angle + 180) % 360 - 180
        assert abs(difference) < 3, (angle, _spot_angle(image))
    assert draws.angle.min() >= 0 and draws.angle.max() < 360 and draws.angle.std() > 50


def test_a_mirrored_spot_lands_where_the_flip_puts_it():
    marked = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)
    marked[0, :, 8:12, 50:54] = 255  # upper right: about 49 degrees
    identity = field_draws(1, None)
    left_right = augmented_pixels(marked, identity._replace(horizontal=torch.tensor([True])))
    upside_down = augmented_pixels(marked, identity._replace(vertical=torch.tensor([True])))
    angle = _spot_angle(marked[0])
    assert _spot_angle(left_right[0]) == pytest.approx(180 - angle, abs=1)
    assert _spot_angle(upside_down[0]) == pytest.approx(360 - angle, abs=1)


def test_the_colour_changes_follow_their_factors_inside_the_eye():
    eye = _eye()
    identity = field_draws(1, None)
    assert torch.allclose(augmented_pixels(eye, identity), eye.float(), atol=1e-3)
    brighter = augmented_pixels(eye, identity._replace(brightness=torch.tensor([1.1])))
    inside = eye[0].amax(dim=0) > 10
    ratio = brighter[0][:, inside].sum() / eye[0][:, inside].float().sum()
    assert ratio == pytest.approx(1.1, rel=0.01)
    grey = augmented_pixels(eye, identity._replace(saturation=torch.tensor([0.0])))[0]
    assert torch.allclose(grey[0], grey[1], atol=1e-3) and torch.allclose(grey[1], grey[2],
                                                                          atol=1e-3)
    hue = augmented_pixels(eye, identity._replace(hue=torch.tensor([0.02])))[0]
    assert not torch.allclose(hue, eye[0].float(), atol=1)
    assert torch.allclose(hue.sum(dim=0)[inside], eye[0].float().sum(dim=0)[inside], atol=0.5)


def test_the_draws_stay_in_their_ranges():
    draws = field_draws(4000, epoch_generator(0, 0, 1))
    for name, low, high in (("scale", 0.9, 1.1), ("shift_x", -0.05, 0.05),
                            ("brightness", 0.8, 1.2), ("hue", -0.02, 0.02)):
        values = getattr(draws, name)
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high, name


def test_augmented_examples_of_a_photo_differ_and_keep_its_shape():
    pixels = _eye()[0].permute(1, 2, 0).numpy()
    examples = augmented_examples(pixels, 4, seed=0)
    assert len(examples) == 4 and all(e.shape == pixels.shape and e.dtype == np.uint8
                                      for e in examples)
    assert not np.array_equal(examples[0], examples[1])
    assert np.array_equal(examples[2], augmented_examples(pixels, 4, seed=0)[2])


def test_the_field_augmentation_reaches_only_the_image_phases_fit_batches(tiny_dataset):
    from retino.train.phases import feature_extraction_run, image_run
    data = load_train_data(tiny_dataset, MEAN, STD, 0.3, 0)
    settings = _settings(augment="field")
    image = image_run(build_model("resnet18", pretrained=False), data, settings, CPU)
    assert isinstance(image.prepare_fit, FieldAugmentation)
    assert isinstance(image.prepare, ToModel)  # scoring: validation and test
    features = feature_extraction_run(build_model("resnet18", pretrained=False), data,
                                      settings, CPU)
    stored = next(iter(features.fit))[0]
    assert torch.equal(features.prepare_fit(stored, epoch_generator(0, 0, 1)), stored)
    flips = image_run(build_model("resnet18", pretrained=False), data, _settings(), CPU)
    assert isinstance(flips.prepare_fit, ToModel)


# --- learning-rate schedule and optimizers ---------------------------------------------

def test_the_cosine_schedule_hits_its_end_points():
    total, warmup = 100, 10
    assert lr_factor(warmup, total, warmup, "cosine") == 1.0
    assert lr_factor(total, total, warmup, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(55, total, warmup, "cosine") == pytest.approx(0.5)  # halfway
    factors = [lr_factor(step, total, warmup, "cosine") for step in range(total)]
    assert factors[:warmup] == sorted(factors[:warmup]) and factors[0] == pytest.approx(1 / 11)
    assert factors[warmup:] == sorted(factors[warmup:], reverse=True) and factors[-1] > 0
    assert [lr_factor(s, total, 0, "constant") for s in range(total)] == [1.0] * total


def test_the_schedule_sets_every_batch_and_records_the_epochs_mean():
    parameter = nn.Parameter(torch.zeros(1))
    settings = _settings(lr_schedule="cosine", warmup_epochs=1, lr=0.1)
    optimizer = make_optimizer([parameter], settings)
    schedule = LearningRateSchedule(optimizer, settings, epochs=3, batches=4)
    seen = []
    for _ in range(3):
        epoch = []
        for _ in range(4):
            epoch.append(optimizer.param_groups[0]["lr"])
            schedule.step()
        seen.append(epoch)
        assert schedule.epoch_lr() == pytest.approx(sum(epoch) / 4)
    assert seen[0] == pytest.approx([0.02, 0.04, 0.06, 0.08])  # warm-up over 4 batches
    assert seen[1][0] == pytest.approx(0.1) and seen[2][-1] < 0.01
    constant = LearningRateSchedule(make_optimizer([parameter], _settings()), _settings(), 2, 3)
    for _ in range(3):
        constant.step()
    assert constant.epoch_lr() == 0.01 and constant.optimizer.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name, kind, nesterov", [
    ("sgd", torch.optim.SGD, False), ("nesterov", torch.optim.SGD, True),
    ("adamw", torch.optim.AdamW, None)])
def test_each_optimizer_is_built_with_the_runs_lr_and_weight_decay(name, kind, nesterov):
    optimizer = make_optimizer([nn.Parameter(torch.zeros(2))], _settings(optimizer=name))
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, kind) and group["lr"] == 0.01 and group["weight_decay"] == 5e-4
    if nesterov is not None:
        assert group["nesterov"] is nesterov and group["momentum"] == 0.9


# --- moving average and label smoothing ------------------------------------------------

def test_the_moving_average_of_a_constant_model_is_that_model():
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    average = WeightAverage(model, 0.999)
    for _ in range(5):
        average.update(model)
    for name, value in model.state_dict().items():
        assert torch.equal(average.model.state_dict()[name], value), name


def test_the_moving_average_moves_by_its_decay():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    average = WeightAverage(model, 0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # decay min(0.5, 2/11): the early-run warm-up
    assert float(average.model.weight) == pytest.approx(1 - 2 / 11)
    for _ in range(30):
        average.update(model)
    assert float(average.model.weight) == pytest.approx(1.0, abs=1e-8)
    assert average.current_decay() == 0.5


def test_with_ema_the_run_scores_and_keeps_the_average(tiny_dataset, monkeypatch):
    from retino.train import fit as fit_module
    data = load_train_data(tiny_dataset, MEAN, STD, 0.3, 0)
    scored = []
    real_score = fit_module.score
    monkeypatch.setattr(fit_module, "score", lambda model, *rest: (
        scored.append(model), real_score(model, *rest))[1])
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    result = fit(model, data, _settings(ema=0.9, epochs_fine_tuning=1), CPU)
    trained = model.state_dict()
    assert all(candidate is not model for candidate in scored)
    kept = result.best_state["layer1.0.conv1.weight"]
    assert not torch.equal(kept, trained["layer1.0.conv1.weight"])  # not the trained weights


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    logits, grades = torch.tensor([[8.0, 0, 0, 0, 0]]), torch.tensor([0])
    plain = make_criterion(None, CPU)(logits, grades)
    smoothed = make_criterion(None, CPU, label_smoothing=0.1)(logits, grades)
    assert smoothed > plain + 0.5


def test_label_smoothing_parts_add_up_to_the_weighted_mean():
    torch.manual_seed(0)
    logits, grades = torch.randn(7, 5), torch.tensor([0, 1, 2, 3, 4, 0, 2])
    criterion = make_criterion([1.0, 2.0, 3.0, 4.0, 5.0], CPU, label_smoothing=0.2)
    total, denominator = criterion.parts(logits, grades)
    torch.testing.assert_close(total / denominator, criterion(logits, grades))


# EyePACS' train split (the lab's, FACTS): the weights compute-stats writes for it
EYEPACS_TRAIN_COUNTS = np.array([20_655, 1_955, 4_210, 698, 581])
SMOOTHINGS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.95, 0.99)  # train.label_smoothing: [0, 1)


def _loss_optimal_distribution(criterion, grade: int) -> torch.Tensor:
    """The softmax of the logits that minimise ``criterion`` for one image of ``grade``."""
    logits = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits], lr=1.0, max_iter=500, tolerance_grad=1e-12,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = criterion(logits, torch.tensor([grade]))
        loss.backward()
        return loss
    optimizer.step(closure)
    return torch.softmax(logits.detach(), dim=1)[0]


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_weighted_and_smoothed_loss_is_best_at_each_images_own_grade(smoothing):
    # failed before for every e > 0: PyTorch's cross_entropy(weight=w, label_smoothing=e)
    # weighs the smoothing term grade by grade, so a grade-0 photo's best output put
    # P(grade >= 2) at 0.56 (e = 0.1) and made grade 4 its argmax (e = 0.2)
    weights = class_weights(EYEPACS_TRAIN_COUNTS).tolist()
    criterion = make_criterion(weights, CPU, label_smoothing=smoothing)
    criterion.weight = criterion.weight.double()
    for grade in range(5):
        best = _loss_optimal_distribution(criterion, grade)
        assert int(best.argmax()) == grade, (grade, best)
        if smoothing > 0:  # 1 - e on its grade, e / 5 on every grade: uniform smoothing
            target = torch.full((5,), smoothing / 5, dtype=torch.float64)
            target[grade] += 1 - smoothing
            torch.testing.assert_close(best, target, atol=1e-4, rtol=0)


# --- resume ------------------------------------------------------------------------------

def test_resume_with_cosine_ema_and_field_is_still_exact(tiny_dataset, tmp_path):
    data = load_train_data(tiny_dataset, MEAN, STD, 0.3, 0)
    settings = _settings(augment="field", lr_schedule="cosine", warmup_epochs=1, ema=0.9,
                         epochs_feature_extraction=2, epochs_fine_tuning=1)
    whole = assert_resume_is_exact(data, settings, tmp_path, stop_after=2)
    assert len({record.lr for record in whole.history}) == 3  # the schedule moved

