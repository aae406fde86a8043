"""Matplotlib figures: the confusion heatmap and the lab's "Result Comparison" chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from retino.atomic import atomic_path  # noqa: E402
from retino.grading import GRADES, row_normalised  # noqa: E402

INIT_COLOURS = {"pretrained": "tab:blue", "scratch": "tab:orange"}


def _save(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def confusion_heatmap(counts: np.ndarray, title: str, path: str | Path) -> None:
    """Row-normalised colours, the count and the share written in every cell."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    shares = row_normalised(counts)
    figure, axes = plt.subplots(figsize=(6.4, 5.4))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    labels = [f"{g} {name}" for g, name in enumerate(GRADES)]
    axes.set_xticks(range(len(GRADES)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(GRADES)), [f"{label} (n={int(t)})" for label, t in
                                         zip(labels, totals[:, 0])])
    for (row, col), share in np.ndenumerate(shares):
        colour = "white" if share > 0.55 else "black"
        axes.text(col, row, f"{share:.2f}\n{counts[row, col]}", ha="center", va="center",
                  fontsize=8, color=colour)
    axes.set_xlabel("predicted grade")
    axes.set_ylabel("true grade")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="share of the true grade's images")
    _save(figure, path)


def result_comparison(arch: str, histories: dict[str, pd.DataFrame], baseline: float,
                      boundary_epoch: int, path: str | Path) -> None:
    """acc_train and acc_test per epoch, pretrained vs scratch, on one chart.

    The majority-class baseline is a dashed line; the dotted vertical line is where
    the pretrained run switches from feature extraction to fine-tuning.
    """
    figure, axes = plt.subplots(figsize=(8, 5))
    for init, history in histories.items():
        colour = INIT_COLOURS.get(init, None)
        axes.plot(history["epoch"], history["acc_train"], "o--", color=colour,
                  label=f"train ({init})")
        axes.plot(history["epoch"], history["acc_test"], "s-", color=colour,
                  label=f"test ({init})")
    axes.axhline(baseline, color="grey", linestyle="--", linewidth=1.2,
                 label=f"majority baseline {baseline:.1f} %")
    axes.axvline(boundary_epoch + 0.5, color="black", linestyle=":", linewidth=1)
    axes.text(boundary_epoch + 0.6, axes.get_ylim()[0] + 1, "fine-tuning →", fontsize=8)
    axes.text(boundary_epoch + 0.4, axes.get_ylim()[0] + 1, "← feature extraction",
              fontsize=8, ha="right")
    axes.set_xlabel("epoch")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"Result comparison ({arch})")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)
