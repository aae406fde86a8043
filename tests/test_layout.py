from pathlib import Path

import pytest

from retino.data.layout import read_layout, read_split, read_split_rows
from retino.errors import DataError


def _write(folder, mode, names, labels):
    (folder / f"{mode}_img.csv").write_text("".join(f"{n}\n" for n in names))
    (folder / f"{mode}_label.csv").write_text("".join(f"{v}\n" for v in labels))


def test_every_row_is_read_including_the_first(tmp_path):
    _write(tmp_path, "train", ["2576_right", "10_left", "10_right"], [1, 0, 0])
    split = read_split(tmp_path, "train")
    assert split.names == ["2576_right", "10_left", "10_right"]  # pd.read_csv() ate row 1
    assert split.labels.tolist() == [1, 0, 0]


@pytest.mark.parametrize("names, labels, message", [
    (["1_left", "1_right"], [0, 7], "train_label.csv row 2: label '7' is not a grade"),
    (["1_left", "1_right"], [0, "x"], "train_label.csv row 2: label 'x' is not a grade"),
    (["1_left", "1_right"], [0], "has 2 rows but .*train_label.csv has 1"),
    (["1_left", "1_left"], [0, 0], "train_img.csv row 2: duplicate image name '1_left'"),
    (["../etc/passwd", "1_left"], [0, 0], "row 1: image name '../etc/passwd' points outside"),
    (["1_left", "scan0042"], [0, 0], r"train_img.csv row 2: image name 'scan0042' is not "
                                     r"<patient>_<left\|right>"),
    (["1_left", "7_centre"], [0, 0], "row 2: image name '7_centre' is not"),
])
def test_bad_csv_rows_are_named(tmp_path, names, labels, message):
    _write(tmp_path, "train", names, labels)
    with pytest.raises(DataError, match=message):
        read_split(tmp_path, "train")


def test_empty_split_and_missing_file(tmp_path):
    _write(tmp_path, "test", [], [])
    with pytest.raises(DataError, match="test_img.csv"):
        read_split(tmp_path, "test")
    with pytest.raises(DataError, match="train_img.csv: file not found"):
        read_split(tmp_path, "train")


def test_image_in_both_splits_is_an_error(tmp_path):
    _write(tmp_path, "train", ["1_left", "2_left"], [0, 0])
    _write(tmp_path, "test", ["2_left"], [0])
    with pytest.raises(DataError, match="test_img.csv: image '2_left' is also in the train"):
        read_layout(tmp_path)


def test_row_problems_are_all_collected_with_the_usable_rows(tmp_path):
    _write(tmp_path, "train", ["1_left", "1_right", "1_left", "", "2_left", "sub/2_right"],
           [0, "x", 2, 0, 4, 1])
    split, problems = read_split_rows(tmp_path, "train")
    assert split.names == ["1_left", "2_left"] and split.labels.tolist() == [0, 4]
    assert [(Path(p.file).name, p.row) for p in problems] == [
        ("train_label.csv", 2), ("train_img.csv", 3), ("train_img.csv", 4),
        ("train_img.csv", 6)]
    assert "first at row 1" in problems[1].what
