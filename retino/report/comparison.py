"""The comparison over all four models: what compare writes, prints and draws, and what
``python -m retino summary`` reprints from the files alone.

``metrics/compare.json`` is the one DVC metrics file. Per model, under its compact code
(``r18p``), it holds test QWK, its 95 % interval as text and test accuracy, rounded as
the summary table prints them (``r18p.qwk``, ``r18p.qwk_ci``, ``r18p.acc``): twelve
columns, which is what ``dvc metrics show`` fits in 200 columns (an accuracy interval per
model would not) and what leads ``dvc exp show``. With ``evaluate.pair_eyes`` on, each
model's two-eye figures follow its own (``r18p.qwk_paired`` ...). With an external set
(``external.source``), each model's in-domain QWK is followed by its external QWK and
that interval (``r18p.qwk``, ``r18p.qwk_x``, ``r18p.qwk_x_ci``): twelve columns again,
as accuracy and the in-domain interval move out. Every other figure of a model, every
interval among them, is in ``metrics/<arch>-<init>.json``,
``metrics/external/<source>/<arch>-<init>.json`` and the summary tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from retino.grading import LearnedNothing, learned_nothing_text
from retino.params import ARCHS, EXTERNAL_SPLIT_TEXT, INITS, run_code, run_name
from retino.progress import console, print_table

# the figures of each model in metrics/compare.json, in the order DVC lists its columns,
# with their digits (those of the summary table)
COMPARED_DIGITS = {"qwk": 3, "acc": 1}
COMPARED_INTERVAL = "qwk"  # its 95 % interval, as text: "[0.766, 0.877]"


@dataclass(frozen=True)
class ModelResult:
    """One trained model: its test report, its per-epoch history and, when an external
    set is named (``external.source``), its report on that set."""

    name: str  # <arch>-<init>
    report: dict
    history: pd.DataFrame
    external: dict | None = None


def external_folder(metrics_dir: Path, source: str) -> Path:
    """Where the external stages of ``source`` write: ``metrics/external/<source>``."""
    return metrics_dir / "external" / source


def read_results(metrics_dir: Path, history_dir: Path, external: tuple[str, ...] = ()
                 ) -> list[ModelResult]:
    """The four models' reports and histories, with their reports on the external set
    ``external`` names (``external.source``: empty or one source); a missing file says
    which stage makes it."""
    results = []
    for arch in ARCHS:
        for init in INITS:
            name = run_name(arch, init)
            report_file, history_file = metrics_dir / f"{name}.json", history_dir / f"{name}.csv"
            for path in (report_file, history_file):
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: not found; run `dvc repro evaluate@{name}`")
            results.append(ModelResult(name, json.loads(report_file.read_text()),
                                       pd.read_csv(history_file),
                                       read_external(metrics_dir, name, external)))
    return results


def external_left_out(metrics_dir: Path, external: tuple[str, ...]) -> int | None:
    """How many inputs downscale-external left out of the external set (the rows of its
    skipped_inputs.csv), or None when no set is named or the report is missing."""
    path = external_folder(metrics_dir, external[0]) / "skipped_inputs.csv" if external else None
    if path is None or not path.is_file():
        return None
    return max(len(path.read_text(encoding="utf-8").splitlines()) - 1, 0)


def read_external(metrics_dir: Path, name: str, external: tuple[str, ...]) -> dict | None:
    """Model ``name``'s report on the external set, or None when none is named."""
    if not external:
        return None
    source = external[0]
    path = external_folder(metrics_dir, source) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro "
                                f"evaluate-external@{name}-{source}`")
    return json.loads(path.read_text())


EXTERNAL_SUFFIX = "_x"  # the external set's figures in metrics/compare.json: qwk_x


