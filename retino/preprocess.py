"""Crop the black border around the eye, pad to a square, resize.

Kaggle 2015's winning preprocessing kept the eye round: squashing a wide photo into a
square turns the eye into an oval and distorts lesion shapes. So the eye's bounding
box is cut out, padded with black to a square around its centre, and only then
resized.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retino.layout import DataError, image_path

# A pixel belongs to the eye when its brightest channel exceeds this (0-255):
# camera borders are near-black but noisy and JPEG-smeared, rarely above ~10.
EYE_THRESHOLD = 20
# Rows/columns with fewer eye pixels than this fraction of the longest run are
# border noise (text overlays, sensor hot pixels), not eye.
MIN_LINE_FRACTION = 0.02
JPEG_QUALITY = 95


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


def open_photo(path: Path, size: int) -> Image.Image:
    """Open a fundus photo for downscaling to ``size``; a bad file names itself."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        image = Image.open(path)
        # JPEG draft mode decodes multi-megapixel photos at 1/2..1/8 scale directly,
        # never below twice the target size, which keeps downscaling fast.
        image.draft("RGB", (2 * size, 2 * size))
        image = ImageOps.exif_transpose(image)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    return image


def downscale_one(source: Path, target: Path, size: int) -> None:
    """Crop/pad/resize one photo into ``target`` (JPEG, 4:4:4 to keep small red lesions)."""
    image = open_photo(source, size)
    try:
        squared = square_eye(image, size)
    except ValueError as error:
        raise DataError(f"{source}: {error}") from None
    squared.save(target, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _downscale_job(args: tuple[str, str, str, int]) -> str:
    name, source_folder, target_folder, size = args
    downscale_one(image_path(source_folder, name), image_path(target_folder, name), size)
    return name


def default_workers(workers: int) -> int:
    """``0`` means one worker per available CPU core."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def downscale_folder(names: Iterable[str], source_folder: Path, target_folder: Path,
                     size: int, workers: int, on_image: Callable[[], None] = lambda: None) -> None:
    """Downscale every named image from ``source_folder`` into ``target_folder``."""
    target_folder.mkdir(parents=True, exist_ok=True)
    jobs = [(name, str(source_folder), str(target_folder), size) for name in names]
    with ProcessPoolExecutor(max_workers=default_workers(workers)) as pool:
        for _ in pool.map(_downscale_job, jobs, chunksize=8):
            on_image()
