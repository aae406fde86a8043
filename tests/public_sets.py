"""Tiny copies of the public DR sets, in each distributor's layout, with the real file
and column names and their quirks (IDRiD's trailing space, Messidor-2's mix of
``.png`` and ``.JPG``, an ungradable row, a missing photo), for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retino.data.public_sets import IDRID


def photo(path: Path, grade: int, seed: int, size: tuple[int, int] = (60, 48)) -> Path:
    """A small fundus-like photo: a disc on black whose colour hints at the grade."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size)
    red = 120 + 25 * grade + int(rng.integers(0, 20))
    ImageDraw.Draw(image).ellipse((6, 2, size[0] - 6, size[1] - 2),
                                  fill=(red, 70 + int(rng.integers(0, 30)), 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def grades(count: int) -> list[int]:
    """Every grade several times, in a fixed order."""
    return [index % 5 for index in range(count)]


def write_aptos(folder: Path, count: int = 30, missing: str | None = None) -> dict[str, int]:
    """``train.csv`` (id_code,diagnosis) and ``train_images/<id_code>.png``."""
    labels = {f"{index:04x}c1434d8d{index:02d}": grade
              for index, grade in enumerate(grades(count))}
    lines = ["id_code,diagnosis"] + [f"{name},{grade}" for name, grade in labels.items()]
    (folder).mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    for seed, (name, grade) in enumerate(labels.items()):
        if name != missing:
            photo(folder / "train_images" / f"{name}.png", grade, seed)
    return labels


def write_messidor2(folder: Path, count: int = 30) -> tuple[dict[str, int], str]:
    """``messidor_data.csv`` with Google's adjudicated grades, ``IMAGES/`` with a mix of
    ``.png`` and ``.JPG``; the last row is ungradable. Returns the gradable labels by
    name (the file stem) and the ungradable file name."""
    files = [f"20051020_{43808 + i}_0100_PP.png" if i % 2 else f"IM{i:06d}.JPG"
             for i in range(count)]
    lines = ["image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable"]
    labels = {}
    for seed, (file, grade) in enumerate(zip(files, grades(count))):
        if seed == count - 1:
            lines.append(f"{file},,,0")
        else:
            lines.append(f"{file},{grade},0,1")
            labels[Path(file).stem] = grade
        photo(folder / "IMAGES" / file, grade, seed)
    (folder / "messidor_data.csv").write_text("\n".join(lines) + "\n")
    return labels, files[-1]


def write_idrid(folder: Path, train: int = 25, test: int = 10) -> dict[str, dict[str, int]]:
    """IDRiD's disease-grading part: two image folders and two label CSVs whose header
    ends in ``Risk of macular edema `` (with the real file's trailing space) and whose
    rows trail empty cells."""
    root = folder / IDRID
    sets = {"train": ("a. Training Set", "a. IDRiD_Disease Grading_Training Labels.csv", 1),
            "test": ("b. Testing Set", "b. IDRiD_Disease Grading_Testing Labels.csv", 501)}
    counts, labels = {"train": train, "test": test}, {}
    for mode, (images, csv_name, first) in sets.items():
        labels[mode] = {f"IDRiD_{first + i:03d}": grade
                        for i, grade in enumerate(grades(counts[mode]))}
        lines = ["Image name,Retinopathy grade,Risk of macular edema ,,"]
        lines += [f"{name},{grade},0,," for name, grade in labels[mode].items()] + [",,,,"]
        (root / "2. Groundtruths").mkdir(parents=True, exist_ok=True)
        (root / "2. Groundtruths" / csv_name).write_text("\n".join(lines) + "\n")
        for seed, (name, grade) in enumerate(labels[mode].items()):
            photo(root / "1. Original Images" / images / f"{name}.jpg", grade, first + seed)
    return labels


def write_folders(folder: Path, count: int = 30, split: bool = False,
                  kaggle_names: bool = False) -> dict[str, int]:
    """torchvision's ImageFolder tree: ``<grade>/<photo>`` (``train/`` and ``test/``
    above them with ``split``), grade folders named 0-4 or (``kaggle_names``) No_DR,
    Mild, Moderate, Severe, Proliferate_DR; photos in several formats."""
    names = ("No_DR", "Mild", "Moderate", "Severe", "Proliferate_DR")
    labels = {}
    for index, grade in enumerate(grades(count)):
        mode = ("test" if index % 4 == 0 else "train") if split else ""
        grade_folder = names[grade] if kaggle_names else str(grade)
        suffix = (".png", ".jpg", ".tif")[index % 3]
        name = f"photo{index:03d}"
        photo(folder / mode / grade_folder / f"{name}{suffix}", grade, index)
        labels[name] = grade
    return labels