def compared_metrics(results: list[ModelResult]) -> dict:
    """The content of ``metrics/compare.json``: per model code, its QWK, the QWK's 95 %
    interval and its accuracy, or with an external set, its QWK, the external QWK and
    that one's interval (``qwk``, ``qwk_x``, ``qwk_x_ci``); with ``evaluate.pair_eyes``
    on, the QWK, interval and accuracy of the two-eye grading after them
    (``qwk_paired``, ``qwk_paired_ci``, ``acc_paired``)."""
    compared = {}
    for result in results:
        figures = compared_figures(result.report)
        if result.external is not None:
            external = compared_figures(result.external, suffix=EXTERNAL_SUFFIX)
            figures = {"qwk": figures["qwk"], **{key: external[key] for key in (
                f"qwk{EXTERNAL_SUFFIX}", f"qwk{EXTERNAL_SUFFIX}_ci")}}
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


def resampled(report: dict) -> str:
    """What the bootstrap of an in-domain report drew: patients, or images where the
    names carry no patient (the leakage is then unknown)."""
    return "images" if report["test_patient_leakage_percent"] is None else "patients"


def summary_title(results: list[ModelResult]) -> str:
    return (f"test split, {results[0].report['test_images']} images (majority baseline "
            f"{results[0].report['baseline_acc']:.1f} %); [95 % interval, "
            f"{resampled(results[0].report)} resampled]")


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
    """In words, when evaluate found that the model graded its test split no better than
    chance."""
    verdict = result.report.get("learned_nothing")
    return learned_nothing_text(result.name, LearnedNothing(**verdict),
                                weighted_loss=bool(result.report["weighted_loss"])) \
        if verdict else None


def external_verdict_text(result: ModelResult) -> str | None:
    """In words, when evaluate-external found that the model graded the external set no
    better than chance."""
    verdict = (result.external or {}).get("learned_nothing")
    if not verdict:
        return None
    source = result.external["source"]
    return (f"On {source}: " + learned_nothing_text(
        result.name, LearnedNothing(**verdict), f"predictions on {source}",
        bool(result.report["weighted_loss"])))


EXTERNAL_COLUMNS = ("model", "acc %", "QWK", "bal. acc. %", "ref. sens. %", "ref. spec. %",
                    "ref. AUC", "in-domain QWK", "QWK change")


def external_rows(results: list[ModelResult]) -> list[list[str]]:
    """One row per model on the external set, with its in-domain QWK and the change."""
    rows = []
    for result in results:
        r, inside = result.external, result.report
        change = (None if r["qwk"] is None or inside["qwk"] is None
                  else r["qwk"] - inside["qwk"])
        rows.append([result.name, with_interval(r, "acc", 1), with_interval(r, "qwk", 3),
                     with_interval(r, "bacc", 1), with_interval(r, "ref_sens", 1),
                     with_interval(r, "ref_spec", 1), with_interval(r, "ref_auc", 3),
                     with_interval(inside, "qwk", 3),
                     "n/a" if change is None else f"{change:+.3f}"])
    return rows


def drop_text(in_domain: dict, external: dict) -> str:
    """The change from the in-domain QWK to the external one, in words:
    ``0.258 lower (0.770 in-domain -> 0.512 on aptos), outside the in-domain 95 %
    interval``."""
    inside, outside = in_domain.get("qwk"), external.get("qwk")
    if inside is None or outside is None or math.isnan(inside) or math.isnan(outside):
        return "not defined (a QWK is undefined on one of the sets)"
    change = outside - inside
    direction = "lower" if change < 0 else "higher" if change > 0 else "no different"
    amount = f"{abs(change):.3f} {direction}" if change else direction
    low, high = (in_domain.get("ci95", {}).get("qwk") or (None, None))
    where = ""
    if low is not None and not math.isnan(low):
        where = (", inside the in-domain 95 % interval" if low <= outside <= high
                 else ", outside the in-domain 95 % interval")
    return (f"{amount} ({inside:.3f} in-domain -> {outside:.3f} on {external['source']})"
            f"{where}")


def shared_text(report: dict, source: str) -> str:
    """What an external report records of the photos it left out as the training data's
    (``retino.data.fingerprints.shared_report``), in words."""
    compared = ("names and fingerprints compared" if report["names_compared"] else
                "fingerprints compared; the synthetic set's names are invented, so not "
                "its names")
    if not report["images"]:
        return (f"none of the {report['of']} photos of {source} is a photo of the training "
                f"data ({compared})")
    return (f"{report['images']} of the {report['of']} photos of {source} are photos of "
            f"the training data ({report['by_name']} by name, {report['by_content']} by "
            f"content: fingerprints within {report['match_rms']} grey levels; {compared}), "
            "left out of every figure on it")


