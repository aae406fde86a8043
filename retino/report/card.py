"""A model card per model (``metrics/<arch>-<init>.md``): what it was trained on, how,
from which code and data, how well it grades, and what it must not be used for, in
Markdown a reader can paste into a report.

Provenance comes from ``dvc.lock`` (the params each stage declared and the hashes of
what it read and wrote) and from git, as they stand when compare runs: DVC records
each stage in ``dvc.lock`` as it finishes, so the train and evaluate entries are
those of the model described.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from retino.grading import GRADES
from retino.params import EXTERNAL_SPLIT_TEXT
from retino.report.comparison import (ModelResult, drop_text, external_folder,
                                      external_verdict_text, number_text, resampled,
                                      shared_training_text, verdict_text, with_interval)

ARCH_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}
LIMITS_SYNTHETIC = (
    "Trained and tested on retino's **synthetic** fundus images: these figures say that "
    "the pipeline works, nothing about real photographs. Not a medical device; not "
    "validated on real photos; not for any clinical decision.")
# what each real source is, as its distributors describe it: the card's first paragraph
SOURCE_FACTS = {
    "lab": "EyePACS photographs (Kaggle 2015, the lab's course copy at 512 px), each graded "
           "by one reading (label noise), from mixed cameras; about 18.5 % of EyePACS photos "
           "were judged ungradable by a later study.",
    "kaggle": "EyePACS photographs (Kaggle's Diabetic Retinopathy Detection, 2015), each "
              "graded by one reading (label noise), from mixed cameras; about 18.5 % of "
              "them were judged ungradable by a later study.",
    "aptos": "APTOS 2019 photographs from one hospital in India (Aravind Eye Hospital, "
             "rural screening), several cameras, one grade per photo; their ids carry no "
             "patient, so a patient's two eyes may sit on both sides of the split.",
    "messidor2": "Messidor-2 photographs from France (874 exams, two macula-centred photos "
                 "each, Messidor-Original and Brest University Hospital), with the grades "
                 "a panel adjudicated (Krause et al. 2018); ungradable photos left out.",
    "idrid": "IDRiD photographs from one eye clinic in India (516 photos, its own split of "
             "413 training and 103 testing photos), graded by experts.",
    "folders": "photographs from an ImageFolder tree of unknown origin: retino knows nothing "
               "of where they were taken, with which cameras, how they were graded or by "
               "how many readers; a report of these figures should say where they come from.",
}
NOT_FOR_CLINICS = ("Not a medical device; not validated prospectively or on other "
                   "populations and cameras (cross-dataset transfer is known to be poor); "
                   "not for any clinical decision.")


def limits_text(source: str | None) -> str:
    """The card's limits paragraph for the data ``source`` the model was trained on."""
    if source == "synthetic":
        return LIMITS_SYNTHETIC
    facts = SOURCE_FACTS.get(source, "photographs of a source dvc.lock does not name "
                             "(run `dvc repro`).")
    return f"A research model trained on {facts} {NOT_FOR_CLINICS}"


