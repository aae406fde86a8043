"""The public DR sets as sources: each layout read exactly as shipped, the bad-input
rules of every other source, per-image splits whose leakage is unknown."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from retino.data.checks import report_csv
from retino.data.downscale import prepare_downscaled
from retino.data.layout import read_layout
from retino.data.sources import read_source
from retino.data.splits import patient_leakage, patients_known
from retino.data.stats import leakage_document
from retino.errors import DataError
from retino.report.pairing import refuse_leaky_split
from retino.train.inputs import load_train_data
from tests import public_sets


def _labels(source) -> dict[str, int]:
    return {name: int(grade) for split in source.splits.values()
            for name, grade in zip(split.names, split.labels)}


def test_aptos_reads_every_row_with_its_grade_and_splits_per_image(tmp_path):
    labels = public_sets.write_aptos(tmp_path / "aptos")
    source = read_source("aptos", tmp_path / "aptos", False, 0.2, 0)
    assert _labels(source) == labels and source.problems == [] and source.resplit
    name = next(iter(labels))
    assert source.photo(name) == tmp_path / "aptos" / "train_images" / f"{name}.png"
    # per image, stratified by grade: round(0.2 x 6) = 1 of each grade's 6 images
    assert len(source.splits["test"]) == 5
    assert not patients_known(list(labels))
    assert patient_leakage(source.splits["train"].names, source.splits["test"].names) is None
    assert leakage_document(source.splits)["test_patient_leakage_percent"] is None


def test_messidor2_leaves_out_ungradable_photos_and_reads_both_extensions(tmp_path):
    labels, ungradable = public_sets.write_messidor2(tmp_path / "m2")
    source = read_source("messidor2", tmp_path / "m2", False, 0.2, 0)
    assert _labels(source) == labels and source.problems == []
    assert [p.what for p in source.excluded] == ["ungradable (adjudicated_gradable 0): left out"]
    assert source.excluded[0].row == 31 and Path(ungradable).stem not in _labels(source)
    assert source.photo("IM000000").name == "IM000000.JPG"
    assert source.photo("20051020_43809_0100_PP").name == "20051020_43809_0100_PP.png"


def test_idrid_keeps_its_own_split_and_reads_the_header_with_its_trailing_space(tmp_path):
    labels = public_sets.write_idrid(tmp_path / "idrid")
    source = read_source("idrid", tmp_path / "idrid", False, 0.2, 0)
    assert not source.resplit and source.problems == []
    for mode in ("train", "test"):
        split = source.splits[mode]
        assert dict(zip(split.names, split.labels.tolist())) == labels[mode]
    assert source.photo("IDRiD_501").parent.name == "b. Testing Set"
    resplit = read_source("idrid", tmp_path / "idrid", True, 0.2, 0)  # data.resplit: true
    assert resplit.resplit and len(resplit.splits["test"]) == 5  # round(0.2 x 7) per grade


@pytest.mark.parametrize("kaggle_names", [False, True])
def test_folders_read_grades_from_the_folder_names(tmp_path, kaggle_names):
    labels = public_sets.write_folders(tmp_path / "f", kaggle_names=kaggle_names)
    source = read_source("folders", tmp_path / "f", False, 0.2, 0)
    assert _labels(source) == labels and source.problems == [] and source.resplit
    given = public_sets.write_folders(tmp_path / "g", split=True)
    own = read_source("folders", tmp_path / "g", False, 0.2, 0)
    assert not own.resplit and _labels(own) == given
    assert set(own.splits["test"].names) == {f"photo{i:03d}" for i in range(0, 30, 4)}


def test_a_bad_grade_an_unsafe_name_and_a_repeat_are_named_with_file_and_row(tmp_path):
    folder = tmp_path / "aptos"
    public_sets.write_aptos(folder, count=10)
    path = folder / "train.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",7"  # row 3
    lines[3] = "../../etc/passwd,1"  # row 4
    lines.append(lines[5])  # row 12 repeats row 6
    path.write_text("\n".join(lines) + "\n")
    problems = [str(p) for p in read_source("aptos", folder, False, 0.2, 0).problems]
    assert problems[0] == f"{path} row 3: label '7' is not a grade; allowed: integers 0-4"
    assert problems[1].startswith(f"{path} row 4: image name '../../etc/passwd' points outside")
    assert problems[2].startswith(f"{path} row 12: duplicate image name")
    assert len(problems) == 3


def test_a_wrong_header_or_a_missing_file_stops_with_what_was_expected(tmp_path):
    folder = tmp_path / "aptos"
    public_sets.write_aptos(folder, count=10)
    (folder / "train.csv").write_text("image,level\n1,0\n")
    with pytest.raises(DataError, match=r"train.csv row 1: expected a header with the columns "
                                        r"id_code, diagnosis; missing id_code, diagnosis"):
        read_source("aptos", folder, False, 0.2, 0)
    with pytest.raises(DataError, match=r"messidor_data.csv: file not found"):
        read_source("messidor2", tmp_path / "aptos", False, 0.2, 0)


def test_a_tree_with_a_stray_file_or_folder_names_each(tmp_path):
    folder = tmp_path / "f"
    public_sets.write_folders(folder, count=10)
    (folder / "2" / "notes.txt").write_text("not a photo")
    (folder / "other").mkdir()
    problems = [str(p) for p in read_source("folders", folder, False, 0.2, 0).problems]
    assert f"{folder / '2' / 'notes.txt'}: not a photo Pillow reads (extension '.txt')" in problems
    assert any(p.startswith(f"{folder / 'other'}: not a grade folder") for p in problems)
    (folder / "train").mkdir()
    with pytest.raises(DataError, match="has train/ but no test/"):
        read_source("folders", folder, False, 0.2, 0)


def test_downscaling_a_public_set_lists_the_missing_photo_and_the_ungradable_one(tmp_path):
    labels = public_sets.write_aptos(tmp_path / "aptos", missing="0003c1434d8d03")
    source = read_source("aptos", tmp_path / "aptos", False, 0.2, 0)
    with pytest.raises(DataError, match=r"0003c1434d8d03.png: image file not found"):
        prepare_downscaled(source, tmp_path / "stop", 32, 1, "stop")
    splits, skipped = prepare_downscaled(source, tmp_path / "out", 32, 1, "skip")
    assert [Path(p.file).name for p in skipped] == ["0003c1434d8d03.png"]
    assert sum(len(s) for s in splits.values()) == len(labels) - 1
    written = read_layout(tmp_path / "out", eye_names=False)
    assert written["train"].names == splits["train"].names
    m2_labels, _ = public_sets.write_messidor2(tmp_path / "m2", count=12)
    m2 = read_source("messidor2", tmp_path / "m2", False, 0.2, 0)
    _, skipped = prepare_downscaled(m2, tmp_path / "m2out", 32, 1, "stop")  # never stops
    rows = list(csv.reader(report_csv(skipped).splitlines()))
    assert rows[1][1:] == ["13", "ungradable (adjudicated_gradable 0): left out"]


def test_a_public_set_trains_on_a_per_image_hold_out_and_refuses_eye_pairing(tmp_path):
    public_sets.write_aptos(tmp_path / "aptos", count=40)
    source = read_source("aptos", tmp_path / "aptos", False, 0.2, 0)
    prepare_downscaled(source, tmp_path / "out", 32, 1, "stop")
    data = load_train_data(tmp_path / "out", (0.5,) * 3, (0.2,) * 3, 0.15, 0)
    # 40 images: 2 of each grade's 8 in test; of the 30 left, 1 of each grade's 6 held out
    assert len(data.fit) == 25 and len(data.validation) == 5
    assert not set(data.fit.names) & set(data.validation.names)
    assert np.asarray(data.fit[0][0]).shape == (32, 32, 3)
    with pytest.raises(DataError, match="carry no patient"):
        refuse_leaky_split(None)