def shared_training_text(external: dict) -> str | None:
    """In words, which photos of the external set are the training data's (left out of
    its figures); None for a report written before that was checked."""
    shared = external.get("shared_with_training")
    if shared is None:
        return None
    text = shared_text(shared, external["source"])
    return text[0].upper() + text[1:] + "."


def external_title(results: list[ModelResult]) -> str:
    first = results[0].external
    return (f"external set {first['source']}, {EXTERNAL_SPLIT_TEXT[first['split']]}: "
            f"{first['test_images']} images (majority baseline {first['baseline_acc']:.1f} %); "
            f"[95 % interval, {first['resampled']} resampled]")


@dataclass(frozen=True)
class SummaryTable:
    """One table of the summary: its title, column names and rows of text."""

    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]


def summary_tables(results: list[ModelResult]) -> list[SummaryTable]:
    """The test split's table, and the external set's when there is one."""
    tables = [SummaryTable(summary_title(results), SUMMARY_COLUMNS, summary_rows(results))]
    if results[0].external is not None:
        tables.append(SummaryTable(external_title(results), EXTERNAL_COLUMNS,
                                   external_rows(results)))
    return tables


def summary_notes(results: list[ModelResult]) -> list[tuple[str, bool]]:
    """What the tables need said beside them, each with whether it is a warning: the
    external set's photos of the training data, each verdict, the split's leakage."""
    notes = []
    if results[0].external is not None:
        shared = shared_training_text(results[0].external)
        if shared:
            notes.append((shared, results[0].external["shared_with_training"]["images"] > 0))
    for result in results:
        notes += [(verdict, True) for verdict in (verdict_text(result),
                                                  external_verdict_text(result)) if verdict]
    warning = leakage_warning(results)
    if warning:
        notes.append((warning, True))
    return notes


def print_summary(results: list[ModelResult], out: Console = console) -> None:
    """The summary as rich tables, then its notes (warnings in yellow), on ``out``."""
    for table in summary_tables(results):
        print_table(table.title, table.columns, table.rows, out)
    for note, warning in summary_notes(results):
        out.print(f"[bold yellow]{note}[/]" if warning else note, soft_wrap=True,
                  highlight=False)


def summary_markdown(results: list[ModelResult]) -> str:
    """The summary as Markdown, to paste into a report (``metrics/summary.md``)."""
    lines = []
    for table in summary_tables(results):
        lines += [f"**{table.title[0].upper()}{table.title[1:]}**", "",
                  "| " + " | ".join(table.columns) + " |",
                  "|---|" + "---:|" * (len(table.columns) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    lines += [f"{'**Warning:** ' if warning else ''}{note}\n" for note, warning in
              summary_notes(results)]
    return "\n".join(lines).rstrip() + "\n"


CSV_FIGURES = ("acc", "qwk", "bacc", "ref_sens", "ref_spec", "ref_auc")


def summary_csv(results: list[ModelResult]) -> str:
    """The summary's figures as CSV, one row per model and set, each figure with its
    interval's ends in columns of their own, for a spreadsheet or pandas."""
    columns = ["model", "set", "images", *(f"{key}{end}" for key in CSV_FIGURES
                                           for end in ("", "_low", "_high")),
               "baseline_acc", "chosen_epoch", "weighted_loss", "learned_nothing"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for result in results:
        reports = [("test split", result.report)]
        if result.external is not None:
            reports.append((result.external["source"], result.external))
        for where, report in reports:
            writer.writerow([result.name, where, report["test_images"],
                             *(_csv_number(value) for key in CSV_FIGURES
                               for value in (report[key],
                                             *(report.get("ci95", {}).get(key) or (None,) * 2))),
                             _csv_number(report["baseline_acc"]), report["chosen_epoch"],
                             str(bool(report["weighted_loss"])).lower(),
                             str(bool(report.get("learned_nothing"))).lower()])
    return out.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4g}"
