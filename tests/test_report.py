"""The report's statistics and documents: bootstrap intervals over patients, referable
operating points chosen on validation, the gallery's choice of photos, the model card,
metrics/compare.json, the history CSV from the model file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retino.errors import DataError
from retino.grading import at_threshold, operating_points, referable_probability
from retino.report.card import model_card
from retino.report.comparison import (ModelResult, compared_metrics, leakage_warning,
                                      summary_rows)
from retino.report.evaluation import (headline_metrics, history_csv, patient_bootstrap,
                                      patient_resamples)
from retino.report.gallery import chosen_photos


def _test_split(patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two eyes per patient; a model right about 80 % of the time."""
    rng = np.random.default_rng(seed)
    actual = np.repeat(rng.choice(5, size=patients, p=[0.6, 0.1, 0.2, 0.05, 0.05]), 2)
    predicted = np.where(rng.random(2 * patients) < 0.8, actual, rng.integers(0, 5, 2 * patients))
    logits = np.eye(5)[predicted] * 4.0 + rng.normal(0, 0.5, size=(2 * patients, 5))
    names = [f"{p}_{eye}" for p in range(patients) for eye in ("left", "right")]
    return actual, logits, names


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_patients():
    small, large = _test_split(60), _test_split(600)
    intervals = {n: patient_bootstrap(*split, resamples=300)
                 for n, split in (("small", small), ("large", large))}
    point = headline_metrics(small[0], small[1].argmax(1), referable_probability(small[1]))
    for key, (low, high) in intervals["small"].items():
        assert low <= point[key] <= high, key
        large_low, large_high = intervals["large"][key]
        assert large_high - large_low < high - low, key
    again = patient_bootstrap(*small, resamples=300)
    assert again == intervals["small"]  # seeded: reruns identical


def test_bootstrap_resamples_patients_not_images():
    """Each resample draws patients and brings both eyes of each, never one eye alone."""
    names = [f"{p}_{eye}" for p in range(40) for eye in ("left", "right")]
    for chosen in patient_resamples(names, resamples=50, seed=3):
        assert len(chosen) == 80
        patients = np.array([names[i].split("_")[0] for i in chosen])
        eyes = np.array([names[i].split("_")[1] for i in chosen])
        for patient in np.unique(patients):
            drawn = eyes[patients == patient]
            assert (drawn == "left").sum() == (drawn == "right").sum() >= 1
    draws = [tuple(sorted(c)) for c in patient_resamples(names, 5, seed=3)]
    assert len(set(draws)) == 5  # resamples differ


def test_operating_points_meet_their_targets_on_the_set_they_were_chosen_on():
    rng = np.random.default_rng(1)
    truth = rng.random(400) < 0.25
    score = np.clip(truth * 0.35 + rng.random(400) * 0.65, 0, 1)
    points = operating_points(truth, score)
    sensitive, specific = points["high_sensitivity"], points["high_specificity"]
    assert sensitive.sensitivity >= 97.5 and specific.specificity >= 98.0
    assert sensitive.threshold < specific.threshold
    # the highest threshold that still reaches the target: one step up would miss it
    above = np.unique(score)[np.unique(score) > sensitive.threshold].min()
    assert at_threshold(truth, score, above)[0] < 97.5
    assert operating_points(np.zeros(5, dtype=bool), np.arange(5.0)) == {}


def test_gallery_chooses_the_first_right_and_wrong_photos_of_each_grade():
    actual = np.array([0, 0, 0, 1, 0, 2, 0, 1, 1])
    predicted = np.array([0, 1, 0, 1, 0, 0, 2, 0, 1])
    assert chosen_photos(actual, predicted) == [[0, 2, 1, 6], [3, 8, 7], [5], [], []]


def _result(name: str = "resnet18-pretrained", leakage: float = 0.0) -> ModelResult:
    report = {"acc": 90.76, "qwk": 0.8923, "bacc": 62.1, "ref_sens": 95.9, "ref_spec": 98.9,
              "ref_auc": 0.981, "baseline_acc": 74.8, "test_images": 238,
              "ci95": {"acc": [86.1, 94.5], "qwk": [0.84, 0.93], "bacc": [50.2, 70.0],
                       "ref_sens": [88.0, 100.0], "ref_spec": [97.1, 100.0],
                       "ref_auc": [0.95, 0.99]},
              "operating_points": {"high_sensitivity": {
                  "threshold": 0.12, "sensitivity": 95.0, "specificity": 90.0,
                  "validation_sensitivity": 97.5, "validation_specificity": 91.0}},
              "chosen_epoch": 6, "chosen_phase": "fine_tuning", "weighted_loss": False,
              "test_patient_leakage_percent": leakage,
              "confusion_counts": [[170, 5, 3, 0, 0], [6, 10, 2, 0, 0], [2, 1, 30, 1, 0],
                                   [0, 0, 1, 4, 1], [0, 0, 0, 0, 2]],
              "recall": {"0-none": 95.5, "1-mild": 55.6, "2-moderate": 88.2, "3-severe": 66.7,
                         "4-proliferative": 100.0}}
    history = pd.DataFrame({"epoch": [1, 2], "acc_test": [80.0, 91.2]})
    return ModelResult(name, report, history)


