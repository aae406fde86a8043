"""Where the photos come from: ``data.source`` picks one folder, ``data/<source>``.

* ``synthetic`` -> ``data/synthetic``, made by the synthesize stage (lab layout);
* ``lab``       -> ``data/lab``: the lab's ``data/<name>.jpeg`` plus its four
  headerless CSVs (see ``retino.data.layout``); its split is per image, so the
  other eye of most test patients is in train; ``data.resplit: true`` replaces
  it with a patient-level split;
* ``kaggle``    -> ``data/kaggle``: Kaggle's ``train/<name>.jpeg`` plus
  ``trainLabels.csv`` (header ``image,level``); there is no test split, so one is
  always made here, by patient;
* ``aptos``, ``messidor2``, ``idrid``, ``folders``: the public DR sets as their
  distributors ship them, and torchvision's ``ImageFolder`` tree
  (``retino.data.public_sets``); their names carry no patient, so a split made here
  is per image and the leakage unknown. IDRiD (and a ``folders`` tree with
  ``train/`` and ``test/``) bring their own split, which ``data.resplit`` replaces.

Patient-level splits are stratified by each patient's worse eye, with
``data.resplit_test_fraction`` of the patients in test and ``data.split_seed``
fixing the draw.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from retino.data.checks import Problem
from retino.data.layout import (EXTERNAL_MODE, IMAGE_FOLDER, Split, check_rows, image_path,
                                read_layout_rows)
from retino.data.public_sets import LABEL_TABLES, read_image_folders, read_label_tables
from retino.data.splits import patient_split
from retino.errors import DataError

KAGGLE_LABELS = "trainLabels.csv"
KAGGLE_IMAGES = "train"
KAGGLE_HEADER = ["image", "level"]


def source_folder(source: str) -> Path:
    """The folder each source lives in, relative to the project root (``source`` is one
    of ``retino.params.SOURCES``, checked when params.yaml is read)."""
    return Path("data") / source


def missing_folders(data_source: str, external: tuple[str, ...]) -> list[str]:
    """``data.source`` and ``external.source`` entries whose folder is not there, each in
    words (the synthetic set is made by its own stage, so it is never missing here)."""
    named = [("data.source", data_source)] + [("external.source", s) for s in external]
    return [f"{key} = {source!r}: {source_folder(source)}/ not found; see docs/data.md "
            "for what goes there" for key, source in named
            if source != "synthetic" and not source_folder(source).is_dir()]


def external_split_problems(external: tuple[str, ...], split: str) -> list[str]:
    """``external.split: test`` with an external set that has no test split of its own,
    in words."""
    if split != "test":
        return []
    return [f"external.split = 'test' with external.source = [{source}]: {source} has no "
            "test split of its own (the test split is the set's, never one drawn here with "
            "the training data's params); use external.split: all"
            for source in external if not has_own_test_split(source)]


@dataclass(frozen=True)
class SourceData:
    """The splits to train and test on, where their images are, what was left out."""

    image_folder: Path
    splits: dict[str, Split]
    problems: list[Problem]
    resplit: bool  # True: the split was made here (by patient where names say it)
    photo_paths: dict[str, Path] | None = None  # name -> photo; None: image_path's rule
    excluded: list[Problem] = field(default_factory=list)  # ungradable: always left out

    def photo(self, name: str) -> Path:
        """Where the photo of image ``name`` is."""
        if self.photo_paths is not None:
            return self.photo_paths[name]
        return image_path(self.image_folder, name)


def read_kaggle_labels(path: Path) -> tuple[Split, list[Problem]]:
    """Rows of Kaggle's ``trainLabels.csv``; ``row`` numbers count the header as row 1."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; the kaggle source needs Kaggle's "
                        f"{KAGGLE_LABELS} beside the {KAGGLE_IMAGES}/ image folder")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or [cell.strip() for cell in rows[0]] != KAGGLE_HEADER:
        found = rows[0] if rows else "nothing"
        raise DataError(f"{path} row 1: expected the header image,level, found {found}")
    if len(rows) == 1:
        raise DataError(f"{path}: no images listed below the header")
    numbered = list(enumerate(rows[1:], start=2))
    problems = [Problem(str(path), number, f"expected 2 columns (image,level), found "
                        f"{len(row)}") for number, row in numbered if len(row) != 2]
    good = [(number, row) for number, row in numbered if len(row) == 2]
    split, row_problems = check_rows([row[0].strip() for _, row in good],
                                     [row[1].strip() for _, row in good], path, path,
                                     row_numbers=[number for number, _ in good])
    return split, sorted(problems + row_problems, key=lambda p: p.row or 0)


def read_source(source: str, folder: Path, resplit: bool, test_fraction: float,
                seed: int) -> SourceData:
    """Read ``folder`` as ``source`` and return the splits to use (CSV checks only)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found for data.source = {source!r}"
                        + ("; run `dvc repro synthesize`" if source == "synthetic" else
                           "; see docs/data.md for what goes there"))
    if source in LABEL_TABLES or source == "folders":
        return read_public_set(source, folder, resplit, test_fraction, seed)
    if source == "kaggle":
        everything, problems = read_kaggle_labels(folder / KAGGLE_LABELS)
        splits = patient_split(everything.names, everything.labels, test_fraction, seed)
        return SourceData(folder / KAGGLE_IMAGES, splits, problems, resplit=True)
    splits, problems = read_layout_rows(folder)
    if resplit:
        everything = Split.joined(list(splits.values()))
        splits = patient_split(everything.names, everything.labels, test_fraction, seed)
    return SourceData(folder / IMAGE_FOLDER, splits, problems, resplit=resplit)


def read_external(source: str, folder: Path, split: str) -> SourceData:
    """``source`` as an external test set (``external.split``): every usable image
    (``all``) or the set's own test split (``test``; a set without one stops), as the
    one split ``EXTERNAL_MODE``, in the order of the names: nothing of the training
    data's params (its split seed, its test fraction) decides which images or in what
    order."""
    data = read_source(source, folder, False, 0.5, 0)  # a split drawn here is not used
    if split == "test" and data.resplit:
        raise DataError(f"{folder}: external.split = 'test' takes the set's own test split, "
                        f"and {source} has none; use external.split: all")
    chosen = (data.splits["test"] if split == "test"
              else Split.joined(list(data.splits.values())))
    return replace(data, splits={EXTERNAL_MODE: chosen.subset(np.argsort(chosen.names,
                                                                          kind="stable"))})


OWN_TEST_SPLIT = ("synthetic", "lab", "idrid")  # always; a folders tree with train/ and test/


def has_own_test_split(source: str) -> bool:
    """Whether ``source`` brings a test split of its own (``external.split: test`` takes
    it): ``OWN_TEST_SPLIT``, or a ``folders`` tree with ``train/`` and ``test/``."""
    if source == "folders":
        return (source_folder(source) / "test").is_dir()
    return source in OWN_TEST_SPLIT


def read_public_set(source: str, folder: Path, resplit: bool, test_fraction: float,
                    seed: int) -> SourceData:
    """A public set (``retino.data.public_sets``): its own split, or (none given, or
    ``data.resplit``) one made here."""
    rows = (read_image_folders(folder) if source == "folders"
            else read_label_tables(source, folder))
    given = None if resplit else rows.split_given()
    splits = given or patient_split(rows.names, rows.everything().labels, test_fraction, seed)
    return SourceData(folder, splits, rows.problems, resplit=given is None,
                      photo_paths=rows.photo_paths(), excluded=rows.excluded)
