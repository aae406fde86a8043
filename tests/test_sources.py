"""Data sources (synthetic/lab/kaggle), patient-level splits, and bad input: stop or skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from retino.data.arrays import array_path
from retino.data.checks import report_csv
from retino.data.downscale import prepare_downscaled
from retino.data.layout import Split, read_layout, write_split
from retino.data.sources import read_source
from retino.data.splits import patient_leakage, patient_of
from retino.errors import DataError
from tests.conftest import ROOT, tiny_params


def _kaggle_folder(lab: Path, target: Path, extra_rows: str = "") -> Path:
    """Kaggle's layout made from a lab-layout folder: train/<name>.jpeg + trainLabels.csv."""
    splits = read_layout(lab)
    shutil.copytree(lab / "data", target / "train")
    rows = [f"{n},{g}\n" for s in splits.values() for n, g in zip(s.names, s.labels)]
    (target / "trainLabels.csv").write_text("image,level\n" + "".join(rows) + extra_rows)
    return target


def _patients(split: Split) -> set[str]:
    return {patient_of(name) for name in split.names}


def test_kaggle_split_is_by_patient_stratified_and_seeded(tiny_raw, tmp_path):
    folder = _kaggle_folder(tiny_raw, tmp_path / "kaggle")
    data = read_source("kaggle", folder, resplit=False, test_fraction=0.3, seed=1)
    train, test = data.splits["train"], data.splits["test"]
    assert data.resplit and data.image_folder == folder / "train" and not data.problems
    assert not _patients(train) & _patients(test)
    assert len(train) + len(test) == 60 and len(_patients(test)) == pytest.approx(9, abs=2)
    worse: dict[str, int] = {}
    for split in (train, test):
        for name, grade in zip(split.names, split.labels):
            worse[patient_of(name)] = max(worse.get(patient_of(name), 0), int(grade))
    common = {g for g in range(5) if list(worse.values()).count(g) >= 4}
    assert common and all(g in test.labels and g in train.labels for g in common)  # stratified
    again = read_source("kaggle", folder, resplit=False, test_fraction=0.3, seed=1)
    assert again.splits["test"].names == test.names
    other = read_source("kaggle", folder, resplit=False, test_fraction=0.3, seed=2)
    assert other.splits["test"].names != test.names


def test_kaggle_rows_are_numbered_as_lines_of_the_file(tiny_raw, tmp_path):
    folder = _kaggle_folder(tiny_raw, tmp_path / "kaggle", "99_left,5\n99_right\n")
    problems = read_source("kaggle", folder, False, 0.3, 1).problems
    assert [(p.row, p.what.split(";")[0]) for p in problems] == [
        (62, "label '5' is not a grade"), (63, "expected 2 columns (image,level), found 1")]
    (folder / "trainLabels.csv").write_text("name,grade\n1_left,0\n")
    with pytest.raises(DataError, match="trainLabels.csv row 1: expected the header image,level"):
        read_source("kaggle", folder, False, 0.3, 1)


def test_lab_split_leakage_is_reported_and_resplit_removes_it(tiny_raw, tmp_path):
    lab = tmp_path / "lab"
    shutil.copytree(tiny_raw, lab)
    splits = read_layout(lab)
    names = splits["train"].names + splits["test"].names
    labels = np.concatenate([splits["train"].labels, splits["test"].labels])
    order = np.argsort(names)  # per image, as the lab did: alternate eyes between splits
    per_image = {"train": Split([names[i] for i in order[::2]], labels[order[::2]]),
                 "test": Split([names[i] for i in order[1::2]], labels[order[1::2]])}
    for mode, split in per_image.items():
        write_split(lab, mode, split)
    given = read_source("lab", lab, resplit=False, test_fraction=0.3, seed=0)
    assert patient_leakage(given.splits["train"].names, given.splits["test"].names) == 30
    resplit = read_source("lab", lab, resplit=True, test_fraction=0.3, seed=0)
    assert resplit.resplit
    assert patient_leakage(resplit.splits["train"].names, resplit.splits["test"].names) == 0
    assert sorted(resplit.splits["train"].names + resplit.splits["test"].names) == sorted(names)


