import numpy as np
import pytest

from retino.layout import DataError, Split, image_path, read_split
from retino.stats import channel_moments, class_weights, stats_document
from tests.conftest import rgb_pixels


def test_mean_std_equal_direct_numpy_computation(tiny_dataset):
    train = read_split(tiny_dataset, "train")
    paths = [image_path(tiny_dataset / "data", n) for n in train.names]
    moments = channel_moments(paths)
    mean, std = moments.mean_std()
    pixels = np.concatenate([rgb_pixels(p).reshape(-1, 3) for p in paths]) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-9)
    assert moments.count == len(paths) * 32 * 32


def test_class_weights_formula_and_absent_class():
    counts = np.array([70, 10, 10, 5, 5])
    np.testing.assert_allclose(class_weights(counts), 100 / (5 * counts))
    with pytest.raises(DataError, match=r"no images of grade\(s\) 4 \(proliferative\)"):
        class_weights(np.array([70, 10, 10, 5, 0]))


def test_stats_document_counts_and_baseline(tiny_dataset):
    splits = {m: read_split(tiny_dataset, m) for m in ("train", "test")}
    paths = [image_path(tiny_dataset / "data", n) for n in splits["train"].names]
    document = stats_document(channel_moments(paths), splits, 32)
    assert document["images"] == {m: len(s) for m, s in splits.items()}
    test_counts = np.bincount(splits["test"].labels, minlength=5)
    assert document["majority_baseline_test_accuracy"] == pytest.approx(
        100 * test_counts.max() / test_counts.sum())
    assert list(document["class_counts"]["test"].values()) == test_counts.tolist()


def test_empty_train_split_is_an_error():
    with pytest.raises(DataError):
        channel_moments([])
    assert len(Split(names=[], labels=np.array([]))) == 0
