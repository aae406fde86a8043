"""The public DR data sets, each read exactly as its distributor ships it.

One reader, two kinds of layout:

* a labels table (APTOS 2019, Messidor-2 with Google's adjudicated grades, IDRiD):
  ``LABEL_TABLES`` says, per source, which CSV holds which column, where its photos
  are and how a name becomes a file; ``read_label_tables`` reads them all alike;
* ``folders``: torchvision's ``ImageFolder`` tree, one subfolder per grade
  (``read_image_folders``).

Every row and file is checked as the EyePACS sources' are (README "Bad input"): a
missing or unreadable CSV, a header without the expected columns, an empty, unsafe
or repeated name, a grade that is not 0-4 are problems that name the file and row;
missing, broken and black photos are found later, by downscale-images. Messidor-2's
ungradable photos (``adjudicated_gradable`` 0) are no problem of the data: they are
left out, counted and listed, never trained on or scored. These names carry no
patient, so the splits are per image and the leakage of a split is unknown.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retino.data.checks import Problem
from retino.data.layout import MODES, Split, check_rows
from retino.errors import DataError
from retino.grading import NUM_CLASS


@dataclass(frozen=True)
class LabelTable:
    """One labels CSV of a public set: where it is, which columns matter, its photos."""

    csv: str  # inside data/<source>
    images: str  # the photos' folder inside data/<source>
    name_column: str
    grade_column: str
    suffix: str  # added to a name cell to make its file name ("" when the cell has it)
    split: str | None = None  # the set's own split of these rows; None: split here
    gradable_column: str | None = None  # 0 there: an ungradable photo, left out


IDRID = "B. Disease Grading"
LABEL_TABLES: dict[str, tuple[LabelTable, ...]] = {
    # APTOS 2019 Blindness Detection (Kaggle): only train.csv is labelled
    "aptos": (LabelTable("train.csv", "train_images", "id_code", "diagnosis", ".png"),),
    # Messidor-2 with the adjudicated grades Google published (Krause et al. 2018)
    "messidor2": (LabelTable("messidor_data.csv", "IMAGES", "image_id",
                             "adjudicated_dr_grade", "",
                             gradable_column="adjudicated_gradable"),),
    # IDRiD, disease grading part, with its own train/test split
    "idrid": (
        LabelTable(f"{IDRID}/2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv",
                   f"{IDRID}/1. Original Images/a. Training Set", "Image name",
                   "Retinopathy grade", ".jpg", split="train"),
        LabelTable(f"{IDRID}/2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv",
                   f"{IDRID}/1. Original Images/b. Testing Set", "Image name",
                   "Retinopathy grade", ".jpg", split="test")),
}
# the grade subfolders of an ImageFolder tree: digits, or the names common on Kaggle
GRADE_FOLDERS = {**{str(g): g for g in range(NUM_CLASS)},
                 "No_DR": 0, "Mild": 1, "Moderate": 2, "Severe": 3, "Proliferate_DR": 4}


@dataclass
class PublicRows:
    """What a public set's files list: usable rows, each with its photo and its own
    split (None: the set has none), the problems, and the photos left out on purpose."""

    names: list[str]
    grades: list[int]
    photos: list[Path]
    splits: list[str | None]
    problems: list[Problem]
    excluded: list[Problem]  # ungradable photos: left out, never a reason to stop

    def split_given(self) -> dict[str, Split] | None:
        """The set's own train/test split, or None when it has none."""
        if not self.names or any(split is None for split in self.splits):
            return None
        return {mode: self.subset([i for i, s in enumerate(self.splits) if s == mode])
                for mode in MODES}

    def everything(self) -> Split:
        return Split(list(self.names), np.array(self.grades, dtype=np.int64))

    def subset(self, indices: list[int]) -> Split:
        return self.everything().subset(np.array(indices, dtype=np.int64))

    def photo_paths(self) -> dict[str, Path]:
        return dict(zip(self.names, self.photos))


def _header_index(header: list[str], table: LabelTable, path: Path) -> dict[str, int]:
    """Column positions of the table's columns; names match without surrounding spaces
    (IDRiD's header has a trailing one)."""
    cells = [cell.strip() for cell in header]
    wanted = [table.name_column, table.grade_column] + (
        [table.gradable_column] if table.gradable_column else [])
    missing = [column for column in wanted if column not in cells]
    if missing:
        raise DataError(f"{path} row 1: expected a header with the columns "
                        f"{', '.join(wanted)}; missing {', '.join(missing)} (found "
                        f"{', '.join(cells) or 'nothing'})")
    return {column: cells.index(column) for column in wanted}


