"""The summary over all trained models that the compare stage writes and prints."""

from __future__ import annotations

import pandas as pd

from retino.train.recipe import PHASE_FEATURES


def feature_phase_epochs(history: pd.DataFrame) -> int:
    """How many leading epochs of a history were feature extraction."""
    return int((history["phase"] == PHASE_FEATURES).sum())


def model_summary(history: pd.DataFrame, report: dict) -> dict:
    """One row of ``metrics/compare.json``.

    ``best_test_accuracy_optimistic`` is the best test accuracy over all epochs, as
    the lab's peers report it: choosing an epoch on the test set flatters the model.
    The honest figure is ``accuracy`` at the epoch chosen on validation.
    """
    best = history.loc[history["acc_test"].idxmax()]
    return {
        "accuracy": report["accuracy"],
        "chosen_epoch": report["chosen_epoch"],
        "best_test_accuracy_optimistic": float(best["acc_test"]),
        "best_test_epoch": int(best["epoch"]),
        "quadratic_weighted_kappa": report["quadratic_weighted_kappa"],
        "referable_sensitivity": report["referable"]["sensitivity"],
        "referable_specificity": report["referable"]["specificity"],
        "weighted_loss": bool(report["weighted_loss"]),
    }


SUMMARY_COLUMNS = ("model", "accuracy %", "chosen epoch", "best test % (optimistic)",
                   "kappa", "ref. sens.", "ref. spec.", "weighted loss")


def summary_rows(models: dict[str, dict]) -> list[list]:
    return [[name, m["accuracy"], m["chosen_epoch"],
             f"{m['best_test_accuracy_optimistic']:.1f} (ep {m['best_test_epoch']})",
             m["quadratic_weighted_kappa"], m["referable_sensitivity"],
             m["referable_specificity"], "on" if m["weighted_loss"] else "off"]
            for name, m in models.items()]
