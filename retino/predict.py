"""``retino predict``: grade new photos with a trained model, as the pipeline would.

Every photo goes through exactly the preprocessing the model was trained with, read
from the model file and never from the current params.yaml: decoded upright in any
colour mode, the eye cropped, padded square and resized to the checkpoint's image
size, normalised with the checkpoint's train statistics. Each photo gets one CSV row:
its grade, the five probabilities and P(referable) (or, for a regression head, its
score, cut into a grade at the checkpoint's cut-points) and the referable call at each
operating point the train stage chose on validation. A photo that cannot be read gets
a row with the reason, and the run goes on. ``--explain DIR`` also writes a Grad-CAM
picture per photo.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from retino.atomic import atomic_path, write_text
from retino.data.photos import downscale_job
from retino.errors import DataError
from retino.grading import NUM_CLASS, predicted_grades, referable_score
from retino.pool import default_workers, ordered_map
from retino.progress import console, counting
from retino.report.gradcam import grad_cam, grade_caption, overlay
from retino.train.checkpoints import load_checkpoint, model_from_checkpoint
from retino.train.device import resolve_device
from retino.train.inputs import ToModel

PHOTO_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


def find_photos(paths: Sequence[Path]) -> list[Path]:
    """Files as given (a missing one too: its row will say so); folders searched
    recursively for image files, in sorted order. A folder with no photo in it is an
    error that names it and the extensions looked for."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            photos = sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
            if not photos:
                raise DataError(f"{path}: no photos in it or its subfolders (looked for "
                                f"{', '.join(sorted(PHOTO_SUFFIXES))}, in any case)")
            found += photos
        else:
            found.append(path)
    return found


@dataclass
class Predictor:
    """A model file made ready to grade uint8 eye images of its own size."""

    checkpoint: dict
    model: torch.nn.Module
    to_model: ToModel
    device: torch.device

    @staticmethod
    def load(model_file: Path, device_name: str) -> "Predictor":
        device = resolve_device(device_name, setting="--device")
        checkpoint = load_checkpoint(model_file)
        model = model_from_checkpoint(checkpoint).to(device).eval()
        return Predictor(checkpoint, model, ToModel(checkpoint["mean"], checkpoint["std"],
                                                    device, reuse_buffers=False), device)

    @property
    def image_size(self) -> int:
        return int(self.checkpoint["image_size"])

    def grade(self, pixels: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Float32 logits of a batch (N x S x S x 3 uint8) and, when asked, the
        Grad-CAM maps of the predicted grades."""
        images = self.to_model(torch.from_numpy(pixels))
        if explain:
            maps, logits = grad_cam(self.model, images)
            return logits.float().cpu().numpy(), maps
        with torch.no_grad():
            return self.model(images).float().cpu().numpy(), None


def output_columns(checkpoint: dict) -> list[str]:
    """The five probabilities and P(referable), or the regression score."""
    if checkpoint.get("head") == "regression":
        return ["score"]
    return [*(f"p_grade_{g}" for g in range(NUM_CLASS)), "referable_probability"]


def result_columns(checkpoint: dict) -> list[str]:
    points = list(checkpoint.get("operating_points", {}))
    return ["file", "grade", *output_columns(checkpoint),
            *(f"referable_{name}" for name in points), "problem"]


def graded_rows(files: list[Path], outputs: np.ndarray, checkpoint: dict) -> list[dict]:
    grades = predicted_grades(outputs, checkpoint.get("cuts"))
    referable = referable_score(outputs)
    rows = []
    for index, path in enumerate(files):
        row = {"file": str(path), "grade": int(grades[index]), "problem": ""}
        if outputs.shape[1] == 1:
            row["score"] = round(float(outputs[index, 0]), 6)
        else:
            probabilities = np.exp(outputs[index] - outputs[index].max())
            probabilities /= probabilities.sum()
            row.update({f"p_grade_{g}": round(float(probabilities[g]), 6)
                        for g in range(NUM_CLASS)})
            row["referable_probability"] = round(float(referable[index]), 6)
        for name, point in checkpoint.get("operating_points", {}).items():
            row[f"referable_{name}"] = int(referable[index] >= point["threshold"])
        rows.append(row)
    return rows


def _decoded(photos: list[Path], size: int, preprocess: str, workers: int
             ) -> Iterator[tuple[Path, object]]:
    jobs = ((path, size, preprocess) for path in photos)
    results = (ordered_map(downscale_job, jobs, workers) if workers > 1
               else map(downscale_job, jobs))
    yield from zip(photos, results)


@dataclass(frozen=True)
class PredictSummary:
    graded: int
    failed: int


def predict(model_file: Path, photos: list[Path], out_csv: Path, device_name: str = "auto",
            batch_size: int = 32, workers: int = 0, explain_dir: Path | None = None
            ) -> PredictSummary:
    """Grade ``photos`` with ``model_file``; write one CSV row per photo to ``out_csv``
    (and a Grad-CAM picture per readable photo to ``explain_dir``)."""
    predictor = Predictor.load(model_file, device_name)
    rows: list[dict] = []
    pending: list[tuple[Path, np.ndarray]] = []
    pictures = explanation_names(photos)

    def flush() -> None:
        if not pending:
            return
        files, pixels = [p for p, _ in pending], np.stack([x for _, x in pending])
        logits, maps = predictor.grade(pixels, explain_dir is not None)
        graded = graded_rows(files, logits, predictor.checkpoint)
        rows.extend(graded)
        if maps is not None:
            _write_explanations([explain_dir / pictures[path] for path in files], pixels,
                                maps, graded)
        pending.clear()

    with counting("predict", len(photos)) as tick:
        for path, result in _decoded(photos, predictor.image_size,
                                     predictor.checkpoint.get("preprocess", "none"),
                                     default_workers(workers)):
            if isinstance(result, str):
                rows.append({"file": str(path), "problem": result})
            else:
                pending.append((path, result))
                if len(pending) == batch_size:
                    flush()
            tick()
        flush()
    order = {str(path): index for index, path in enumerate(photos)}
    rows.sort(key=lambda row: order[row["file"]])
    _write_csv(out_csv, rows, result_columns(predictor.checkpoint))
    failed = sum(1 for row in rows if row.get("problem"))
    return PredictSummary(graded=len(rows) - failed, failed=failed)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, out.getvalue())


def explanation_names(photos: list[Path]) -> dict[Path, str]:
    """The Grad-CAM picture of each photo: ``<stem>.png``, and ``<stem>-2.png``,
    ``<stem>-3.png`` ... for later photos of the same stem in this run (from other
    folders). Chosen from the photos alone, never from what is on disk, so a rerun
    replaces its own pictures."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in photos:
        if path in names:
            continue
        name, copy = f"{path.stem}.png", 2
        while name in taken:
            name, copy = f"{path.stem}-{copy}.png", copy + 1
        names[path] = name
        taken.add(name)
    return names


def _write_explanations(targets: list[Path], pixels: np.ndarray, maps: np.ndarray,
                        rows: list[dict]) -> None:
    for target, image, heat, row in zip(targets, pixels, maps, rows):
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            overlay(image, heat, grade_caption(row["grade"])).save(tmp, format="PNG")


def print_summary(summary: PredictSummary, out_csv: Path) -> None:
    colour = "red" if summary.failed else "green"
    console.print(f"[{colour}]graded {summary.graded} photo(s), {summary.failed} could not be "
                  f"read[/] -> {out_csv}" + (" (see its problem column)" if summary.failed
                                               else ""))
