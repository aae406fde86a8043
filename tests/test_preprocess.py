import numpy as np
import pytest
from PIL import Image, ImageDraw

from retino.data.photos import downscale_pixels, eye_bounding_box, square_eye
from retino.errors import DataError


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
    with Image.open(source) as image:
        image.draft("RGB", (128, 128))
        assert image.size == (375, 250)  # decoded at 1/8 scale, still >= 2 x 64
    assert downscale_pixels(source, 64).shape == (64, 64, 3)


def _reference(tmp_path) -> np.ndarray:
    path = tmp_path / "reference.png"
    _off_centre_eye(width=240, height=180, cx=120, cy=90, radius=80).save(path)
    return downscale_pixels(path, 32)


@pytest.mark.parametrize("mode, suffix", [("L", ".jpeg"), ("CMYK", ".jpeg"), ("P", ".png"),
                                          ("RGBA", ".png"), ("LA", ".png")])
def test_every_colour_mode_converts_to_the_same_eye(tmp_path, mode, suffix):
    reference = _reference(tmp_path).astype(int)
    path = tmp_path / f"eye{suffix}"
    eye = _off_centre_eye(width=240, height=180, cx=120, cy=90, radius=80)
    converted = eye.quantize(64) if mode == "P" else eye.convert(mode)  # adaptive palette
    converted.save(path)
    out = downscale_pixels(path, 32).astype(int)
    if mode in ("L", "LA"):  # grey: three equal channels at the reference's luminance
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        luminance = reference @ np.array([0.299, 0.587, 0.114])
        assert np.abs(out[..., 0] - luminance).mean() < 6
    else:
        assert np.abs(out - reference).mean() < 6


def test_transparent_pixels_become_black_not_their_hidden_colour(tmp_path):
    eye = _off_centre_eye(width=240, height=180, cx=120, cy=90, radius=80)
    rgba = Image.new("RGBA", eye.size, (255, 255, 255, 0))  # invisible white border
    mask = Image.new("L", eye.size, 0)
    ImageDraw.Draw(mask).ellipse((40, 10, 200, 170), fill=255)
    rgba.paste(eye, mask=mask)
    rgba.save(tmp_path / "eye.png")
    out = downscale_pixels(tmp_path / "eye.png", 32)
    assert out[0, 0].max() < 10 and out[16, 16].max() > 100  # corner black, eye bright


def test_sixteen_bit_grey_is_rescaled_not_clipped_to_white(tmp_path):
    eye = np.asarray(_off_centre_eye(width=240, height=180, cx=120, cy=90, radius=80)
                     .convert("L")).astype(np.uint16) * 257  # same picture, 0..65535
    Image.fromarray(eye).save(tmp_path / "eye16.png")
    with Image.open(tmp_path / "eye16.png") as image:
        assert image.mode in ("I;16", "I")
    out = downscale_pixels(tmp_path / "eye16.png", 32).astype(int)
    luminance = _reference(tmp_path) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - luminance).mean() < 6  # 65535-scale clipped would be 255


def test_exif_orientation_is_applied(tmp_path):
    eye = _off_centre_eye(width=240, height=180, cx=150, cy=70, radius=60)
    ImageDraw.Draw(eye).rectangle((100, 20, 130, 40), fill=(10, 250, 10))  # a green marker
    upright = tmp_path / "upright.jpeg"
    eye.transpose(Image.Transpose.ROTATE_180).save(upright, quality=95)
    tagged = tmp_path / "tagged.jpeg"
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: stored upside down, show rotated by 180
    eye.save(tagged, quality=95, exif=exif)
    difference = np.abs(downscale_pixels(tagged, 32).astype(int) -
                        downscale_pixels(upright, 32).astype(int))
    assert difference.mean() < 3


def test_unreadable_images_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="missing.jpeg: image file not found"):
        downscale_pixels(tmp_path / "missing.jpeg", 32)
    (tmp_path / "empty.jpeg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpeg: image file is empty"):
        downscale_pixels(tmp_path / "empty.jpeg", 32)
    (tmp_path / "text.jpeg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="text.jpeg: not a readable image"):
        downscale_pixels(tmp_path / "text.jpeg", 32)
    whole = tmp_path / "whole.jpeg"
    _off_centre_eye().save(whole)
    (tmp_path / "cut.jpeg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.jpeg: not a readable image .*truncated"):
        downscale_pixels(tmp_path / "cut.jpeg", 32)
    Image.new("RGB", (50, 40)).save(tmp_path / "black.jpeg")
    with pytest.raises(DataError, match="black.jpeg: no eye found"):
        downscale_pixels(tmp_path / "black.jpeg", 32)
