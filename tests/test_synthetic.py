import numpy as np

from retino.data.layout import read_layout
from retino.data.splits import patient_of
from retino.data.synthetic import GRADE_SHARES, make_patients, plan_dataset, render_eye, write_dataset


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_params_give_byte_identical_dataset(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, workers in ((first, 1), (second, 2)):
        write_dataset(folder, patients=12, canvas_height=48, test_fraction=0.25, seed=3,
                      workers=workers)
    assert _files(first) == _files(second)
    assert len(_files(first)) == 24 + 4
    other = tmp_path / "c"
    write_dataset(other, patients=12, canvas_height=48, test_fraction=0.25, seed=4, workers=1)
    assert _files(other) != _files(first)


def test_class_shares_follow_eyepacs_and_eyes_mostly_agree():
    _, grades = make_patients(5000, seed=1)
    shares = np.bincount(grades.ravel(), minlength=5) / grades.size
    assert np.allclose(shares, GRADE_SHARES, atol=0.012)
    same = (grades[:, 0] == grades[:, 1]).mean()
    assert 0.85 < same < 0.91  # EyePACS: 87.6 %


def test_split_is_by_patient_and_default_size_keeps_shares():
    splits, specs = plan_dataset(600, test_fraction=0.2, seed=2015)
    train = {patient_of(n) for n in splits["train"].names}
    test = {patient_of(n) for n in splits["test"].names}
    assert not train & test
    assert len(specs) == 1200
    labels = np.concatenate([s.labels for s in splits.values()])
    assert abs(np.mean(labels == 0) - 0.735) < 0.01
    assert set(np.unique(splits["train"].labels)) == {0, 1, 2, 3, 4}


def test_images_look_like_fundus_photos():
    image = np.asarray(render_eye(grade=0, eye="left", seed=1, index=0, canvas_height=128))
    height, width, _ = image.shape
    assert width > height  # a camera frame, not a square
    corner = image[:5, :5].astype(int)
    centre = image[height // 2 - 5:height // 2 + 5, width // 2 - 5:width // 2 + 5].astype(int)
    assert corner.max() < 20  # black surround
    r, g, b = centre.reshape(-1, 3).mean(axis=0)
    assert r > g > b and r > 80  # orange-red retina


def test_lesions_grow_with_grade():
    """Dark-red lesion pixels (haemorrhages, microaneurysms) rise from grade 0 to 3."""
    def dark_red_share(grade):
        shares = []
        for index in range(6):
            rgb = np.asarray(render_eye(grade, "right", 5, index, 160)).astype(int)
            retina = rgb.max(axis=2) > 40
            lesion = retina & (rgb[..., 0] < 0.62 * np.median(rgb[..., 0][retina]))
            shares.append(lesion.sum() / retina.sum())
        return np.mean(shares)
    shares = [dark_red_share(g) for g in (0, 2, 3)]
    assert shares[0] < shares[1] < shares[2]


def test_written_layout_reads_back(tmp_path):
    write_dataset(tmp_path, patients=10, canvas_height=40, test_fraction=0.3, seed=0, workers=1)
    splits = read_layout(tmp_path)
    assert len(splits["train"]) + len(splits["test"]) == 20
    assert all((tmp_path / "data" / f"{n}.jpeg").is_file() for n in splits["test"].names)
