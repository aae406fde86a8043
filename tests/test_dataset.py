import numpy as np
import pytest
import torch

from retino.dataset import RetinopathyLoader, load_train_data
from retino.layout import patient_of, read_split
from tests.conftest import rgb_pixels

MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)


def test_lab_call_counts_every_row(tiny_dataset, monkeypatch):
    monkeypatch.chdir(tiny_dataset.parent)
    loader = RetinopathyLoader(img_path=tiny_dataset / "data", mode="train", mean=MEAN, std=STD)
    rows = (tiny_dataset / "train_img.csv").read_text().splitlines()
    assert len(loader) == len(rows)
    assert loader.img_name[0] == rows[0]
    image, label = loader[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and label == int((tiny_dataset / "train_label.csv")
                                                   .read_text().split()[0])


def test_test_mode_is_tensor_then_normalised_and_never_augmented(tiny_dataset):
    loader = RetinopathyLoader(tiny_dataset / "data", "test", mean=MEAN, std=STD)
    expected = (torch.from_numpy(rgb_pixels(tiny_dataset / "data" / f"{loader.names[0]}.jpeg"))
                .permute(2, 0, 1).float() / 255.0 - torch.tensor(MEAN)[:, None, None]) \
        / torch.tensor(STD)[:, None, None]
    for _ in range(5):
        torch.testing.assert_close(loader[0][0], expected)


def test_train_mode_flips(tiny_dataset):
    loader = RetinopathyLoader(tiny_dataset / "data", "train", mean=MEAN, std=STD)
    torch.manual_seed(0)
    views = {tuple(loader[0][0].flatten()[:50].tolist()) for _ in range(30)}
    assert len(views) == 4  # identity, horizontal, vertical, both


def test_missing_stats_file_says_how_to_make_it(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro compute-stats"):
        RetinopathyLoader(tiny_dataset / "data", "test", stats_file=tmp_path / "none.json")


def test_validation_holdout_is_by_patient(tiny_dataset):
    data = load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    fit = {patient_of(n) for n in data.fit.names}
    held = {patient_of(n) for n in data.validation.names}
    assert fit and held and not fit & held
    assert len(data.fit) + len(data.validation) == len(read_split(tiny_dataset, "train"))
    assert data.fit_plain.names == data.fit.names
    np.testing.assert_array_equal(data.fit_plain.labels, data.fit.labels)
