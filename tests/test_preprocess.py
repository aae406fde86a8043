import numpy as np
import pytest
from PIL import Image, ImageDraw

from retino.layout import DataError
from retino.preprocess import downscale_one, eye_bounding_box, square_eye


def _off_centre_eye(width=600, height=300, cx=420, cy=140, radius=120) -> Image.Image:
    """A bright disc drawn right of centre on a wide, slightly noisy black canvas."""
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(0, 8, size=(height, width, 3), dtype=np.uint8))
    ImageDraw.Draw(canvas).ellipse((cx - radius, cy - radius, cx + radius, cy + radius),
                                   fill=(200, 90, 40))
    return canvas


def test_bounding_box_finds_the_eye():
    left, top, right, bottom = eye_bounding_box(np.asarray(_off_centre_eye()))
    assert (left, top, right, bottom) == pytest.approx((300, 20, 541, 261), abs=1)


def test_off_centre_eye_comes_out_centred_round_and_filling():
    out = np.asarray(square_eye(_off_centre_eye(), 128))
    assert out.shape == (128, 128, 3)
    eye = out.max(axis=2) > 60
    rows, cols = np.flatnonzero(eye.any(axis=1)), np.flatnonzero(eye.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height >= 124 and width >= 124  # fills the square
    assert abs(height - width) <= 2  # round, not an oval
    centre_y, centre_x = np.argwhere(eye).mean(axis=0)
    assert abs(centre_x - 63.5) < 1.5 and abs(centre_y - 63.5) < 1.5
    # a disc fills pi/4 of its bounding square
    assert eye.mean() == pytest.approx(np.pi / 4, abs=0.03)


def test_eye_cut_off_at_top_and_bottom_is_padded_not_stretched():
    out = np.asarray(square_eye(_off_centre_eye(width=500, height=200, cx=250, cy=100,
                                                radius=130), 100))
    eye = out.max(axis=2) > 60
    rows, cols = np.flatnonzero(eye.any(axis=1)), np.flatnonzero(eye.any(axis=0))
    assert cols[-1] - cols[0] + 1 >= 97  # the full width of the eye
    assert 72 <= rows[-1] - rows[0] + 1 <= 81  # 200/260 of it: black bands added, no squash


def test_large_photo_downscales_through_draft_mode(tmp_path):
    source = tmp_path / "big.jpeg"
    _off_centre_eye(width=3000, height=2000, cx=1500, cy=1000, radius=950).save(source)
    target = tmp_path / "small.jpeg"
    downscale_one(source, target, 64)
    with Image.open(target) as image:
        assert image.size == (64, 64)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.jpeg: image file not found"):
        downscale_one(tmp_path / "missing.jpeg", tmp_path / "out.jpeg", 32)
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpeg: not a readable image"):
        downscale_one(broken, tmp_path / "out.jpeg", 32)
    black = tmp_path / "black.jpeg"
    Image.new("RGB", (50, 40)).save(black)
    with pytest.raises(DataError, match="black.jpeg: no eye found"):
        downscale_one(black, tmp_path / "out.jpeg", 32)
    assert not (tmp_path / "out.jpeg").exists()
