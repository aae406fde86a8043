import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from retino.grading import (confusion_counts, quadratic_weighted_kappa, roc_auc,
                            row_normalised)
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
    assert report["accuracy"] == pytest.approx(50.0)
    assert report["majority_baseline_accuracy"] == pytest.approx(50.0)
    assert report["referable"]["sensitivity"] == 0.5  # grade 3 called 0
    assert report["referable"]["specificity"] == 0.75  # one grade 0 called 2
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
