"""retino predict and Grad-CAM: new photos graded as the pipeline would, and where the
model looks."""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from retino.data.photos import downscale_pixels
from retino.errors import DataError
from retino.predict import explanation_names, find_photos, predict
from retino.report.gradcam import explained_block, grad_cam
from retino.train.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from retino.train.inputs import ToModel
from retino.train.models import build_model

MEAN, STD = (0.5, 0.3, 0.2), (0.25, 0.2, 0.15)
SIZE = 32


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A retino model file as the train stage writes it (random weights)."""
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    path = tmp_path_factory.mktemp("models") / "resnet18-scratch.pt"
    save_checkpoint(path, model.state_dict(), arch="resnet18", init="scratch", num_class=5,
                    head="classification", epoch=1, phase="scratch", image_size=SIZE,
                    mean=list(MEAN), std=list(STD), weighted_loss=False, params={},
                    operating_points={"high_sensitivity": {"threshold": 0.2, "sensitivity": 99.0,
                                                           "specificity": 50.0},
                                      "high_specificity": {"threshold": 0.9, "sensitivity": 40.0,
                                                           "specificity": 99.0}})
    return path


@pytest.fixture(scope="module")
def photos(tiny_raw, tmp_path_factory) -> Path:
    """Raw photos of several kinds, one of them broken, in a folder with a sub-folder."""
    folder = tmp_path_factory.mktemp("photos")
    sources = sorted((tiny_raw / "data").glob("*.jpeg"))[:3]
    (folder / "clinic").mkdir()
    for source in sources[:2]:
        (folder / "clinic" / source.name).write_bytes(source.read_bytes())
    with Image.open(sources[2]) as image:
        image.convert("L").save(folder / "grey.png")  # another colour mode and format
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not a photo: not picked up from a folder")
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_grades_every_photo_and_names_the_broken_one(model_file, photos, tmp_path):
    found = find_photos([photos])
    assert [p.name for p in found][-1] == "grey.png" and "notes.txt" not in {p.name for p in found}
    summary = predict(model_file, found, tmp_path / "out.csv", "cpu", batch_size=2, workers=1,
                      explain_dir=tmp_path / "explain")
    assert (summary.graded, summary.failed) == (3, 1)
    rows = _rows(tmp_path / "out.csv")
    assert [Path(r["file"]).name for r in rows] == [p.name for p in found]
    broken = next(r for r in rows if r["file"].endswith("broken.jpg"))
    assert broken["grade"] == "" and "not a readable image" in broken["problem"]
    graded = [r for r in rows if not r["problem"]]
    for row in graded:
        probabilities = [float(row[f"p_grade_{g}"]) for g in range(5)]
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert int(row["grade"]) == int(np.argmax(probabilities))
        referable = float(row["referable_probability"])
        assert referable == pytest.approx(sum(probabilities[2:]), abs=1e-4)
        assert row["referable_high_sensitivity"] == str(int(referable >= 0.2))
        assert row["referable_high_specificity"] == str(int(referable >= 0.9))
    assert sorted(p.name for p in (tmp_path / "explain").iterdir()) == sorted(
        f"{Path(r['file']).stem}.png" for r in graded)


def test_predict_applies_the_checkpoints_preprocessing(model_file, photos, tmp_path):
    """The same probabilities as cropping, resizing and normalising by hand with the
    checkpoint's size and statistics."""
    photo = next(p for p in find_photos([photos]) if p.suffix == ".jpeg")
    predict(model_file, [photo], tmp_path / "one.csv", "cpu", workers=1)
    row = _rows(tmp_path / "one.csv")[0]
    checkpoint = load_checkpoint(model_file)
    model = model_from_checkpoint(checkpoint).eval()
    pixels = torch.from_numpy(downscale_pixels(photo, checkpoint["image_size"])[None].copy())
    with torch.no_grad():
        expected = torch.softmax(model(ToModel(MEAN, STD, torch.device("cpu"))(pixels)), 1)[0]
    assert [float(row[f"p_grade_{g}"]) for g in range(5)] == pytest.approx(
        expected.tolist(), abs=1e-5)


class Payload:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_a_model_file_that_is_not_safe_to_load_is_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as f:
        pickle.dump({"format": "retino-checkpoint-1", "payload": Payload()}, f)
    with pytest.raises(DataError, match="refused: it does not load with torch.load"):
        load_checkpoint(unsafe)


