"""A photo in, the eye out: read any colour mode upright, crop the black border around
the eye, pad to a square, resize.

Kaggle 2015's winning preprocessing kept the eye round: squashing a wide photo into a
square turns the eye into an oval and distorts lesion shapes. So the eye's bounding
box is cut out, padded with black to a square around its centre, and only then
resized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, UnidentifiedImageError

from retino.errors import DataError

# A pixel belongs to the eye when its brightest channel exceeds this (0-255):
# camera borders are near-black but noisy and JPEG-smeared, rarely above ~10.
EYE_THRESHOLD = 20
# Rows/columns with fewer eye pixels than this fraction of the longest run are
# border noise (text overlays, sensor hot pixels), not eye.
MIN_LINE_FRACTION = 0.02


def eye_bounding_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the eye in an H x W x 3 uint8 image.

    Raises ``ValueError`` when nothing is brighter than the border threshold.
    """
    mask = rgb.max(axis=2) > EYE_THRESHOLD
    cols, rows = mask.sum(axis=0), mask.sum(axis=1)
    keep_cols = np.flatnonzero(cols > MIN_LINE_FRACTION * max(cols.max(), 1))
    keep_rows = np.flatnonzero(rows > MIN_LINE_FRACTION * max(rows.max(), 1))
    if not mask.any() or keep_cols.size == 0 or keep_rows.size == 0:
        raise ValueError("no eye found: the image is black")
    return int(keep_cols[0]), int(keep_rows[0]), int(keep_cols[-1]) + 1, int(keep_rows[-1]) + 1


def square_eye(image: Image.Image, size: int) -> Image.Image:
    """The eye of ``image`` cropped, padded to a centred square, resized to ``size``."""
    image = image.convert("RGB")
    left, top, right, bottom = eye_bounding_box(np.asarray(image))
    eye = image.crop((left, top, right, bottom))
    side = max(eye.size)
    square = Image.new("RGB", (side, side))
    square.paste(eye, ((side - eye.width) // 2, (side - eye.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode photos arrive in.

    Plain ``convert('RGB')`` gets three cases wrong: 16-bit grey clips everything
    above 255 to white (it is rescaled here, 65535 -> 255); 32-bit ``I`` images
    holding 16-bit values likewise; and transparent pixels of RGBA/LA/palette images
    keep whatever colour they hide (they become black here, the fundus background).
    CMYK, greyscale, palette and YCbCr go through Pillow's own conversion.
    """
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if image.mode in SIXTEEN_BIT_MODES or values.max() > 255:
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGB", rgba.size)
        black.paste(rgba, mask=rgba.getchannel("A"))
        return black
    return image.convert("RGB")


def file_problem(path: Path) -> str | None:
    """What makes ``path`` unusable before decoding it (missing or empty), if anything."""
    if not path.is_file():
        return "image file not found"
    if path.stat().st_size == 0:
        return "image file is empty (0 bytes)"
    return None


def open_photo(path: Path, size: int) -> Image.Image:
    """Open a fundus photo as upright 8-bit RGB; a bad file names itself."""
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        with Image.open(path) as image:
            # JPEG draft mode decodes multi-megapixel photos at 1/2..1/8 scale
            # directly, never below twice the target size: far less work.
            image.draft("RGB", (2 * size, 2 * size))
            upright = ImageOps.exif_transpose(image)  # camera orientation tag
            upright.load()
            return to_rgb(upright)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None


# Ben Graham's Kaggle 2015 preprocessing: subtract the local average colour, a
# Gaussian blur whose standard deviation is 1/30 of the eye's radius (10 px at his
# 300 px radius), scaled 4x around mid-grey; mask the rim, where the blur runs off
# the eye, outside 90 % of the radius.
GRAHAM_BLUR = 1 / 30
GRAHAM_GAIN = 4.0
GRAHAM_MASK = 0.9


def graham(rgb: np.ndarray) -> np.ndarray:
    """Graham's preprocessing of a square eye image (the eye fills the square, as
    ``square_eye`` leaves it): local contrast around grey 128, rim black."""
    size = rgb.shape[0]
    radius = size / 2
    blurred = np.asarray(Image.fromarray(rgb).filter(
        ImageFilter.GaussianBlur(radius * GRAHAM_BLUR)), dtype=np.float32)
    contrast = GRAHAM_GAIN * (rgb.astype(np.float32) - blurred) + 128
    ys, xs = np.mgrid[0:size, 0:size]
    inside = (ys + 0.5 - radius) ** 2 + (xs + 0.5 - radius) ** 2 <= (GRAHAM_MASK * radius) ** 2
    return np.where(inside[..., None], np.clip(np.rint(contrast), 0, 255), 0).astype(np.uint8)


PREPROCESSORS = {"none": lambda rgb: rgb, "graham": graham}


def downscale_pixels(source: Path, size: int, preprocess: str = "none") -> np.ndarray:
    """The eye of one photo cropped, padded square, resized (``size x size x 3`` uint8)
    and preprocessed (``data.preprocess``: none or graham)."""
    image = open_photo(source, size)
    try:
        return PREPROCESSORS[preprocess](np.asarray(square_eye(image, size)))
    except ValueError as error:
        raise DataError(f"{source}: {error}") from None


def downscale_job(job: tuple[Path, int, str]) -> np.ndarray | str:
    """Worker entry point: the pixels, or the problem text for a bad image."""
    source, size, preprocess = job
    try:
        return downscale_pixels(source, size, preprocess)
    except DataError as error:
        return str(error).removeprefix(f"{source}: ")


def input_preview(source: Path, size: int) -> Image.Image:
    """The photo and what a network at ``size`` px sees of it under each
    ``data.preprocess`` choice, side by side with captions (``retino preview``)."""
    photo = open_photo(source, 4 * size)
    photo.thumbnail((size, size))  # keeps its shape; centred on black below
    framed = Image.new("RGB", (size, size))
    framed.paste(photo, ((size - photo.width) // 2, (size - photo.height) // 2))
    panels = [("photo", np.asarray(framed))]
    panels += [(f"preprocess: {name}", downscale_pixels(source, size, name))
               for name in PREPROCESSORS]
    return captioned_sheet(panels, columns=len(panels))


def caption_font() -> ImageFont.ImageFont:
    """Pillow's own scalable font (its default bitmap font draws a space as nothing:
    "as downscaled" came out "asdownscaled")."""
    return ImageFont.load_default(size=12)


def captioned_sheet(panels: list[tuple[str, np.ndarray]], columns: int) -> Image.Image:
    """Square ``H x H x 3`` images in rows of ``columns``, each under its caption."""
    size, caption_height, gap = panels[0][1].shape[0], 18, 8
    font = caption_font()
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (columns * (size + gap), rows * (size + caption_height + gap)),
                      "white")
    for index, (caption, pixels) in enumerate(panels):
        left = (index % columns) * (size + gap)
        top = (index // columns) * (size + caption_height + gap)
        sheet.paste(Image.fromarray(pixels), (left, top + caption_height))
        ImageDraw.Draw(sheet).text((left + 2, top + 2), caption, fill=(0, 0, 0), font=font)
    return sheet