def test_summary_rows_give_intervals_with_one_precision_per_column():
    row = summary_rows([_result()])[0]
    assert row[1:6] == ["90.8 [86.1, 94.5]", "0.892 [0.840, 0.930]", "62.1 [50.2, 70.0]",
                        "95.9 [88.0, 100.0]", "98.9 [97.1, 100.0]"]
    assert row[7] == "91.2 (epoch 2)"


def test_compare_json_holds_each_models_qwk_with_its_interval_and_accuracy_rounded():
    broken = _result("resnet50-scratch")
    broken.report.update(qwk=float("nan"))
    broken.report["ci95"]["qwk"] = [None, None]
    single = compared_metrics([_result(), broken])
    assert single == {"r18p": {"qwk": 0.892, "qwk_ci": "[0.840, 0.930]", "acc": 90.8},
                      "r50s": {"qwk": None, "qwk_ci": None, "acc": 90.8}}
    assert list(single["r18p"]) == ["qwk", "qwk_ci", "acc"]  # the interval beside its figure


def test_compare_json_carries_the_two_eye_figures_only_when_eyes_are_paired():
    paired = _result()
    paired.report["paired_eyes"] = {"qwk": 0.9104, "acc": 92.04,
                                    "ci95": {"qwk": [0.87, 0.95], "acc": [88.0, 95.1]}}
    both = compared_metrics([paired, _result("resnet50-scratch")])
    assert list(both["r18p"]) == ["qwk", "qwk_ci", "acc", "qwk_paired", "qwk_paired_ci",
                                  "acc_paired"]  # single-eye first
    assert both["r18p"]["qwk"] == 0.892 and both["r18p"]["qwk_paired"] == 0.91
    assert both["r18p"]["qwk_paired_ci"] == "[0.870, 0.950]"
    assert both["r18p"]["acc_paired"] == 92.0
    assert list(both["r50s"]) == ["qwk", "qwk_ci", "acc"]


def test_model_card_says_where_the_model_came_from_and_what_it_is_not():
    stats = {"image_size": 96, "test_patient_leakage_percent": 0.0,
             "class_counts": {s: {f"{g}-x": 10 * (g + 1) for g in range(5)}
                              for s in ("train", "test")}}
    lock = {"stages": {
        "downscale-images": {"params": {"params.yaml": {"data": {"source": "synthetic",
                                                                 "resplit": False}}}},
        "train@resnet18-pretrained": {
            "params": {"params.yaml": {"train.weighted_loss": False,
                                       "train.resnet18": {"lr": 0.001, "batch_size": 16}}},
            "deps": [{"path": "data/downscaled", "md5": "abc123.dir"},
                     {"path": "metrics/data_stats.json", "md5": "def456"}],
            "outs": [{"path": "models/resnet18-pretrained.pt", "md5": "0a1b2c"}]},
        "evaluate@resnet18-pretrained": {"deps": []}}}
    card = model_card(_result(), stats, lock, "1234abc + uncommitted changes")
    for expected in ("# Model card: resnet18-pretrained", "**synthetic**",
                     "not a medical device", "Source: `synthetic` at 96 px",
                     "`train.resnet18.lr`: `0.001`", "git `1234abc + uncommitted changes`",
                     "md5 `abc123.dir`", "md5 `0a1b2c`", "| accuracy | 90.8 % [86.1, 94.5] |",
                     "| high sensitivity | 0.1200 | 97.5 / 91.0 % | 95.0 / 90.0 % |",
                     "| test | 10 | 20 | 30 | 40 | 50 | 150 |", "(a patient-level split)",
                     "| true \\ predicted | 0 none | 1 mild | 2 moderate | 3 severe | "
                     "4 proliferative | images | recall |",
                     "| 1 mild | 6 (0.33) | 10 (0.56) | 2 (0.11) | 0 (0.00) | 0 (0.00) | 18 | "
                     "55.6 % |"):
        assert expected.lower() in card.lower(), expected


@pytest.mark.parametrize("source, facts", [
    ("lab", "one reading (label noise)"), ("kaggle", "about 18.5 % of them were judged "
                                                    "ungradable"),
    ("aptos", "one hospital in India (Aravind Eye Hospital"),
    ("messidor2", "Messidor-2 photographs from France"),
    ("idrid", "IDRiD photographs from one eye clinic in India (516 photos"),
    ("folders", "an ImageFolder tree of unknown origin")])
