"""The public DR data sets, each read exactly as its distributor ships it.

One reader, two kinds of layout:

* a labels table (APTOS 2019, Messidor-2 with Google's adjudicated grades, IDRiD):
  ``LABEL_TABLES`` says, per source, which CSV holds which column, where its photos
  are and how a name becomes a file; ``read_label_tables`` reads them all alike;
* ``folders``: torchvision's ``ImageFolder`` tree, one subfolder per grade
  (``read_image_folders``).

Every row and file is checked as the EyePACS sources' are (docs/data.md, "Bad input"): a
missing or unreadable CSV, a header without the expected columns, an empty, unsafe
or repeated name, a grade that is not 0-4 are problems that name the file and row;
missing, broken and black photos are found later, by downscale-images. Messidor-2's
ungradable photos (``adjudicated_gradable`` 0) are no problem of the data: they are
left out, counted and listed, never trained on or scored. These names carry no
patient, so the splits are per image and the leakage of a split is unknown.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from retino.data.checks import Problem
from retino.data.layout import (EYE_NAME, MODES, QUALIFIER, SPLIT_ORDER, VALIDATION, Split,
                                check_rows, grade_of)
from retino.errors import DataError
from retino.grading import NUM_CLASS


@dataclass(frozen=True)
class LabelTable:
    """One labels CSV of a public set: where it is, which columns matter, its photos."""

    csv: str  # inside data/<source>
    images: str  # the photos' folder inside data/<source>
    # (name column, grade column) of each header the set is found with, first = usual
    headers: tuple[tuple[str, str], ...]
    suffix: str  # added to a name cell to make its file name ("" when the cell has it)
    split: str | None = None  # the set's own split of these rows; None: split here
    gradable_column: str | None = None  # 0 there: an ungradable photo, left out


IDRID = "B. Disease Grading"
LABEL_TABLES: dict[str, tuple[LabelTable, ...]] = {
    # APTOS 2019 Blindness Detection (Kaggle): only train.csv is labelled
    "aptos": (LabelTable("train.csv", "train_images", (("id_code", "diagnosis"),), ".png"),),
    # Messidor-2 with the adjudicated grades Google published (Krause et al. 2018); a
    # public copy renames the two columns as APTOS names them
    "messidor2": (LabelTable("messidor_data.csv", "IMAGES",
                             (("image_id", "adjudicated_dr_grade"), ("id_code", "diagnosis")),
                             "", gradable_column="adjudicated_gradable"),),
    # IDRiD, disease grading part, with its own train/test split (each numbered from 001)
    "idrid": (
        LabelTable(f"{IDRID}/2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv",
                   f"{IDRID}/1. Original Images/a. Training Set",
                   (("Image name", "Retinopathy grade"),), ".jpg", split="train"),
        LabelTable(f"{IDRID}/2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv",
                   f"{IDRID}/1. Original Images/b. Testing Set",
                   (("Image name", "Retinopathy grade"),), ".jpg", split="test")),
}
# the grade subfolders of an ImageFolder tree: digits, or the names common on Kaggle
GRADE_FOLDERS = {**{str(g): g for g in range(NUM_CLASS)},
                 "No_DR": 0, "Mild": 1, "Moderate": 2, "Severe": 3, "Proliferate_DR": 4}
# the split folders of an ImageFolder tree, and the split each one is
SPLIT_FOLDERS = {"train": "train", "test": "test", VALIDATION: VALIDATION,
                 "valid": VALIDATION, "validation": VALIDATION}


@dataclass
class PublicRows:
    """What a public set's files list: usable rows, each with its photo and its own
    split (None: the set has none), the problems, and the photos left out on purpose."""

    names: list[str] = field(default_factory=list)
    grades: list[int] = field(default_factory=list)
    photos: list[Path] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    excluded: list[Problem] = field(default_factory=list)  # ungradable: never a reason to stop

    def add(self, name: str, grade: int, photo: Path, split: str | None) -> None:
        self.names.append(name)
        self.grades.append(grade)
        self.photos.append(photo)
        self.splits.append(split)

    def split_given(self) -> dict[str, Split] | None:
        """The set's own splits (train, test, and val where it has one), or None when it
        has none."""
        if not self.names or any(split is None for split in self.splits):
            return None
        return {mode: self.subset([i for i, s in enumerate(self.splits) if s == mode])
                for mode in SPLIT_ORDER if mode in self.splits or mode in MODES}

    def everything(self) -> Split:
        return Split(list(self.names), np.array(self.grades, dtype=np.int64))

    def subset(self, indices: list[int]) -> Split:
        return self.everything().subset(np.array(indices, dtype=np.int64))

    def photo_paths(self) -> dict[str, Path]:
        return dict(zip(self.names, self.photos))


def _header_index(header: list[str], table: LabelTable, path: Path) -> dict[str, int]:
    """Which cell of a row holds what: ``{"name": i, "grade": j, "gradable": k}`` for the
    first of the table's headers that ``header`` has; names match without surrounding
    spaces (IDRiD's header has a trailing one in some copies)."""
    cells = [cell.strip() for cell in header]
    gradable = (table.gradable_column,) if table.gradable_column else ()
    for name, grade in table.headers:
        if all(column in cells for column in (name, grade, *gradable)):
            roles = {"name": name, "grade": grade, **({"gradable": gradable[0]}
                                                       if gradable else {})}
            return {role: cells.index(column) for role, column in roles.items()}
    wanted = " or ".join(", ".join((*columns, *gradable)) for columns in table.headers)
    raise DataError(f"{path} row 1: expected a header with the columns {wanted} (found "
                    f"{', '.join(cells) or 'nothing'})")


def _table_rows(table: LabelTable, folder: Path) -> list[tuple[int, dict[str, str]]]:
    """(row number, {role: cell}) of every non-blank row below the header."""
    path = folder / table.csv
    if not path.is_file():
        raise DataError(f"{path}: file not found; see docs/data.md for the layout "
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
        found.append((number, {role: row[i].strip() if i < len(row) else ""
                               for role, i in index.items()}))
    if not found:
        raise DataError(f"{path}: no photos listed below the header")
    return found


def read_label_tables(source: str, folder: Path) -> PublicRows:
    """Every labels CSV of ``source`` (a key of ``LABEL_TABLES``) under ``folder``."""
    rows = PublicRows()
    for table in LABEL_TABLES[source]:
        _read_label_table(table, folder, rows)
    if not rows.names and not rows.problems:
        raise DataError(f"{folder}: every photo listed is ungradable; nothing to use")
    return names_unique_in_set(rows)


def _read_label_table(table: LabelTable, folder: Path, rows: PublicRows) -> None:
    """Add the usable rows of one labels CSV to ``rows``, its problems and the
    ungradable photos it lists."""
    path, photos = folder / table.csv, PhotoFolder(folder / table.images)
    names, grades, numbers, files = [], [], [], []
    for number, cells in _table_rows(table, folder):
        if "gradable" in cells and grade_of(cells["gradable"]) == 0:
            rows.excluded.append(Problem(str(path), number, f"ungradable "
                                         f"({table.gradable_column} 0): left out"))
            continue
        names.append(_name_of(cells["name"], table.suffix))
        files.append(cells["name"] + table.suffix)
        grades.append(cells["grade"])
        numbers.append(number)
    split, problems = check_rows(names, grades, path, path, row_numbers=numbers,
                                 eye_names=False)
    same_split = {n for n, s in zip(rows.names, rows.splits) if s == table.split}
    split, repeated = _new_names_only(split, same_split, path)
    rows.problems += problems + repeated
    by_name = dict(zip(names, zip(files, numbers)))
    for name, grade in zip(split.names, split.labels):
        file, number = by_name[name]
        photo, problem = photos.find(file)
        if problem:
            rows.problems.append(Problem(str(path), number, problem))
        else:
            rows.add(name, int(grade), photo, table.split)


class PhotoFolder:
    """The files of one photo folder, found by name with the extension's case free
    (``IM000001.JPG`` listed, ``IM000001.jpg`` on disk): distributors' labels files and
    photos do not always agree on it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._by_key: dict[str, list[str]] = {}
        if folder.is_dir():
            for entry in os.scandir(folder):
                self._by_key.setdefault(_case_free(entry.name), []).append(entry.name)

    def find(self, file: str) -> tuple[Path, str | None]:
        """(the photo's path, None), or (the listed path, the problem) when two files
        differ only by the case of the extension. A photo not there keeps the listed
        path: downscaling reports it missing."""
        found = sorted(self._by_key.get(_case_free(file), []))
        if len(found) > 1:
            return self.folder / file, (f"{' and '.join(found)} in {self.folder} differ only "
                                        "by the case of the extension: keep one")
        return self.folder / (found[0] if found else file), None


def _case_free(file: str) -> str:
    """A file name with its extension in lower case (the stem as it is)."""
    stem, dot, suffix = file.rpartition(".")
    return f"{stem}.{suffix.lower()}" if dot else file


def names_unique_in_set(rows: PublicRows) -> PublicRows:
    """``rows`` with one name per photo across the set's own splits.

    Within a split a repeated name is already a problem. Across splits a name may
    repeat for two reasons: an EyePACS name (``10_left``) names one eye of one
    patient, so a second listing is the same photo in two splits, a problem (the
    later one is left out, as the lab layout's); any other name is a number a set may
    restart in each split (IDRiD numbers its training photos ``IDRiD_001`` to
    ``IDRiD_413`` and its testing photos again from ``IDRiD_001``), so every name of
    such a set is prefixed with its split: ``train:IDRiD_001``, ``test:IDRiD_001``."""
    first: dict[str, int] = {}
    keep = []
    for index, name in enumerate(rows.names):
        if name not in first:
            first[name] = index
        elif EYE_NAME.fullmatch(name):
            rows.problems.append(Problem(str(rows.photos[index]), None, f"image {name!r} is "
                                         f"also in the {rows.splits[first[name]]} split; an "
                                         "image belongs to one split"))
            continue
        keep.append(index)
    renumbered = len({rows.names[i] for i in keep}) < len(keep)
    kept = PublicRows(problems=rows.problems, excluded=rows.excluded)
    for i in keep:
        name = f"{rows.splits[i]}{QUALIFIER}{rows.names[i]}" if renumbered else rows.names[i]
        kept.add(name, rows.grades[i], rows.photos[i], rows.splits[i])
    return kept


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
    """``split`` without the names an earlier labels file of the same split listed, and a
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
    ``train/<grade>/<photo>`` and ``test/<grade>/<photo>``, with ``val/`` (or
    ``valid/``, ``validation/``) beside them when the user has a validation split."""
    splits = _split_folders(folder)
    rows = PublicRows()
    for entry, mode in splits.items() or [(None, None)]:
        _read_grade_folders(folder / entry if entry else folder, mode, rows)
    if not rows.names and not rows.problems:
        raise DataError(f"{folder}: no photos found; expected subfolders "
                        f"{', '.join(sorted(GRADE_FOLDERS))} holding the photos of each grade")
    return names_unique_in_set(rows)


def _split_folders(folder: Path) -> dict[str, str]:
    """``{folder name: split}`` of a tree split by the user (empty for one tree of grade
    folders); any other folder beside the split folders stops, naming it."""
    entries = [e for e in sorted(folder.iterdir()) if e.is_dir() and not e.name.startswith(".")]
    splits = dict(sorted(((e.name, SPLIT_FOLDERS[e.name]) for e in entries
                          if e.name in SPLIT_FOLDERS), key=lambda i: SPLIT_ORDER.index(i[1])))
    if not splits:
        return {}
    missing = [mode for mode in MODES if mode not in splits.values()]
    if missing:
        raise DataError(f"{folder}: has {next(iter(splits))}/ but no {missing[0]}/; give "
                        "train/ and test/ (the user's split, with val/ if you have one) or "
                        "none of them (one tree of grade folders, split here)")
    other = [e.name for e in entries if e.name not in SPLIT_FOLDERS]
    if other:
        raise DataError(f"{folder / other[0]}: a folder beside the split folders "
                        f"{', '.join(f'{name}/' for name in splits)}; the split folders are "
                        f"{', '.join(f'{name}/' for name in SPLIT_FOLDERS)} (move it out)")
    validation = [name for name, mode in splits.items() if mode == VALIDATION]
    if len(validation) > 1:
        raise DataError(f"{folder}: has {' and '.join(f'{n}/' for n in validation)}; one "
                        "validation folder, please")
    return splits


def _read_grade_folders(tree: Path, mode: str | None, rows: PublicRows) -> None:
    suffixes, seen = image_suffixes(), set()
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
                rows.add(photo.stem, GRADE_FOLDERS[entry.name], photo, mode)
