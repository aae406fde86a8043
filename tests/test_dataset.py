import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from retino.data.arrays import array_path, iter_chunks
from retino.data.layout import read_layout, read_split
from retino.data.stats import channel_moments, stats_document
from retino.data.splits import patient_holdout, patient_of
from retino.errors import DataError
from retino.data.photos import downscale_pixels
from retino.lab import (STATISTICS_FILE, RetinopathyLoader, _computed_statistics,
                        train_statistics, write_photo_statistics)
from retino.train.inputs import ImageArray, ToModel, load_train_data
from tests.conftest import rgb_pixels

MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)
CPU = torch.device("cpu")


@pytest.fixture
def lab(tiny_raw, tmp_path) -> Path:
    """A copy of the tiny lab-layout set of its own (the loader keeps its statistics
    file beside the photos)."""
    shutil.copytree(tiny_raw, tmp_path / "lab")
    return tmp_path / "lab"


def test_lab_call_counts_every_row(lab, monkeypatch):
    monkeypatch.chdir(lab)
    loader = RetinopathyLoader(img_path="data", mode="train", size=32, mean=MEAN, std=STD)
    rows = (lab / "train_img.csv").read_text().splitlines()
    assert len(loader) == len(rows)
    assert loader.img_name[0] == rows[0]
    image, label = loader[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and label == int((lab / "train_label.csv")
                                                   .read_text().split()[0])


def test_the_lab_loader_batches_the_projects_own_photos_at_a_size(lab, monkeypatch):
    # failed before: the synthetic photos differ in size, and the DataLoader stopped
    # with "stack expects each tensor to be equal size"
    monkeypatch.chdir(lab)
    images, labels = next(iter(DataLoader(RetinopathyLoader(img_path="data", mode="train",
                                                            size=32), batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    served = RetinopathyLoader(root="data", mode="test", size=32, mean=(0,) * 3, std=(1,) * 3)
    name = served.names[0]
    expected = downscale_pixels(lab / "data" / f"{name}.jpeg", 32)  # the pipeline's crop
    np.testing.assert_allclose(served[0][0].permute(1, 2, 0).numpy(), expected / 255.0,
                               atol=1e-6)
    with pytest.raises(DataError, match=r"not all square and of one size .*: pass size="):
        RetinopathyLoader(img_path="data", mode="train", mean=MEAN, std=STD)
    with pytest.raises(TypeError, match="img_path= or root=, not both"):
        RetinopathyLoader("data", "train", root="data")


def test_square_photos_of_one_size_are_served_as_they_are(lab, monkeypatch):
    for photo in (lab / "data").iterdir():
        Image.open(photo).resize((40, 40)).save(photo)
    loader = RetinopathyLoader(lab / "data", "test", mean=MEAN, std=STD)
    assert loader.image_size == 40 and loader[0][0].shape == (3, 40, 40)


def test_a_missing_csv_says_where_it_looked_and_why(lab, monkeypatch):
    monkeypatch.chdir(lab / "data")  # one folder too deep: the CSVs are above 'data'
    with pytest.raises(DataError, match=r"train_img.csv: not found. The lab's layout keeps "
                                        r"train_img.csv and train_label.csv in the folder "
                                        r"above the photo folder img_path='.'"):
        RetinopathyLoader(img_path=".", mode="train", size=32)


def test_test_mode_is_tensor_then_normalised_and_never_augmented(lab):
    for photo in (lab / "data").iterdir():
        Image.open(photo).resize((40, 40)).save(photo)
    loader = RetinopathyLoader(lab / "data", "test", mean=MEAN, std=STD)
    expected = transforms.Normalize(MEAN, STD)(
        torch.from_numpy(rgb_pixels(lab / "data" / f"{loader.names[0]}.jpeg"))
        .permute(2, 0, 1).float() / 255.0)
    for _ in range(5):
        torch.testing.assert_close(loader[0][0], expected)


def test_train_mode_flips(lab):
    loader = RetinopathyLoader(lab / "data", "train", size=32, mean=MEAN, std=STD)
    torch.manual_seed(0)
    views = {tuple(loader[0][0].flatten()[:50].tolist()) for _ in range(30)}
    assert len(views) == 4  # identity, horizontal, vertical, both


def test_missing_stats_file_says_how_to_make_it(lab, tmp_path):
    with pytest.raises(FileNotFoundError, match="write one with "
                                                r"retino.lab.write_photo_statistics"):
        RetinopathyLoader(lab / "data", "test", size=32, stats_file=tmp_path / "none.json")


def test_the_lab_loader_normalises_with_statistics_of_the_photos_it_serves(
        lab, tiny_dataset, tmp_path, monkeypatch):
    """compute-stats describes the arrays (here at 32 px): the loader (here at 48) neither
    picks up metrics/data_stats.json nor accepts it as stats_file; a file written for
    these photos at this size is used as it is."""
    project = tmp_path / "project"
    (project / "metrics").mkdir(parents=True)
    splits = read_layout(tiny_dataset)  # what compute-stats writes for these photos' arrays
    arrays = stats_document(channel_moments(iter_chunks(array_path(tiny_dataset, "train"),
                                                        len(splits["train"]))), splits, 32)
    (project / "metrics" / "data_stats.json").write_text(json.dumps(arrays))
    monkeypatch.chdir(project)
    photos = train_statistics(lab / "data", 48)
    loader = RetinopathyLoader(lab / "data", "train", size=48)
    assert tuple(loader.transform.transforms[-1].mean) == photos[0]
    assert photos[0] != tuple(arrays["mean"].values())
    with pytest.raises(DataError, match="describes the pipeline's cropped, padded and resized "
                                        "arrays .*not the photos of"):
        RetinopathyLoader(lab / "data", "test", size=48, stats_file="metrics/data_stats.json")
    write_photo_statistics(lab / "data", project / "photos.json", size=48)
    saved = RetinopathyLoader(lab / "data", "test", size=48, stats_file=project / "photos.json")
    assert tuple(saved.transform.transforms[-1].std) == photos[1]
    with pytest.raises(DataError, match="served at size=48, not at size=64"):
        RetinopathyLoader(lab / "data", "test", size=64, stats_file=project / "photos.json")
    other = tmp_path / "other"
    shutil.copytree(lab, other)
    with pytest.raises(DataError, match="not the photos of"):  # written for another folder
        RetinopathyLoader(other / "data", "test", size=48, stats_file=project / "photos.json")


def test_the_statistics_kept_beside_the_photos_serve_a_new_process_until_a_photo_changes(
        lab, capsys):
    # failed before: every new process decoded every training photo again (minutes for
    # the lab's 28,100 at 512 px)
    first = train_statistics(lab / "data", 32)
    assert (lab / STATISTICS_FILE).is_file()
    assert "computing the exact train mean/std" in capsys.readouterr().err
    _computed_statistics.clear()  # what a new process starts with
    assert train_statistics(lab / "data", 32) == first
    assert "computing" not in capsys.readouterr().err  # read from the kept file
    _computed_statistics.clear()
    assert train_statistics(lab / "data", 48) != first  # another size: computed again
    assert "another size: computing" in capsys.readouterr().err
    _computed_statistics.clear()
    name = (lab / "train_img.csv").read_text().split()[0]
    photo = lab / "data" / f"{name}.jpeg"
    Image.open(photo).transpose(Image.Transpose.FLIP_TOP_BOTTOM).rotate(7).save(photo)
    train_statistics(lab / "data", 32)
    assert "describes other photos or another size: computing" in capsys.readouterr().err


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


def test_the_holdout_takes_its_share_of_every_worse_eye_grade_for_every_seed():
    # patients whose first-listed eye is grade 0 and other eye grade 4 (or 2) belong to
    # grade 4 (or 2): a hold-out stratified by the first-listed eye would draw them as 0
    names, labels, worse = [], [], {}
    for patient, (left, right) in enumerate([(0, 4)] * 10 + [(0, 2)] * 10 + [(0, 0)] * 20
                                            + [(3, 1)] * 5 + [(1, 1)] * 5):
        names += [f"{patient}_left", f"{patient}_right"]
        labels += [left, right]
        worse[str(patient)] = max(left, right)
    fraction = 0.2
    expected = {grade: round(fraction * list(worse.values()).count(grade)) for grade in range(5)}
    for seed in range(20):
        _, held_out = patient_holdout(names, np.array(labels), fraction,
                                      np.random.default_rng(seed))
        held = {names[i].split("_")[0] for i in held_out}
        counts = {grade: sum(worse[p] == grade for p in held) for grade in range(5)}
        assert counts == expected, seed
        assert all(f"{p}_left" in [names[i] for i in held_out] for p in held)  # both eyes


def test_lab_call_alone_computes_exact_train_statistics_once(lab, monkeypatch, capsys):
    """The lab's script, run as it is in a lab-layout folder with no pipeline around it."""
    monkeypatch.chdir(lab)  # no metrics/data_stats.json here
    train = RetinopathyLoader(img_path="data", mode="train", size=32)
    test = RetinopathyLoader(img_path="data", mode="test", size=32)
    said = capsys.readouterr().err
    assert said.count("computing the exact train mean/std") == 1  # once, then remembered
    pixels = np.concatenate([downscale_pixels(lab / "data" / f"{n}.jpeg", 32).reshape(-1, 3)
                             for n in read_split(lab, "train").names]) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    normalize = train.transform.transforms[-1]
    np.testing.assert_allclose(normalize.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(normalize.std, std, rtol=1e-9)
    assert test.transform.transforms[-1].mean == normalize.mean
    explicit = RetinopathyLoader("data", "test", size=32, mean=MEAN, std=STD)  # given wins
    assert tuple(explicit.transform.transforms[-1].mean) == MEAN
