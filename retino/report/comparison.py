"""The comparison over all four models: what compare writes, prints and draws, and what
``python -m retino summary`` reprints from the files alone.

``metrics/compare.json`` is the one DVC metrics file. Per model, under its compact code
(``r18p``), it holds test QWK, its 95 % interval as text and test accuracy, rounded as
the summary table prints them (``r18p.qwk``, ``r18p.qwk_ci``, ``r18p.acc``): twelve
columns, which is what ``dvc metrics show`` fits in 200 columns (an accuracy interval per
model would not) and what leads ``dvc exp show``. With ``evaluate.pair_eyes`` on, each
model's two-eye figures follow its own (``r18p.qwk_paired`` ...). Every other figure of
a model, every interval among them, is in ``metrics/<arch>-<init>.json`` and in the
summary table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retino.grading import LearnedNothing, learned_nothing_text
from retino.params import ARCHS, INITS, run_code, run_name
from retino.progress import console, print_table

# the figures of each model in metrics/compare.json, in the order DVC lists its columns,
# with their digits (those of the summary table)
COMPARED_DIGITS = {"qwk": 3, "acc": 1}
COMPARED_INTERVAL = "qwk"  # its 95 % interval, as text: "[0.766, 0.877]"


@dataclass(frozen=True)
class ModelResult:
    """One trained model: its test report and its per-epoch history."""

    name: str  # <arch>-<init>
    report: dict
    history: pd.DataFrame


def read_results(metrics_dir: Path, history_dir: Path) -> list[ModelResult]:
    """The four models' reports and histories; a missing one says which stage makes it."""
    results = []
    for arch in ARCHS:
        for init in INITS:
            name = run_name(arch, init)
            report_file, history_file = metrics_dir / f"{name}.json", history_dir / f"{name}.csv"
            for path in (report_file, history_file):
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: not found; run `dvc repro evaluate@{name}`")
            results.append(ModelResult(name, json.loads(report_file.read_text()),
                                       pd.read_csv(history_file)))
    return results


def compared_metrics(results: list[ModelResult]) -> dict:
    """The content of ``metrics/compare.json``: per model code, its QWK, the QWK's 95 %
    interval and its accuracy; with ``evaluate.pair_eyes`` on, the same three of the
    two-eye grading after them (``qwk_paired``, ``qwk_paired_ci``, ``acc_paired``)."""
    compared = {}
    for result in results:
        figures = compared_figures(result.report)
        if "paired_eyes" in result.report:
            figures |= compared_figures(result.report["paired_eyes"], suffix="_paired")
        compared[run_code(*result.name.split("-"))] = figures
    return compared


def compared_figures(report: dict, suffix: str = "") -> dict:
    """``qwk``, ``qwk_ci`` and ``acc`` of one report (each name followed by ``suffix``),
    rounded as the summary prints them; None where undefined (JSON null)."""
    figures = {}
    for key, digits in COMPARED_DIGITS.items():
        value = report[key]
        figures[f"{key}{suffix}"] = (None if value is None or math.isnan(value)
                                     else round(value, digits))
        if key == COMPARED_INTERVAL:
            figures[f"{key}{suffix}_ci"] = interval_text(report, key, digits)
    return figures


SUMMARY_COLUMNS = ("model", "acc %", "QWK", "bal. acc. %", "ref. sens. %", "ref. spec. %",
                   "chosen epoch", "best test acc % (optimistic)", "weighted loss")


def number_text(value: float | None, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def interval_text(report: dict, key: str, digits: int) -> str | None:
    """``[86.1, 94.5]``: the 95 % interval of ``report[key]``; None when there is none."""
    low, high = report.get("ci95", {}).get(key) or (None, None)
    if low is None or math.isnan(low):
        return None
    return f"[{number_text(low, digits)}, {number_text(high, digits)}]"


def with_interval(report: dict, key: str, digits: int, unit: str = "") -> str:
    """``90.8 [86.1, 94.5]``: the figure and its 95 % interval (when there is one)."""
    interval = interval_text(report, key, digits)
    return f"{number_text(report[key], digits)}{unit}{f' {interval}' if interval else ''}"


def summary_rows(results: list[ModelResult]) -> list[list[str]]:
    """One row per model, each column with one precision, intervals in brackets.
    ``best test acc`` is the best test accuracy over all epochs, as the lab's peers
    report it (choosing an epoch on the test set flatters the model); the honest
    figure is ``acc`` at the epoch chosen on validation."""
    rows = []
    for result in results:
        r, best = result.report, result.history.loc[result.history["acc_test"].idxmax()]
        rows.append([result.name, with_interval(r, "acc", 1), with_interval(r, "qwk", 3),
                     with_interval(r, "bacc", 1), with_interval(r, "ref_sens", 1),
                     with_interval(r, "ref_spec", 1), str(r["chosen_epoch"]),
                     f"{best['acc_test']:.1f} (epoch {int(best['epoch'])})",
                     "on" if r["weighted_loss"] else "off"])
    return rows


def summary_title(results: list[ModelResult]) -> str:
    return (f"test split, {results[0].report['test_images']} images (majority baseline "
            f"{results[0].report['baseline_acc']:.1f} %); [95 % interval, patients "
            "resampled]")


UNKNOWN_LEAKAGE = ("the image names carry no patient, so the split is per image and the "
                   "patient leakage of the test split is unknown (not 0 %): a patient's two "
                   "eyes may sit on both sides, which makes test figures optimistic")


def leakage_warning(results: list[ModelResult]) -> str | None:
    """In words, when the test split shares patients with train or may (patients
    unknown); None when it does not."""
    leaked = results[0].report["test_patient_leakage_percent"]
    if leaked is None:
        return UNKNOWN_LEAKAGE[0].upper() + UNKNOWN_LEAKAGE[1:] + "."
    if not leaked:
        return None
    return (f"{leaked:.1f} % of the test images have the other eye of their patient in "
            "train, and the two eyes mostly share a grade: these test figures are "
            "optimistic. Set data.resplit: true in params.yaml for a patient-level split.")


def verdict_text(result: ModelResult) -> str | None:
    """In words, when evaluate found that the model learned nothing beyond one grade."""
    verdict = result.report.get("learned_nothing")
    return learned_nothing_text(result.name, LearnedNothing(**verdict)) if verdict else None


def print_summary(results: list[ModelResult]) -> None:
    """The summary table, a line for each model that learned nothing, and the leakage
    warning where there is leakage."""
    print_table(summary_title(results), SUMMARY_COLUMNS, summary_rows(results))
    for result in results:
        verdict = verdict_text(result)
        if verdict:
            console.print(f"[bold yellow]{verdict}[/]", soft_wrap=True)
    warning = leakage_warning(results)
    if warning:
        console.print(f"[yellow]{warning}[/]")
