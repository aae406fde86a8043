"""Matplotlib figures: the confusion heatmap and the lab's "Result Comparison" chart
(with the training loss beside it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from retino.atomic import atomic_path  # noqa: E402
from retino.grading import GRADES, row_normalised  # noqa: E402
from retino.train.recipe import PHASE_FEATURES  # noqa: E402

# One colour per model, the same in every figure and in the DVC plot templates
# (.dvc/plots/history.json)
MODEL_COLOURS = {"resnet18-pretrained": "#1f77b4", "resnet18-scratch": "#ff7f0e",
                 "resnet50-pretrained": "#2ca02c", "resnet50-scratch": "#d62728"}


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def confusion_heatmap(counts: np.ndarray, title: str, path: str | Path) -> None:
    """Row-normalised colours; every cell says its share of the true grade (%) and its
    count, in a size that stays readable."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    shares = row_normalised(counts)
    figure, axes = plt.subplots(figsize=(7.2, 6.0))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    labels = [f"{g} {name}" for g, name in enumerate(GRADES)]
    axes.set_xticks(range(len(GRADES)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(GRADES)), [f"{label} (n={int(t)})" for label, t in
                                         zip(labels, totals[:, 0])])
    for (row, col), share in np.ndenumerate(shares):
        colour = "white" if share > 0.55 else "black"
        text = f"{100 * share:.0f} %\n({counts[row, col]})" if totals[row, 0] else "–"
        axes.text(col, row, text, ha="center", va="center", fontsize=10, color=colour)
    axes.set_xlabel("predicted grade")
    axes.set_ylabel("true grade (images in the test split)")
    axes.set_title(title, fontsize=11)
    figure.colorbar(image, ax=axes, label="share of the true grade's images")
    save_figure(figure, path)


def result_comparison(arch: str, runs: dict, leakage_warning: str | None,
                      path: str | Path) -> None:
    """The lab's chart, acc_train and acc_test per epoch, pretrained vs scratch, beside
    the training loss per epoch.

    ``runs`` maps ``pretrained``/``scratch`` to ``ModelResult``s. A star marks the
    epoch chosen on validation kappa; the dashed grey line is the majority baseline;
    the dotted vertical line is where the pretrained run switches from feature
    extraction to fine-tuning (scratch runs have one phase), labelled just above the
    axes. The legend sits outside the axes, so nothing covers the curves.
    """
    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(15, 5.6),
                                            gridspec_kw={"width_ratios": [1.4, 1]})
    for init, result in runs.items():
        history, colour = result.history, MODEL_COLOURS.get(result.name)
        accuracy.plot(history["epoch"], history["acc_train"], "o--", color=colour, alpha=0.7,
                      label=f"{init}: train")
        accuracy.plot(history["epoch"], history["acc_test"], "s-", color=colour,
                      label=f"{init}: test")
        chosen = history.loc[history["epoch"] == result.report["chosen_epoch"]]
        accuracy.plot(chosen["epoch"], chosen["acc_test"], "*", color=colour, markersize=18,
                      markeredgecolor="black", label=f"{init}: epoch chosen on validation")
        loss.plot(history["epoch"], history["train_loss"], "o-", color=colour,
                  label=f"{init}: training loss")
    baseline = next(iter(runs.values())).report["baseline_acc"]
    accuracy.axhline(baseline, color="grey", linestyle="--", linewidth=1.2,
                     label=f"majority baseline {baseline:.1f} %")
    for axes in (accuracy, loss):
        _phase_boundary(axes, runs.get("pretrained"))
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    weighted = {bool(r.report["weighted_loss"]) for r in runs.values()}
    kind = {frozenset({True}): "class-weighted", frozenset({False}): "unweighted"}.get(
        frozenset(weighted), "mixed")
    accuracy.set_title(f"Result comparison ({arch}), {kind} loss", pad=16)
    accuracy.set_ylabel("accuracy (%)")
    loss.set_title(f"{arch}: training loss per epoch (mean over the epoch)", pad=16)
    loss.set_ylabel("training loss")
    handles = accuracy.get_legend_handles_labels()
    loss_handles = loss.get_legend_handles_labels()
    loss.legend(handles[0] + loss_handles[0], handles[1] + loss_handles[1], loc="upper left",
                bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    if leakage_warning:
        figure.text(0.01, -0.02, textwrap.fill(leakage_warning, 150), fontsize=9,
                    color="darkred", va="top")
    save_figure(figure, path)


def _phase_boundary(axes: plt.Axes, pretrained) -> None:
    """The pretrained run's switch from feature extraction to fine-tuning, labelled at
    the top of the axes, clear of the curves' usual range and of the legend."""
    if pretrained is None:
        return
    history = pretrained.history
    boundary = int((history["phase"] == PHASE_FEATURES).sum())
    if boundary == 0 or boundary == len(history):
        return
    axes.axvline(boundary + 0.5, color="black", linestyle=":", linewidth=1)
    above = axes.get_xaxis_transform()  # x in data, y in axes fraction: 1 is the top edge
    axes.text(boundary + 0.45, 1.005, "pretrained: feature extraction", transform=above,
              ha="right", va="bottom", fontsize=8)
    axes.text(boundary + 0.55, 1.005, "fine-tuning", transform=above, ha="left",
              va="bottom", fontsize=8)
