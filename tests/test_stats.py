import numpy as np
import pytest

from retino.data import arrays
from retino.data.arrays import array_path, iter_chunks
from retino.data.layout import Split, read_split
from retino.data.stats import channel_moments, class_weights, leakage_document, stats_document
from retino.errors import DataError


def _train_chunks(folder):
    return iter_chunks(array_path(folder, "train"), len(read_split(folder, "train")))


def test_mean_std_equal_direct_numpy_computation(tiny_dataset, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 5 * 32 * 32 * 3)  # 5 images per chunk
    chunks = list(_train_chunks(tiny_dataset))
    assert len(chunks) > 2 and {len(c) for c in chunks[:-1]} == {5}
    moments = channel_moments(chunks)
    mean, std = moments.mean_std()
    pixels = np.load(array_path(tiny_dataset, "train")).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-9)
    assert moments.count == len(read_split(tiny_dataset, "train")) * 32 * 32


def test_class_weights_formula_and_absent_class():
    counts = np.array([70, 10, 10, 5, 5])
    np.testing.assert_allclose(class_weights(counts), 100 / (5 * counts))
    with pytest.raises(DataError, match=r"no images of grade\(s\) 4 \(proliferative\)"):
        class_weights(np.array([70, 10, 10, 5, 0]))


def test_stats_document_counts_and_baseline(tiny_dataset):
    splits = {m: read_split(tiny_dataset, m) for m in ("train", "test")}
    document = stats_document(channel_moments(_train_chunks(tiny_dataset)), splits, 32)
    assert (document["train_images"], document["test_images"]) == (
        len(splits["train"]), len(splits["test"]))
    test_counts = np.bincount(splits["test"].labels, minlength=5)
    assert document["baseline_acc"] == pytest.approx(
        100 * test_counts.max() / test_counts.sum())
    assert list(document["class_counts"]["test"].values()) == test_counts.tolist()
    assert document["test_images_with_other_eye_in_train"] == 0
    assert document["test_patient_leakage_percent"] == 0


def test_leakage_counts_test_images_whose_other_eye_is_in_train():
    train = Split(["1_left", "2_left", "2_right", "3_left"], np.zeros(4, dtype=np.int64))
    test = Split(["1_right", "3_right", "4_left", "4_right"], np.zeros(4, dtype=np.int64))
    leakage = leakage_document({"train": train, "test": test})
    assert leakage == {"test_images_with_other_eye_in_train": 2,
                       "test_patient_leakage_percent": 50.0}


def test_empty_train_split_is_an_error():
    with pytest.raises(DataError):
        channel_moments([])
    assert len(Split(names=[], labels=np.array([]))) == 0
