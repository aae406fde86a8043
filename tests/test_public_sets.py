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
from retino.data.sources import EXTERNAL_MODE, read_external, read_source
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
    assert source.photo("IM000001").name == "IM000001.JPG"
    assert source.photo("20051020_43809_0100_PP").name == "20051020_43809_0100_PP.png"


@pytest.mark.parametrize("header_space", [False, True])
def test_idrid_as_distributed_keeps_both_photos_of_each_repeated_number(tmp_path,
                                                                        header_space):
    # IDRiD's real label files: CRLF, trailing empty columns, the test photos numbered
    # again from IDRiD_001 (failed before: all 103 test rows were "also listed by another
    # labels file", so skip left no test image and stop stopped)
    labels = public_sets.write_idrid(tmp_path / "idrid", header_space=header_space)
    source = read_source("idrid", tmp_path / "idrid", False, 0.2, 0)
    assert not source.resplit and source.problems == []
    assert [len(source.splits[m]) for m in ("train", "test")] == [413, 103]
    for mode in ("train", "test"):
        split = source.splits[mode]
        assert all(name.startswith(f"{mode}:") for name in split.names)
        assert dict(zip([n.rpartition(":")[2] for n in split.names], split.labels.tolist())) == \
            labels[mode]
    assert source.photo("test:IDRiD_001").parent.name == "b. Testing Set"
    assert source.photo("train:IDRiD_001").parent.name == "a. Training Set"
    resplit = read_source("idrid", tmp_path / "idrid", True, 0.2, 0)  # data.resplit: true
    assert resplit.resplit and len(resplit.splits["test"]) + len(resplit.splits["train"]) == 516


def test_idrids_two_photos_numbered_001_stay_apart_downscaled_and_as_an_external_set(tmp_path):
    labels = public_sets.write_idrid(tmp_path / "idrid", rows=6)
    source = read_source("idrid", tmp_path / "idrid", False, 0.2, 0)
    splits, skipped = prepare_downscaled(source, tmp_path / "out", 32, 1, "stop")
    written = read_layout(tmp_path / "out", eye_names=False)
    assert written["test"].names[0] == "test:IDRiD_001" and skipped == []
    assert written["train"].names[0] == "train:IDRiD_001"
    external = read_external("idrid", tmp_path / "idrid", "all").splits[EXTERNAL_MODE]
    assert len(set(external.names)) == len(external) == 12  # not 6: every photo scored
    assert external.names == sorted(external.names)
    assert dict(zip(external.names, external.labels.tolist()))["test:IDRiD_001"] == \
        labels["test"]["IDRiD_001"]


def test_a_name_a_set_repeats_in_one_split_or_an_eye_name_in_two_is_a_problem(tmp_path):
    folder = tmp_path / "f"
    public_sets.photo(folder / "train" / "0" / "10_left.png", 0, 1)
    public_sets.photo(folder / "train" / "1" / "11_left.png", 1, 2)
    public_sets.photo(folder / "test" / "0" / "10_left.png", 0, 1)  # the same eye twice
    public_sets.photo(folder / "test" / "2" / "11_right.png", 2, 3)
    source = read_source("folders", folder, False, 0.2, 0)
    assert source.splits["test"].names == ["11_right"]  # EyePACS names stay as they are
    assert [p.what for p in source.problems] == [
        "image '10_left' is also in the train split; an image belongs to one split"]


@pytest.mark.parametrize("kaggle_names", [False, True])
def test_folders_read_grades_from_the_folder_names(tmp_path, kaggle_names):
    labels = public_sets.write_folders(tmp_path / "f", kaggle_names=kaggle_names)
    source = read_source("folders", tmp_path / "f", False, 0.2, 0)
    assert _labels(source) == labels and source.problems == [] and source.resplit
    given = public_sets.write_folders(tmp_path / "g", split=True)
    own = read_source("folders", tmp_path / "g", False, 0.2, 0)
    assert not own.resplit and _labels(own) == given
    assert set(own.splits["test"].names) == {f"photo{i:03d}" for i in range(0, 30, 4)}


