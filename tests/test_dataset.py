import json
import shutil

import numpy as np
import pytest
import torch
from torchvision import transforms

from retino.data.arrays import array_path, iter_chunks
from retino.data.layout import read_layout, read_split
from retino.data.stats import channel_moments, stats_document
from retino.data.splits import patient_of
from retino.errors import DataError
from retino.lab import RetinopathyLoader, train_statistics, write_photo_statistics
from retino.train.inputs import ImageArray, ToModel, load_train_data
from tests.conftest import rgb_pixels

MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)
CPU = torch.device("cpu")


def test_lab_call_counts_every_row(tiny_raw, monkeypatch):
    monkeypatch.chdir(tiny_raw)
    loader = RetinopathyLoader(img_path="data", mode="train", mean=MEAN, std=STD)
    rows = (tiny_raw / "train_img.csv").read_text().splitlines()
    assert len(loader) == len(rows)
    assert loader.img_name[0] == rows[0]
    image, label = loader[0]
    height, width = rgb_pixels(tiny_raw / "data" / f"{rows[0]}.jpeg").shape[:2]
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert isinstance(label, int) and label == int((tiny_raw / "train_label.csv")
                                                   .read_text().split()[0])


def test_test_mode_is_tensor_then_normalised_and_never_augmented(tiny_raw):
    loader = RetinopathyLoader(tiny_raw / "data", "test", mean=MEAN, std=STD)
    expected = transforms.Normalize(MEAN, STD)(
        torch.from_numpy(rgb_pixels(tiny_raw / "data" / f"{loader.names[0]}.jpeg"))
        .permute(2, 0, 1).float() / 255.0)
    for _ in range(5):
        torch.testing.assert_close(loader[0][0], expected)


def test_train_mode_flips(tiny_raw):
    loader = RetinopathyLoader(tiny_raw / "data", "train", mean=MEAN, std=STD)
    torch.manual_seed(0)
    views = {tuple(loader[0][0].flatten()[:50].tolist()) for _ in range(30)}
    assert len(views) == 4  # identity, horizontal, vertical, both


def test_missing_stats_file_says_how_to_make_it(tiny_raw, tmp_path):
    with pytest.raises(FileNotFoundError, match="write one with "
                                                r"retino.lab.write_photo_statistics"):
        RetinopathyLoader(tiny_raw / "data", "test", stats_file=tmp_path / "none.json")


def test_the_lab_loader_normalises_with_statistics_of_the_photos_it_serves(
        tiny_raw, tiny_dataset, tmp_path, monkeypatch):
    """compute-stats describes the cropped, resized arrays: the loader neither picks up
    metrics/data_stats.json nor accepts it as stats_file; a file written for these
    photos is used as it is."""
    lab = tmp_path / "lab"  # a folder of its own: the computed statistics are remembered
    shutil.copytree(tiny_raw, lab)
    project = tmp_path / "project"
    (project / "metrics").mkdir(parents=True)
    splits = read_layout(tiny_dataset)  # what compute-stats writes for these photos' arrays
    arrays = stats_document(channel_moments(iter_chunks(array_path(tiny_dataset, "train"),
                                                        len(splits["train"]))), splits, 32)
    (project / "metrics" / "data_stats.json").write_text(json.dumps(arrays))
    monkeypatch.chdir(project)
    photos = train_statistics(lab / "data")
    loader = RetinopathyLoader(lab / "data", "train")
    assert tuple(loader.transform.transforms[-1].mean) == photos[0]
    assert photos[0] != tuple(arrays["mean"].values())
    with pytest.raises(DataError, match="describes the pipeline's cropped, padded and resized "
                                        "arrays .*not the photos of"):
        RetinopathyLoader(lab / "data", "test", stats_file="metrics/data_stats.json")
    write_photo_statistics(lab / "data", project / "photos.json")
    saved = RetinopathyLoader(lab / "data", "test", stats_file=project / "photos.json")
    assert tuple(saved.transform.transforms[-1].std) == photos[1]
    with pytest.raises(DataError, match="not the photos of"):  # written for another folder
        RetinopathyLoader(tiny_raw / "data", "test", stats_file=project / "photos.json")