def _break_some_inputs(lab: Path) -> dict[str, str]:
    """Damage five images and two CSV rows of a lab-layout copy; what each should say."""
    train = (lab / "train_img.csv").read_text().split()
    images = lab / "data"
    (images / f"{train[0]}.jpeg").unlink()
    (images / f"{train[1]}.jpeg").write_bytes(b"")
    whole = (images / f"{train[2]}.jpeg").read_bytes()
    (images / f"{train[2]}.jpeg").write_bytes(whole[: len(whole) // 2])
    (images / f"{train[3]}.jpeg").write_text("<html>not an image</html>")
    from PIL import Image
    Image.new("RGB", (40, 30)).save(images / f"{train[4]}.jpeg")
    labels = (lab / "train_label.csv").read_text().split()
    labels[5] = "7"
    (lab / "train_label.csv").write_text("".join(f"{v}\n" for v in labels))
    (lab / "train_img.csv").write_text("".join(f"{n}\n" for n in train + [train[6]]))
    (lab / "train_label.csv").write_text("".join(f"{v}\n" for v in labels + ["0"]))
    return {train[0]: "image file not found", train[1]: "image file is empty",
            train[2]: "truncated", train[3]: "not a readable image",
            train[4]: "no eye found", "row 6": "label '7' is not a grade",
            f"row {len(train) + 1}": f"duplicate image name '{train[6]}'"}


@pytest.fixture
def broken_lab(tiny_raw, tmp_path) -> tuple[Path, dict[str, str]]:
    lab = tmp_path / "lab"
    shutil.copytree(tiny_raw, lab)
    return lab, _break_some_inputs(lab)


def test_skip_leaves_bad_inputs_out_and_lists_each(broken_lab, tmp_path):
    lab, expected = broken_lab
    source = read_source("lab", lab, resplit=False, test_fraction=0.3, seed=0)
    splits, skipped = prepare_downscaled(source, tmp_path / "out", 32, 1, "skip")
    report = report_csv(skipped)
    assert report.splitlines()[0] == "file,row,problem" and len(skipped) == 7
    for where, what in expected.items():
        assert any(where in str(p) and what in str(p) for p in skipped), (where, what)
    stored = np.load(array_path(tmp_path / "out", "train"))
    rows = len((lab / "train_img.csv").read_text().split())
    assert len(splits["train"]) == len(stored) == rows - 7
    assert read_layout(tmp_path / "out")["train"].names == splits["train"].names


def test_stop_lists_every_problem_the_cheap_checks_find_before_any_image_work(broken_lab,
                                                                             tmp_path):
    # before: a stop on the CSV rows hid the missing and empty files until the next run
    lab, expected = broken_lab
    source = read_source("lab", lab, resplit=False, test_fraction=0.3, seed=0)
    with pytest.raises(DataError, match=r"4 bad input\(s\):\n.*row 6: label '7'.*\n.*duplicate"
                                        r"(.|\n)*data.on_bad_input: skip") as error:
        prepare_downscaled(source, tmp_path / "out", 32, 1, "stop")
    for name in list(expected)[:2]:  # missing and empty: found by listing the files
        assert f"{name}.jpeg: {expected[name]}" in str(error.value)
    assert "truncated" not in str(error.value)  # no photo was decoded
    assert "photos that fail to decode are found once these are fixed, so more may " \
        "follow" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_stop_lists_every_bad_image_by_file(broken_lab, tmp_path):
    lab, expected = broken_lab
    source = read_source("lab", lab, resplit=False, test_fraction=0.3, seed=0)
    source = type(source)(source.image_folder, source.splits, [], source.resplit)
    with pytest.raises(DataError, match="2 bad input") as missing:  # missing and empty
        prepare_downscaled(source, tmp_path / "a", 32, 1, "stop")
    for name in list(expected)[:2]:
        assert f"{name}.jpeg: {expected[name]}" in str(missing.value)


def test_a_split_emptied_by_skipping_is_an_error(tiny_raw, tmp_path):
    lab = tmp_path / "lab"
    shutil.copytree(tiny_raw, lab)
    for name in (lab / "test_img.csv").read_text().split():
        (lab / "data" / f"{name}.jpeg").write_bytes(b"")
    source = read_source("lab", lab, resplit=False, test_fraction=0.3, seed=0)
    with pytest.raises(DataError, match="no usable test images left after leaving out 18"):
        prepare_downscaled(source, tmp_path / "out", 32, 1, "skip")


def test_switching_to_kaggle_is_one_param(tiny_raw, tmp_path):
    """The downscale-images stage itself, run on a Kaggle folder after changing data.source."""
    _kaggle_folder(tiny_raw, tmp_path / "data" / "kaggle", "77_left,9\n")
    params = tiny_params()
    params["data"].update(source="kaggle", on_bad_input="skip")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "downscale_images.py"), "--out",
         "data/downscaled", "--skipped-out", "metrics/skipped_inputs.csv"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "split made here by patient" in result.stderr
    report = (tmp_path / "metrics" / "skipped_inputs.csv").read_text().splitlines()
    assert report[1].endswith("trainLabels.csv,62,label '9' is not a grade; allowed: integers 0-4")
    splits = read_layout(tmp_path / "data" / "downscaled")
    assert patient_leakage(splits["train"].names, splits["test"].names) == 0
    assert len(np.load(array_path(tmp_path / "data" / "downscaled", "test"))) == len(splits["test"])


def test_a_missing_source_folder_says_what_belongs_there(tmp_path):
    with pytest.raises(DataError, match="nope: folder not found for data.source = 'lab'; "
                                        "see docs/data.md"):
        read_source("lab", tmp_path / "nope", False, 0.2, 0)
    (tmp_path / "kaggle").mkdir()
    with pytest.raises(DataError, match="trainLabels.csv: file not found"):
        read_source("kaggle", tmp_path / "kaggle", False, 0.2, 0)
