import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from retino.atomic import write_json
from retino.grading import (balanced_accuracy_percent, confusion_counts, macro_f1,
                            quadratic_weighted_kappa, roc_auc, row_normalised)
from retino.lab import evaluate
from retino.report.evaluation import evaluation_report, prediction_rows


def test_kappa_constant_perfect_and_hand_computed():
    actual = np.array([0, 0, 0, 1, 2, 3, 4, 4])
    assert quadratic_weighted_kappa(actual, np.zeros_like(actual)) == 0.0
    assert quadratic_weighted_kappa(actual, actual) == pytest.approx(1.0)
    # 2x2 case by hand: observed [[1,1],[0,2]], weights [[0,1],[1,0]] (num_class=2)
    # expected = outer([2,2],[1,3])/4 = [[.5,1.5],[.5,1.5]] -> kappa = 1 - 1/2 = 0.5
    assert quadratic_weighted_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]),
                                    num_class=2) == pytest.approx(0.5)


def test_five_grade_kappa_worked_out_by_hand():
    # With 2 grades linear and quadratic weights agree, so only a 5-grade case pins the
    # weights. Observed (true rows x predicted columns): (0,0) (0,1) (1,1) (2,4) (3,3)
    # (4,2) (4,4) (2,0). Weighted disagreement, w = (i - j)^2 / 16: (0,1) 1 + (2,4) 4 +
    # (4,2) 4 + (2,0) 4 = 13/16. Rows 2 1 2 1 2, columns 2 2 1 1 2, expected counts
    # row x column / 8: their weighted sum is 37/16. Kappa = 1 - 13/37 = 24/37 = 0.6486
    # (linear weights, |i - j| / 4, give 0.4909).
    actual = np.array([0, 0, 1, 2, 3, 4, 4, 2])
    predicted = np.array([0, 1, 1, 4, 3, 2, 4, 0])
    assert quadratic_weighted_kappa(actual, predicted) == pytest.approx(24 / 37)
    assert round(quadratic_weighted_kappa(actual, predicted), 4) == 0.6486


def test_the_recall_of_a_grade_with_no_image_is_not_measured(tmp_path):
    # failed before: a grade absent from the scored set (external sets without grades
    # 3-4) had recall 0.0, as if every one of its images had been missed
    actual, predicted = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0])
    report = evaluation_report(actual, np.eye(5)[predicted] * 4.0)
    assert report["recall"]["0-none"] == 50.0 and report["recall"]["2-moderate"] == 50.0
    assert np.isnan(report["recall"]["3-severe"]) and np.isnan(report["recall"]["4-proliferative"])
    write_json(tmp_path / "m.json", report)
    written = json.loads((tmp_path / "m.json").read_text())["recall"]
    assert written["3-severe"] is None and written["1-mild"] == 100.0


def test_row_normalised_rows_sum_to_one():
    counts = confusion_counts(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]))
    normalised = row_normalised(counts)
    np.testing.assert_allclose(normalised.sum(axis=1), [1, 1, 1, 0, 0])
    assert normalised[0, 1] == 0.5


def test_roc_auc_ranks_with_ties():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_report_baseline_and_referable():
    actual = np.array([0, 0, 0, 2, 3, 1])
    logits = np.eye(5)[[0, 0, 2, 2, 0, 0]] * 5.0
    report = evaluation_report(actual, logits)
    assert report["acc"] == pytest.approx(50.0)
    assert report["baseline_acc"] == pytest.approx(50.0)
    assert report["ref_sens"] == 50.0  # grade 3 called 0
    assert report["ref_spec"] == 75.0  # one grade 0 called 2
    assert prediction_rows(actual[:1], np.array([2]))[0] == {"actual": "0", "predicted": "2"}


def test_lab_evaluate_signature():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 5))
    inputs, labels = torch.randn(20, 4), torch.randint(0, 5, (20,))
    matrix, acc = evaluate(model, DataLoader(TensorDataset(inputs, labels), batch_size=6),
                           "cpu", 5)
    predicted = model(inputs).argmax(1)
    assert acc == pytest.approx(100 * (predicted == labels).float().mean().item())
    present = np.bincount(labels.numpy(), minlength=5) > 0
    np.testing.assert_allclose(matrix.sum(axis=1)[present], 1.0)
    assert matrix.shape == (5, 5)


def test_balanced_accuracy_and_macro_f1_by_hand():
    actual = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2])
    counts = confusion_counts(actual, predicted)
    # recall 3/4, 1/2, 1/1 over the three grades present -> 75 %
    assert balanced_accuracy_percent(counts) == pytest.approx(75.0)
    # precision 3/4, 1/2, 1/1 too, so F1 = recall per grade; grades 3-4 never occur
    assert macro_f1(counts) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    # a grade predicted but never true occurs, with F1 0
    assert macro_f1(confusion_counts(np.array([0, 0]), np.array([0, 4]))) == pytest.approx(
        (2 * 1.0 * 0.5 / 1.5 + 0.0) / 2)


def test_referable_auc_counts_tied_pairs_half():
    is_referable = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.2])
    # positive-negative pairs: 0.5 beats 0.1 and ties twice (1 + 0.5 + 0.5), 0.9 beats all
    # three (3), 0.2 beats 0.1 only (1): 6 of 9
    assert roc_auc(is_referable, score) == pytest.approx(6 / 9)
    assert np.isnan(roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_undefined_metrics_are_written_as_json_null(tmp_path):
    report = evaluation_report(np.zeros(4, dtype=int), np.eye(5)[[0, 0, 0, 0]] * 3.0)
    assert np.isnan(report["ref_sens"]) and np.isnan(report["ref_auc"])  # no referable case
    write_json(tmp_path / "m.json", report)
    text = (tmp_path / "m.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert strict["ref_sens"] is None and strict["ref_auc"] is None
    assert strict["ref_spec"] == 100.0