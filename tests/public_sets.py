"""Tiny copies of the public DR sets, in each distributor's layout, with the real file
and column names, numbering, line endings and quirks: IDRiD's real label files (CRLF,
trailing empty columns, numbering restarted in each split, the header with and
without its trailing space), Messidor-2's mix of ``.png`` and ``.JPG`` and the copy
that renames its header, APTOS' 12-digit hex ids, an ungradable row, a missing
photo. Only the photos are drawn: small discs on black."""

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
    """``train.csv`` (``id_code,diagnosis``, LF line endings, ids of 12 hex digits as
    Kaggle's, ``000c1434d8d7``) and ``train_images/<id_code>.png``."""
    labels = {aptos_id(index): grade for index, grade in enumerate(grades(count))}
    lines = ["id_code,diagnosis"] + [f"{name},{grade}" for name, grade in labels.items()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_bytes(("\n".join(lines) + "\n").encode())
    for seed, (name, grade) in enumerate(labels.items()):
        if name != missing:
            photo(folder / "train_images" / f"{name}.png", grade, seed)
    return labels


def aptos_id(index: int) -> str:
    """The ``index``-th APTOS-like id: 12 lower-case hex digits."""
    return f"{(index * 2654435761 + 0x000c1434d8d7) % 16**12:012x}"


MESSIDOR_HEADERS = {  # Google's file, and a public copy that renames two columns
    "google": "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable",
    "renamed": "id_code,diagnosis,adjudicated_dme,adjudicated_gradable"}


def write_messidor2(folder: Path, count: int = 30, header: str = "google",
                    float_grades: bool = False, listed_suffix_case: str = "as files"
                    ) -> tuple[dict[str, int], str]:
    """``messidor_data.csv`` with Google's adjudicated grades and ``IMAGES/`` holding
    Messidor-Original's ``20051020_43808_0100_PP.png`` and Messidor-Extension's
    ``IM000001.JPG``; the last row is ungradable (empty grade cells, as pandas writes a
    missing value). ``float_grades``: grades written ``2.0``, as pandas exports a
    column with a gap; ``listed_suffix_case``: ``lower`` lists ``.jpg`` for files named
    ``.JPG``. Returns the gradable labels by name (the file stem) and the ungradable
    file name."""
    files = [f"20051020_{43808 + i}_0100_PP.png" if i % 2 else f"IM{i + 1:06d}.JPG"
             for i in range(count)]
    lines = [MESSIDOR_HEADERS[header]]
    labels = {}
    for seed, (file, grade) in enumerate(zip(files, grades(count))):
        listed = (file.rsplit(".", 1)[0] + "." + file.rsplit(".", 1)[1].lower()
                  if listed_suffix_case == "lower" else file)
        if seed == count - 1:
            lines.append(f"{listed},,,{'0.0' if float_grades else '0'}")
        else:
            cells = (f"{grade}.0,0.0,1.0" if float_grades else f"{grade},0,1")
            lines.append(f"{listed},{cells}")
            labels[Path(file).stem] = grade
        photo(folder / "IMAGES" / file, grade, seed)
    (folder / "messidor_data.csv").write_bytes(("\n".join(lines) + "\n").encode())
    return labels, files[-1]


IDRID_FILES = Path(__file__).parent / "data" / "idrid"  # the real label files (CC BY 4.0)
IDRID_SETS = {"train": ("a. Training Set", "a. IDRiD_Disease Grading_Training Labels.csv"),
              "test": ("b. Testing Set", "b. IDRiD_Disease Grading_Testing Labels.csv")}


def write_idrid(folder: Path, rows: int | None = None, header_space: bool = False
                ) -> dict[str, dict[str, int]]:
    """IDRiD's disease-grading part as distributed: its two real label files byte for
    byte (CRLF line endings, the training file's trailing empty columns, both numbered
    from ``IDRiD_001``), a drawn photo per row in the two image folders. ``rows``: only
    the first rows of each file (the rest of each line as distributed);
    ``header_space``: the header's ``Risk of macular edema `` with the trailing space
    some copies have. Returns the grades by split and name."""
    root, labels = folder / IDRID, {}
    for mode, (images, csv_name) in IDRID_SETS.items():
        lines = (IDRID_FILES / csv_name).read_bytes().split(b"\r\n")
        body = [line for line in lines[1:] if line][:rows]
        header = lines[0].replace(b"edema", b"edema ") if header_space else lines[0]
        (root / "2. Groundtruths").mkdir(parents=True, exist_ok=True)
        (root / "2. Groundtruths" / csv_name).write_bytes(b"\r\n".join([header, *body]) + b"\r\n")
        cells = [line.decode().split(",") for line in body]
        labels[mode] = {row[0]: int(row[1]) for row in cells}
        for seed, (name, grade) in enumerate(labels[mode].items()):
            photo(root / "1. Original Images" / images / f"{name}.jpg", grade,
                  seed + (1000 if mode == "test" else 0))
    return labels


def write_folders(folder: Path, count: int = 30, split: bool = False,
                  kaggle_names: bool = False, validation: str | None = None) -> dict[str, int]:
    """torchvision's ImageFolder tree: ``<grade>/<photo>`` (``train/`` and ``test/``
    above them with ``split``, and a validation folder named ``validation``, e.g.
    ``val``), grade folders named 0-4 or (``kaggle_names``) No_DR, Mild, Moderate,
    Severe, Proliferate_DR; photos in several formats."""
    names = ("No_DR", "Mild", "Moderate", "Severe", "Proliferate_DR")
    labels = {}
    for index, grade in enumerate(grades(count)):
        mode = ""
        if split:
            mode = "test" if index % 4 == 0 else (validation or "train") \
                if index % 4 == 1 else "train"
        grade_folder = names[grade] if kaggle_names else str(grade)
        suffix = (".png", ".jpg", ".tif")[index % 3]
        name = f"photo{index:03d}"
        photo(folder / mode / grade_folder / f"{name}{suffix}", grade, index)
        labels[name] = grade
    return labels