@pytest.mark.parametrize("validation", ["val", "valid", "validation"])
def test_a_val_folder_is_the_users_validation_split_used_instead_of_a_hold_out(tmp_path,
                                                                            validation):
    # failed before: data/folders/{train,val,test} read train and test, and the val/
    # photos were neither used nor listed anywhere
    labels = public_sets.write_folders(tmp_path / "f", count=40, split=True,
                                       validation=validation)
    source = read_source("folders", tmp_path / "f", False, 0.2, 0)
    assert list(source.splits) == ["train", "val", "test"] and source.problems == []
    assert set(source.splits["val"].names) == {f"photo{i:03d}" for i in range(1, 40, 4)}
    assert sum(len(split) for split in source.splits.values()) == len(labels)
    prepare_downscaled(source, tmp_path / "out", 32, 1, "stop")
    data = load_train_data(tmp_path / "out", (0.5,) * 3, (0.2,) * 3, 0.15, 0)
    assert data.validation_given and data.validation.names == source.splits["val"].names
    assert data.fit.names == source.splits["train"].names  # no hold-out drawn from train
    everything = read_external("folders", tmp_path / "f", "all").splits[EXTERNAL_MODE]
    assert len(everything) == len(labels)


def test_an_unknown_folder_beside_the_split_folders_stops_naming_it(tmp_path):
    public_sets.write_folders(tmp_path / "f", count=12, split=True)
    (tmp_path / "f" / "extra" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match=r"/f/extra: a folder beside the split folders "
                                        r"train/, test/; the split folders are train/, "
                                        r"test/, val/, valid/, validation/"):
        read_source("folders", tmp_path / "f", False, 0.2, 0)


@pytest.mark.parametrize("header", ["google", "renamed"])
def test_messidor2_as_found_any_header_float_grades_and_either_extension_case(tmp_path,
                                                                          header):
    # failed before: the renamed header stopped, "2.0" was no grade, and a listed
    # IM000001.jpg did not find IM000001.JPG
    labels, _ = public_sets.write_messidor2(tmp_path / "m2", header=header,
                                            float_grades=True, listed_suffix_case="lower")
    source = read_source("messidor2", tmp_path / "m2", False, 0.2, 0)
    assert source.problems == [] and _labels(source) == labels and len(source.excluded) == 1
    assert source.photo("IM000001").name == "IM000001.JPG"


def test_two_photos_that_differ_only_by_the_case_of_the_extension_are_a_named_problem(tmp_path):
    public_sets.write_messidor2(tmp_path / "m2", count=6)
    images = tmp_path / "m2" / "IMAGES"
    (images / "IM000001.jpg").write_bytes((images / "IM000001.JPG").read_bytes())
    problems = [str(p) for p in read_source("messidor2", tmp_path / "m2", False, 0.2, 0).problems]
    assert problems == [f"{tmp_path / 'm2' / 'messidor_data.csv'} row 2: IM000001.JPG and "
                        f"IM000001.jpg in {images} differ only by the case of the extension: "
                        "keep one"]


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
                                        r"id_code, diagnosis \(found image, level\)"):
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
    labels = public_sets.write_aptos(tmp_path / "aptos", missing=public_sets.aptos_id(3))
    source = read_source("aptos", tmp_path / "aptos", False, 0.2, 0)
    with pytest.raises(DataError, match=rf"{public_sets.aptos_id(3)}.png: image file not found"):
        prepare_downscaled(source, tmp_path / "stop", 32, 1, "stop")
    splits, skipped = prepare_downscaled(source, tmp_path / "out", 32, 1, "skip")
    assert [Path(p.file).name for p in skipped] == [f"{public_sets.aptos_id(3)}.png"]
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