def _table_rows(table: LabelTable, folder: Path) -> list[tuple[int, dict[str, str]]]:
    """(row number, {column: cell}) of every non-blank row below the header."""
    path = folder / table.csv
    if not path.is_file():
        raise DataError(f"{path}: file not found; see README 'Real data' for the layout "
                        "of this source")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row and one row per photo")
    index = _header_index(rows[0], table, path)
    found = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines and the trailing ",,," rows some exports have
        found.append((number, {column: row[i].strip() if i < len(row) else ""
                               for column, i in index.items()}))
    if not found:
        raise DataError(f"{path}: no photos listed below the header")
    return found


def read_label_tables(source: str, folder: Path) -> PublicRows:
    """Every labels CSV of ``source`` (a key of ``LABEL_TABLES``) under ``folder``."""
    rows = PublicRows([], [], [], [], [], [])
    for table in LABEL_TABLES[source]:
        path = folder / table.csv
        names, grades, numbers, files = [], [], [], []
        for number, cells in _table_rows(table, folder):
            if table.gradable_column and cells[table.gradable_column] == "0":
                rows.excluded.append(Problem(str(path), number, f"ungradable "
                                             f"({table.gradable_column} 0): left out"))
                continue
            names.append(_name_of(cells[table.name_column], table.suffix))
            files.append(cells[table.name_column] + table.suffix)
            grades.append(cells[table.grade_column])
            numbers.append(number)
        split, problems = check_rows(names, grades, path, path, row_numbers=numbers,
                                     eye_names=False)
        split, repeated = _new_names_only(split, set(rows.names), path)
        rows.problems += problems + repeated
        by_name = dict(zip(names, files))
        rows.names += split.names
        rows.grades += [int(g) for g in split.labels]
        rows.photos += [folder / table.images / by_name[name] for name in split.names]
        rows.splits += [table.split] * len(split)
    if not rows.names and not rows.problems:
        raise DataError(f"{folder}: every photo listed is ungradable; nothing to use")
    return rows


def _name_of(cell: str, suffix: str) -> str:
    """An image's name from its name cell: the cell itself (APTOS' id_code, IDRiD's
    Image name), or the file name's stem where the cell holds the file name with its
    extension (Messidor-2's image_id). A cell with a path in it stays whole, so that
    the row check refuses it as pointing outside the image folder."""
    if suffix or "/" in cell or "\\" in cell:
        return cell
    return Path(cell).stem


def _new_names_only(split: Split, earlier: set[str], path: Path
                    ) -> tuple[Split, list[Problem]]:
    """``split`` without the names an earlier labels file of the same set listed, and a
    problem for each of those."""
    repeated = [i for i, name in enumerate(split.names) if name in earlier]
    problems = [Problem(str(path), None, f"image name {split.names[i]!r} is also listed by "
                        "another labels file of this set") for i in repeated]
    keep = np.setdiff1d(np.arange(len(split)), repeated)
    return split.subset(keep), problems


def image_suffixes() -> set[str]:
    """The file extensions Pillow can open, lower case (``.png``, ``.jpg``, ``.tif`` ...)."""
    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


def read_image_folders(folder: Path) -> PublicRows:
    """An ``ImageFolder`` tree: ``<grade>/<photo>`` (one tree, split here) or
    ``train/<grade>/<photo>`` and ``test/<grade>/<photo>`` (the user's own split)."""
    given = [mode for mode in MODES if (folder / mode).is_dir()]
    if given and len(given) != len(MODES):
        raise DataError(f"{folder}: has {given[0]}/ but no "
                        f"{[m for m in MODES if m not in given][0]}/; give both (the "
                        "user's split) or neither (one tree of grade folders, split here)")
    rows = PublicRows([], [], [], [], [], [])
    for mode in given or [None]:
        _read_grade_folders(folder / mode if mode else folder, mode, rows)
    if not rows.names and not rows.problems:
        raise DataError(f"{folder}: no photos found; expected subfolders "
                        f"{', '.join(sorted(GRADE_FOLDERS))} holding the photos of each grade")
    return rows


def _read_grade_folders(tree: Path, mode: str | None, rows: PublicRows) -> None:
    suffixes, seen = image_suffixes(), set(rows.names)
    for entry in sorted(tree.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir() or entry.name not in GRADE_FOLDERS:
            rows.problems.append(Problem(str(entry), None, "not a grade folder; the grade "
                                         "folders are " + ", ".join(GRADE_FOLDERS)))
            continue
        for photo in sorted(entry.rglob("*")):
            if photo.is_dir() or photo.name.startswith("."):
                continue
            if photo.suffix.lower() not in suffixes:
                rows.problems.append(Problem(str(photo), None, f"not a photo Pillow reads "
                                             f"(extension {photo.suffix or 'none'!r})"))
            elif photo.stem in seen:
                rows.problems.append(Problem(str(photo), None, f"duplicate image name "
                                             f"{photo.stem!r} (names are file stems, one "
                                             "photo each)"))
            else:
                seen.add(photo.stem)
                rows.names.append(photo.stem)
                rows.grades.append(GRADE_FOLDERS[entry.name])
                rows.photos.append(photo)
                rows.splits.append(mode)