def test_arrays_hold_the_csv_rows_in_order(tiny_dataset):
    images = ImageArray.from_split(tiny_dataset, "test")
    stored = np.load(array_path(tiny_dataset, "test"))
    assert len(images) == len(read_split(tiny_dataset, "test")) == len(stored)
    pixels, label = images[3]
    assert pixels.dtype == torch.uint8 and pixels.shape == (32, 32, 3)
    np.testing.assert_array_equal(pixels.numpy(), stored[3])
    assert label == int(read_split(tiny_dataset, "test").labels[3])


def test_device_normalisation_equals_to_tensor_then_normalize(tiny_dataset):
    images = ImageArray.from_split(tiny_dataset, "train")
    batch = torch.stack([images[i][0] for i in range(4)])
    expected = torch.stack([transforms.Normalize(MEAN, STD)(transforms.ToTensor()(p.numpy()))
                            for p in batch])
    torch.testing.assert_close(ToModel(MEAN, STD, CPU)(batch), expected)


def test_flips_are_the_four_views_and_repeat_with_the_seed():
    image = torch.arange(4 * 4 * 3, dtype=torch.uint8).view(1, 4, 4, 3)  # N x H x W x C
    as_is = ToModel((0, 0, 0), (1 / 255,) * 3, CPU)  # scale 1, shift 0: values unchanged
    chw = image[0].permute(2, 0, 1).float()
    views = [chw, chw.flip(2), chw.flip(1), chw.flip(1).flip(2)]
    flipped = as_is(image.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1)).clone()
    matches = [[i for i, view in enumerate(views) if torch.equal(f, view)] for f in flipped]
    assert all(len(m) == 1 for m in matches)  # every output is one of the four views
    assert {m[0] for m in matches} == {0, 1, 2, 3}  # and 32 draws meet all four
    again = as_is(image.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1))
    torch.testing.assert_close(flipped, again)
    assert all(torch.equal(f, chw) for f in as_is(image.repeat(8, 1, 1, 1)))  # no generator


def test_cpu_output_buffers_take_turns_and_never_alias_the_last_batch():
    to_model = ToModel(MEAN, STD, CPU)
    batches = [torch.full((2, 4, 4, 3), value, dtype=torch.uint8) for value in (10, 20, 30)]
    first, second = to_model(batches[0]), to_model(batches[1])
    assert first.data_ptr() != second.data_ptr()
    expected_first = first.clone()
    third = to_model(batches[2])
    assert third.data_ptr() == first.data_ptr()  # reused two calls later, as documented
    torch.testing.assert_close(to_model(batches[0]), expected_first)


def test_array_and_csv_disagreeing_is_an_error(tiny_dataset, tmp_path):
    for name in ("test_img.csv", "test_label.csv"):
        lines = (tiny_dataset / name).read_text().splitlines()[:-1]
        (tmp_path / name).write_text("".join(f"{line}\n" for line in lines))
    (tmp_path / "test.npy").write_bytes(array_path(tiny_dataset, "test").read_bytes())
    with pytest.raises(DataError, match="test.npy holds .* images but its CSV lists"):
        ImageArray.from_split(tmp_path, "test")


def test_validation_holdout_is_by_patient(tiny_dataset):
    data = load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)
    fit = {patient_of(n) for n in data.fit.names}
    held = {patient_of(n) for n in data.validation.names}
    assert fit and held and not fit & held
    assert len(data.fit) + len(data.validation) == len(read_split(tiny_dataset, "train"))


def test_lab_call_alone_computes_exact_train_statistics_once(tiny_raw, tmp_path, monkeypatch,
                                                             capsys):
    """The lab's script, run as it is in a lab-layout folder with no pipeline around it."""
    monkeypatch.chdir(tiny_raw)  # no metrics/data_stats.json here
    train = RetinopathyLoader(img_path="data", mode="train")
    test = RetinopathyLoader(img_path="data", mode="test")
    said = capsys.readouterr().err
    assert said.count("computing the exact train mean/std") == 1  # once, then remembered
    pixels = np.concatenate([rgb_pixels(tiny_raw / "data" / f"{n}.jpeg").reshape(-1, 3)
                             for n in read_split(tiny_raw, "train").names]) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    normalize = train.transform.transforms[-1]
    np.testing.assert_allclose(normalize.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(normalize.std, std, rtol=1e-9)
    assert test.transform.transforms[-1].mean == normalize.mean
    explicit = RetinopathyLoader("data", "test", mean=MEAN, std=STD)  # given values still win
    assert tuple(explicit.transform.transforms[-1].mean) == MEAN