def git_revision(root: Path = Path(".")) -> str:
    """``<short commit>`` of the working tree, ``+ uncommitted changes`` when dirty."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" + uncommitted changes" if git("status", "--porcelain") else "")


def _stage(lock: dict, name: str) -> dict:
    return lock.get("stages", {}).get(name, {})


def _hash_of(entries: list[dict], path: str) -> str:
    found = next((e for e in entries if e.get("path") == path), {})
    return found.get("md5") or found.get("hash") or "n/a"


def _data_lines(stats: dict, lock: dict) -> list[str]:
    data = _stage(lock, "downscale-images").get("params", {}).get("params.yaml", {}).get(
        "data", {})
    counts = stats["class_counts"]
    table = ["| split | " + " | ".join(f"{g} {GRADES[g]}" for g in range(5)) + " | total |",
             "|---|" + "---:|" * 6]
    for split, values in counts.items():
        table.append(f"| {split} | " + " | ".join(str(v) for v in values.values())
                     + f" | {sum(values.values())} |")
    leakage = stats["test_patient_leakage_percent"]
    resplit = yaml_text(data.get("resplit", "unknown"))
    held_out = ("a hold-out of train patients" if leakage is not None
                else "a hold-out of train images (the names carry no patient)")
    validation = (f"the train split trained the model, the set's own val split "
                  f"({stats['val_images']} images) chose its epoch and operating points"
                  if "val_images" in stats else
                  f"the train split minus {held_out} trained the model, the validation "
                  "part chose its epoch and operating points")
    return [f"- Source: `{data.get('source', 'unknown')}` at {stats['image_size']} px "
            f"(`data.resplit: {resplit}`); {validation}, the test split scored it.",
            _leakage_line(leakage), "", *table]


def _leakage_line(leakage: float | None) -> str:
    if leakage is None:
        return ("- Test images whose patient's other eye is in train: unknown (the image "
                "names carry no patient; the split is per image).")
    return (f"- Test images whose patient's other eye is in train: {leakage} %"
            + (" (the test figures are optimistic)." if leakage else " (a patient-level "
               "split)."))


HEAD_TEXT = {"classification": "5-way classification head (one logit per grade)",
             "regression": "one-output regression head (a score on the grade scale, cut "
                           "into grades at four cut-points tuned on validation for QWK)"}
LOSS_TEXT = {"smooth_l1": "smooth L1 loss on the grade", "mse": "squared error (MSE) on "
             "the grade", None: "cross-entropy"}
REFERABLE_SCORE_TEXT = {"classification": "P(grade >= 2)",
                        "regression": "the regression score (grade scale)"}


def model_head(report: dict) -> str:
    """``classification`` or ``regression``: the head the evaluated model has (older
    reports, written before the regression head existed, hold no key)."""
    return report.get("head") or "classification"


def loss_text(report: dict) -> str:
    """The training loss in words, with its weighting: ``class-weighted cross-entropy``."""
    weighting = "class-weighted" if report["weighted_loss"] else "unweighted"
    loss = report.get("regression_loss") if model_head(report) == "regression" else None
    return f"{weighting} {LOSS_TEXT[loss]}"


def _recipe_lines(result: ModelResult, lock: dict) -> list[str]:
    arch, init = result.name.split("-")
    params = _stage(lock, f"train@{result.name}").get("params", {}).get("params.yaml", {})
    recipe = ("ImageNet weights, then the lab's two phases: `fc` alone on stored features "
              "of the frozen backbone, then every layer fine-tuned"
              if init == "pretrained" else "random initial weights, every layer trained")
    report = result.report
    head = model_head(report)
    lines = [f"- {ARCH_NAMES[arch]} (torchvision), {HEAD_TEXT[head]}; {recipe}."]
    if head == "regression" and report.get("cuts"):
        lines.append("- Cut-points between grades: "
                     + ", ".join(f"{cut:.3f}" for cut in report["cuts"]) + ".")
    lines += [f"- Weights kept: epoch {report['chosen_epoch']} ({report['chosen_phase']}), "
              f"the best validation QWK; loss: {loss_text(report)}.",
              "- Params that made it (from `dvc.lock`):" if params else
              "- Params: no dvc.lock entry for this model (run `dvc repro`)."]
    lines += [f"  - `{key}`: `{yaml_text(value)}`"
              for key, value in sorted(flattened(params).items())]
    return lines


def yaml_text(value: object) -> str:
    """A value as params.yaml writes it: ``false``, ``""``, ``0.001``."""
    if isinstance(value, bool):
        return str(value).lower()
    return '""' if value == "" else str(value)


def flattened(params: dict, prefix: str = "") -> dict:
    """``{"train.weighted_loss": False, ...}`` of a nested params mapping."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _metric_lines(report: dict, where: str = "Test split", scored: str = "test") -> list[str]:
    rows = [("accuracy", with_interval(report, "acc", 1, " %")),
            ("quadratic weighted kappa", with_interval(report, "qwk", 3)),
            ("balanced accuracy", with_interval(report, "bacc", 1, " %")),
            ("referable DR (grade >= 2) sensitivity", with_interval(report, "ref_sens", 1, " %")),
            ("referable DR specificity", with_interval(report, "ref_spec", 1, " %")),
            ("referable DR ROC AUC", with_interval(report, "ref_auc", 3)),
            ("majority baseline accuracy", f"{number_text(report['baseline_acc'], 1)} %")]
    drawn = report.get("resampled") or resampled(report)
    lines = [f"{where}, {report['test_images']} images; 95 % intervals from 1,000 "
             f"bootstrap resamples of {drawn}.", "", "| measure | value [95 % interval] |",
             "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
    points = report.get("operating_points", {})
    if points:
        lines += [f"Referable operating points, thresholds on "
                  f"{REFERABLE_SCORE_TEXT[model_head(report)]} chosen on validation:", "",
                  f"| point | threshold | validation sens. / spec. | {scored} sens. / spec. |",
                  "|---|---:|---|---|"]
        lines += [f"| {name.replace('_', ' ')} | {p['threshold']:.4f} | "
                  f"{number_text(p['validation_sensitivity'], 1)} / "
                  f"{number_text(p['validation_specificity'], 1)} % | "
                  f"{number_text(p['sensitivity'], 1)} / {number_text(p['specificity'], 1)} % |"
                  for name, p in points.items()]
        lines.append("")
    return lines + _confusion_lines(report)


def _confusion_lines(report: dict) -> list[str]:
    """The confusion matrix, each cell its count and its share of the true grade's
    images, with each grade's images and recall (the lab's per-grade view)."""
    counts = report["confusion_counts"]
    names = [f"{g} {GRADES[g]}" for g in range(len(GRADES))]
    lines = ["Confusion matrix: rows are the true grades, columns the predicted ones; each "
             "cell is a count and its share of the row.", "",
             "| true \\ predicted | " + " | ".join(names) + " | images | recall |",
             "|---|" + "---:|" * (len(names) + 2)]
    for grade, row in enumerate(counts):
        total = sum(row)
        cells = [f"{count} ({count / total:.2f})" if total else "0" for count in row]
        recall = report["recall"][f"{grade}-{GRADES[grade]}"]
        lines.append(f"| {names[grade]} | " + " | ".join(cells) + f" | {total} | "
                     f"{'n/a' if recall is None else f'{recall:.1f} %'} |")
    return lines + ["", "Recall n/a: no image of that grade in the set."
                    if any(sum(row) == 0 for row in counts) else "", ""]


def _external_lines(result: ModelResult, left_out: int | None) -> list[str]:
    """The model on the external set: the headline beside the in-domain one, the change
    in words, then the same table as the test split's."""
    external, inside = result.external, result.report
    source = external["source"]
    report = f"`{external_folder(Path('metrics'), source)}/skipped_inputs.csv`"
    left = ("" if left_out is None else "; nothing left out" if not left_out else
            f"; {left_out} input(s) left out (ungradable or bad), listed in {report}")
    shared = shared_training_text(external)
    return [f"Tested on `{source}`: {EXTERNAL_SPLIT_TEXT[external['split']]}, "
            f"{external['test_images']} images{left}. Downscaled and preprocessed as the "
            "training data, normalised with the model's own statistics, graded at its own "
            "cut-points and operating points (fitted on its validation split, never on this "
            "set)." + (f" {shared}" if shared else ""), "",
            f"- QWK on `{source}`: {with_interval(external, 'qwk', 3)}; in-domain (its test "
            f"split): {with_interval(inside, 'qwk', 3)}.",
            f"- On `{source}` the QWK is {drop_text(inside, external)}.", "",
            *_warning_lines(external_verdict_text(result)),
            *_metric_lines(external, where=f"External set `{source}`", scored=source)]


def _warning_lines(verdict: str | None) -> list[str]:
    return [f"**Warning: {verdict}**", ""] if verdict else []


def model_card(result: ModelResult, stats: dict, lock: dict, revision: str,
               external_left_out: int | None = None) -> str:
    """The Markdown card of one model; ``external_left_out``: how many inputs of the
    external set (if any) downscale-external left out."""
    train, evaluate = _stage(lock, f"train@{result.name}"), _stage(lock,
                                                                   f"evaluate@{result.name}")
    source = _stage(lock, "downscale-images").get("params", {}).get("params.yaml", {}).get(
        "data", {}).get("source")
    provenance = [f"- Code: git `{revision}`.",
                  f"- Downscaled data `data/downscaled`: md5 "
                  f"`{_hash_of(train.get('deps', []), 'data/downscaled')}`.",
                  f"- Train statistics `metrics/data_stats.json`: md5 "
                  f"`{_hash_of(train.get('deps', []), 'metrics/data_stats.json')}`.",
                  f"- Model `models/{result.name}.pt`: md5 "
                  f"`{_hash_of(train.get('outs', []), f'models/{result.name}.pt')}`."]
    if not train or not evaluate:
        provenance.append("- (dvc.lock has no entry for this model's stages: run `dvc repro`)")
    sections = [f"# Model card: {result.name}", "",
                "## Intended use and limits", "",
                limits_text(source), "",
                "Grades diabetic retinopathy 0-4 (none, mild, moderate, severe, "
                "proliferative) from one colour fundus photograph; `retino predict` applies "
                "the model to new photos with its own preprocessing.", "",
                "## Data", "", *_data_lines(stats, lock), "",
                "## Recipe", "", *_recipe_lines(result, lock), "",
                "## Test results", "", *_warning_lines(verdict_text(result)),
                *_metric_lines(result.report),
                "",
                *(["## External validation", "", *_external_lines(result, external_left_out),
                   ""] if result.external is not None else []),
                "## Provenance", "", *provenance, ""]
    return "\n".join(sections)