def test_cli_exit_status_and_summary_say_how_many_failed(model_file, photos, tmp_path):
    result = subprocess.run([sys.executable, "-m", "retino", "predict", "--model",
                             str(model_file), str(photos), "--out", str(tmp_path / "p.csv"),
                             "--device", "cpu", "--workers", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "graded 3 photo(s), 1 could not be read" in result.stderr
    assert len(_rows(tmp_path / "p.csv")) == 4


SIDE, SQUARE, BRIGHT = 96, 20, 3.0


def _images(count: int, rng: np.random.Generator, corner: tuple[int, int] | None = None,
            square: bool = True) -> torch.Tensor:
    """Noise images with a bright square (at a random place, or in the quarter whose top
    left is ``corner``), or without one but as bright overall, so that only the square
    itself can tell the two kinds apart."""
    images = torch.from_numpy(rng.normal(0, 0.3, size=(count, 3, SIDE, SIDE)).astype(np.float32))
    for image in images:
        if not square:
            image += BRIGHT * SQUARE * SQUARE / (SIDE * SIDE)
            continue
        low, high = (0, SIDE - SQUARE) if corner is None else (4, SIDE // 2 - SQUARE - 4)
        top, left = rng.integers(low, high, size=2) + (np.array(corner) if corner else 0)
        image[:, top:top + SQUARE, left:left + SQUARE] += BRIGHT
    return images


def test_predict_on_a_folder_without_photos_names_it_and_what_it_looked_for(model_file,
                                                                           tmp_path):
    # failed before: "graded 0 photo(s)" and exit status 0
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photo here")
    result = subprocess.run([sys.executable, "-m", "retino", "predict", "--model",
                             str(model_file), str(tmp_path / "empty")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    said = " ".join(result.stderr.split())
    assert f"{tmp_path / 'empty'}: no photos in it or its subfolders (looked for .bmp, " \
        ".gif, .jpeg, .jpg" in said
    assert not (tmp_path / "out").exists()


def test_grad_cam_peaks_where_the_evidence_is():
    """A model trained to tell photos with a bright square anywhere (grade 4) from photos
    as bright without one (grade 0) looks at the square, wherever it is put."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("resnet18", pretrained=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for _ in range(30):
        images = torch.cat([_images(8, rng), _images(8, rng, square=False)])
        model.train()
        loss = nn.functional.cross_entropy(model(images), torch.tensor([4] * 8 + [0] * 8))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    half = SIDE // 2
    for corner in ((0, 0), (half, half)):
        maps, outputs = grad_cam(model, _images(3, rng, corner), torch.full((3,), 4))
        assert (outputs.argmax(1) == 4).all()
        for heat in maps:
            peak = np.unravel_index(heat.argmax(), heat.shape)
            assert (peak[0] // half, peak[1] // half) == (corner[0] // half, corner[1] // half)
            inside = heat[corner[0]:corner[0] + half, corner[1]:corner[1] + half].mean()
            others = (4 * heat.mean() - inside) / 3  # the mean of the other three quarters
            assert inside > 1.25 * others, (inside, others)  # a 6x6 map, upsampled: broad


def test_the_explained_block_is_the_last_with_enough_positions():
    at = {96: {"layer4": (3, 3), "layer3": (6, 6), "layer2": (12, 12), "layer1": (24, 24)},
          512: {"layer4": (16, 16), "layer3": (32, 32), "layer2": (64, 64), "layer1": (128, 128)},
          32: {"layer4": (1, 1), "layer3": (2, 2), "layer2": (4, 4), "layer1": (8, 8)}}
    assert [explained_block(at[size]) for size in (96, 512, 32)] == ["layer3", "layer4", "layer1"]


def test_a_rerun_of_explain_replaces_its_own_pictures(model_file, photos, tmp_path):
    """Suffixes separate photos of one name within a run (two folders); a second run of
    the same photos writes the same files again, never retina-2.png beside retina.png."""
    found = [p for p in find_photos([photos]) if p.suffix == ".jpeg"][:1]
    twin = tmp_path / "other" / found[0].name
    twin.parent.mkdir()
    twin.write_bytes(found[0].read_bytes())
    for _ in range(2):
        predict(model_file, [found[0], twin], tmp_path / "out.csv", "cpu", workers=1,
                explain_dir=tmp_path / "explain")
        assert sorted(p.name for p in (tmp_path / "explain").iterdir()) == [
            f"{found[0].stem}-2.png", f"{found[0].stem}.png"]
    assert explanation_names([Path("a/x.jpg"), Path("b/x.png"), Path("x-2.jpg")]) == {
        Path("a/x.jpg"): "x.png", Path("b/x.png"): "x-2.png", Path("x-2.jpg"): "x-2-2.png"}
