"""One picture per model of where it looks: for each true grade, a few test photos it
got right and a few it got wrong, each with its Grad-CAM overlay.

The photos are chosen deterministically (the first ones in CSV order), so the
gallery changes only when the model or the data do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from retino.grading import GRADES, NUM_CLASS
from retino.report.figures import plt, save_figure
from retino.report.gradcam import grad_cam, overlay
from retino.train.inputs import ImageArray, ToModel

PER_KIND = 2  # correct and wrong photos shown per grade


def chosen_photos(actual: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """Per grade, the first ``PER_KIND`` correct then the first ``PER_KIND`` wrong test
    images, in CSV order (fewer where the split has fewer)."""
    rows = []
    for grade in range(NUM_CLASS):
        of_grade = np.flatnonzero(actual == grade)
        correct = of_grade[predicted[of_grade] == grade][:PER_KIND]
        wrong = of_grade[predicted[of_grade] != grade][:PER_KIND]
        rows.append([int(i) for i in (*correct, *wrong)])
    return rows


def explained_maps(model: nn.Module, to_model: ToModel, pixels: np.ndarray,
                   predicted: np.ndarray) -> np.ndarray:
    """Grad-CAM maps of the grades the gallery shows (after cut-points or test-time
    augmentation, which can differ from the unflipped photo's highest logit): the
    evidence for that grade's logit, or for the regression score itself."""
    regression = model.fc.out_features == 1  # its one output is what is explained
    target = None if regression else torch.as_tensor(predicted, dtype=torch.long)
    return grad_cam(model, to_model(torch.from_numpy(pixels)), target)[0]


def gallery(model: nn.Module, images: ImageArray, to_model: ToModel, predicted: np.ndarray,
            title: str, path: str | Path) -> None:
    """Write the gallery of ``model`` on the test ``images`` to ``path`` (PNG)."""
    rows = chosen_photos(images.labels, predicted)
    figure, axes = plt.subplots(NUM_CLASS, 2 * PER_KIND, squeeze=False,
                                figsize=(2.6 * 2 * PER_KIND, 2.8 * NUM_CLASS))
    for grade, indices in enumerate(rows):
        pixels = np.stack([images[i][0].numpy() for i in indices]) if indices else None
        maps = explained_maps(model, to_model, pixels, predicted[indices]) if indices else []
        for column, cell in enumerate(axes[grade]):
            cell.set_xticks([])
            cell.set_yticks([])
            if column >= len(indices):
                cell.set_frame_on(False)
                continue
            index = indices[column]
            cell.imshow(overlay(pixels[column], maps[column],
                                f"predicted {predicted[index]}"))
            verdict = "correct" if predicted[index] == grade else "wrong"
            cell.set_title(f"{images.names[index]} ({verdict})", fontsize=8)
        axes[grade][0].set_ylabel(f"true grade {grade}\n{GRADES[grade]}", fontsize=9)
        if not indices:
            axes[grade][0].text(0.0, 0.5, "no test images of this grade", fontsize=8,
                                transform=axes[grade][0].transAxes)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    save_figure(figure, path)
