"""Downscaled images stored once as uint8 arrays: ``<folder>/<mode>.npy``, N x S x S x 3.

Decoding a JPEG costs far more than reading its pixels, so downscale-images decodes
every photo once and training reads raw pixels from a memory map every epoch (see
``bench/run.py`` for the measured difference). The files are plain ``.npy``:
``np.load('data/downscaled/train.npy', mmap_mode='r')`` opens one.

Writing streams one image at a time: the header is written first for zero rows
and rewritten with the real count at the end (numpy pads headers so that the row
count can grow in place), so memory stays flat however many images there are.
Reading for statistics streams fixed-size chunks with plain file reads, which,
unlike a memory map, keep the process's resident memory flat too.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from retino.errors import DataError

CHUNK_BYTES = 4 * 2**20  # read size of streaming passes: bounds their memory


def array_path(folder: str | Path, mode: str) -> Path:
    return Path(folder) / f"{mode}.npy"


def _header(rows: int, size: int) -> dict:
    return {"descr": "|u1", "fortran_order": False, "shape": (rows, size, size, 3)}


class ArrayWriter:
    """Append ``size x size x 3`` uint8 images to a ``.npy`` file, one at a time."""

    def __init__(self, file: BinaryIO, size: int):
        self._file, self.size, self.rows = file, size, 0
        np.lib.format.write_array_header_1_0(file, _header(0, size))
        self._data_offset = file.tell()

    def append(self, pixels: np.ndarray) -> None:
        if pixels.shape != (self.size, self.size, 3) or pixels.dtype != np.uint8:
            raise ValueError(f"expected {self.size}x{self.size}x3 uint8, got "
                             f"{pixels.shape} {pixels.dtype}")
        self._file.write(np.ascontiguousarray(pixels).tobytes())
        self.rows += 1

    def finish(self) -> None:
        """Rewrite the header with the final row count (same length, numpy pads it)."""
        self._file.seek(0)
        np.lib.format.write_array_header_1_0(self._file, _header(self.rows, self.size))
        if self._file.tell() != self._data_offset:
            raise RuntimeError("npy header changed length; cannot finish in place")
        self._file.seek(0, 2)


def open_images(path: str | Path, rows: int) -> np.ndarray:
    """Memory-map an image array and check it holds ``rows`` square RGB images."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image array not found; run `dvc repro downscale-images`")
    images = np.load(path, mmap_mode="r")
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] \
            or images.dtype != np.uint8:
        raise DataError(f"{path}: expected N x S x S x 3 uint8 images, found "
                        f"{images.shape} {images.dtype}")
    if images.shape[0] != rows:
        raise DataError(f"{path} holds {images.shape[0]} images but its CSV lists {rows}; "
                        "rerun `dvc repro downscale-images`")
    return images


def iter_chunks(path: str | Path, rows: int) -> Iterator[np.ndarray]:
    """Stream the images of ``path`` in chunks of about ``CHUNK_BYTES``."""
    shape = open_images(path, rows).shape
    image_bytes = shape[1] * shape[2] * 3
    per_chunk = max(1, CHUNK_BYTES // image_bytes)
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        for start in range(0, rows, per_chunk):
            count = min(per_chunk, rows - start)
            buffer = f.read(count * image_bytes)
            yield np.frombuffer(buffer, dtype=np.uint8).reshape(count, *shape[1:])