def test_a_model_card_names_the_data_it_describes(source, facts):
    # failed before: every real source got EyePACS' limits (one reading, 18.5 % ungradable)
    stats = {"image_size": 96, "test_patient_leakage_percent": None,
             "class_counts": {s: {f"{g}-x": 10 for g in range(5)} for s in ("train", "test")}}
    lock = {"stages": {"downscale-images": {"params": {"params.yaml": {"data": {
        "source": source, "resplit": False}}}}}}
    limits = model_card(_result(), stats, lock, "abc").split("## Data")[0]
    assert facts in limits and "Not a medical device" in limits
    if source not in ("lab", "kaggle"):
        assert "EyePACS" not in limits and "18.5 %" not in limits


def test_the_card_says_that_the_sets_own_val_split_chose_the_epoch():
    stats = {"image_size": 96, "test_patient_leakage_percent": None, "val_images": 12,
             "class_counts": {s: {f"{g}-x": 10 for g in range(5)}
                              for s in ("train", "val", "test")}}
    card = model_card(_result(), stats, {}, "abc")
    assert "the set's own val split (12 images) chose its epoch" in card
    assert "| val | 10 | 10 | 10 | 10 | 10 | 50 |" in card


def test_a_leaky_split_is_said_in_words_and_a_patient_level_one_is_not():
    warning = leakage_warning([_result(leakage=79.6)])
    assert "79.6 % of the test images have the other eye of their patient in train" in warning
    assert "optimistic" in warning and "data.resplit: true" in warning
    assert leakage_warning([_result(leakage=0.0)]) is None


def test_the_history_csv_comes_from_the_model_file_and_an_old_file_names_its_stage():
    rows = [{"epoch": 1, "phase": "scratch", "train_loss": 1.234567, "acc_train": 50.0,
             "acc_test": 74.78992, "val_qwk": 0.1, "val_acc": 70.0, "lr": 0.001},
            {"epoch": 2, "phase": "scratch", "train_loss": 1.0, "acc_train": 51.0,
             "acc_test": 75.0, "val_qwk": 0.2, "val_acc": 71.0, "lr": 1.234567e-05}]
    text = history_csv({"history": rows}, "models/resnet18-scratch.pt")
    # the lab's columns first, as before the lr column; a cosine schedule's small rates
    # keep their digits
    assert text.splitlines() == [
        "epoch,phase,train_loss,acc_train,acc_test,val_qwk,val_acc,lr",
        "1,scratch,1.2346,50.0000,74.7899,0.1000,70.0000,0.001",
        "2,scratch,1.0000,51.0000,75.0000,0.2000,71.0000,1.23457e-05"]
    with pytest.raises(DataError, match=r"resnet18-scratch.pt: holds no per-epoch history.*"
                                        r"dvc repro -f train@resnet18-scratch"):
        history_csv({"state_dict": {}}, "models/resnet18-scratch.pt")


def test_the_high_specificity_fallback_lies_above_every_score_whatever_their_scale():
    """No threshold among the scores reaches 98 % specificity (10 % of the negatives tie
    at the top score, as a regression score above 2 can): the point calls nothing
    referable, so its specificity is 100 %, never the 90 % of the top score itself."""
    truth = np.array([True] * 10 + [False] * 90)
    score = np.concatenate([np.full(10, 3.7), np.full(9, 3.7), np.linspace(0.0, 3.0, 81)])
    point = operating_points(truth, score)["high_specificity"]
    assert point.threshold > score.max()
    assert point.specificity == 100.0 and point.sensitivity == 0.0


def test_a_regression_models_card_describes_its_head_loss_and_referable_score():
    result = _result("resnet50-scratch")
    result.report.update(head="regression", regression_loss="smooth_l1", weighted_loss=True,
                         cuts=[0.61, 1.4, 2.55, 3.3])
    card = model_card(result, {"image_size": 96, "test_patient_leakage_percent": 0.0,
                               "class_counts": {s: {f"{g}-x": 1 for g in range(5)}
                                                for s in ("train", "test")}}, {}, "abc")
    for expected in ("one-output regression head", "cut-points between grades: 0.610, "
                     "1.400, 2.550, 3.300", "loss: class-weighted smooth l1 loss on the grade",
                     "thresholds on the regression score (grade scale)"):
        assert expected in card.lower(), expected
    for wrong in ("5-way", "cross-entropy", "p(grade >= 2)"):
        assert wrong not in card.lower(), wrong
    classifier = model_card(_result(), {"image_size": 96, "test_patient_leakage_percent": 0.0,
                                        "class_counts": {s: {f"{g}-x": 1 for g in range(5)}
                                                         for s in ("train", "test")}}, {}, "abc")
    assert "5-way classification head" in classifier and "unweighted cross-entropy" in classifier
    assert "thresholds on P(grade >= 2)" in classifier
