"""Which photos of an external set are photos of the training data: by name, and by what
they show.

Two layouts of one set (the lab's copy of Kaggle's EyePACS photos), a set copied into
another folder, a photo renamed or saved again: figures on such photos are figures on
photos the model trained on, not an outside test. A shared name catches the copies
that keep their names; a fingerprint of each downscaled image catches the renamed and
re-encoded ones.

The fingerprint is an 8 x 8 colour thumbnail of the middle 70 % of the downscaled image
(``FINGERPRINT_SIDE``, ``CENTRE``): the centre of the eye, away from its rim. Two
decodings of one photo can crop the eye one pixel apart (JPEG smears the border the
crop looks for), which moves the rim against the black background by up to half a
pixel of the downscaled image; inside the eye that shift changes little. Two images
whose fingerprints differ by at most ``MATCH_RMS`` grey levels (root mean square over
the 192 values) count as one photo. ``bench/fingerprints.py`` measures both sides of
that line on the synthetic set: the closest two distinct photos, and copies saved
again as JPEG at several qualities and sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retino.data.layout import plain_name, read_layout
from retino.errors import DataError

FINGERPRINT_SIDE = 8  # thumbnail side: 8 x 8 x 3 = 192 values per image
CENTRE = 0.7  # the share of the side, around the centre, that the thumbnail shows
MATCH_RMS = 3.5  # grey levels (0-255): at most this far apart, two images are one photo
CHUNK = 1024  # external images compared with all training images at a time (35,126
# EyePACS photos: 1024 x 35,126 float64 distances, 288 MB)


def fingerprint(pixels: np.ndarray) -> np.ndarray:
    """The fingerprint of one downscaled ``S x S x 3`` uint8 image (192 uint8 values)."""
    side = pixels.shape[0]
    margin = int(round(side * (1 - CENTRE) / 2))
    centre = np.ascontiguousarray(pixels[margin:side - margin, margin:side - margin])
    thumbnail = Image.fromarray(centre).resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE),
                                               Image.Resampling.BOX)
    return np.asarray(thumbnail, dtype=np.uint8).reshape(-1)


def fingerprint_path(folder: str | Path, mode: str) -> Path:
    """Where a downscaled set keeps the fingerprints of a split: ``<mode>_fingerprints.npy``,
    one row per image, in CSV order."""
    return Path(folder) / f"{mode}_fingerprints.npy"


def read_fingerprints(folder: str | Path, mode: str, rows: int) -> np.ndarray:
    """The fingerprints of split ``mode`` of a downscaled set, checked against its rows."""
    path = fingerprint_path(folder, mode)
    if not path.is_file():
        raise DataError(f"{path}: not found (a downscaled set of an older retino); rerun "
                        "its downscale stage: dvc repro -f downscale-images (or "
                        "downscale-external@<source>)")
    prints = np.load(path)
    if prints.shape != (rows, 3 * FINGERPRINT_SIDE ** 2):
        raise DataError(f"{path}: holds {prints.shape[0]} fingerprints for {rows} images; "
                        "rerun its downscale stage")
    return prints


def rms_distances(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The distance of every fingerprint of ``queries`` to every one of ``pool``: the root
    mean square of their differences, in grey levels (``len(queries) x len(pool)``)."""
    queries, pool = np.asarray(queries, np.float64), np.asarray(pool, np.float64)
    squared = ((queries ** 2).sum(axis=1)[:, None] + (pool ** 2).sum(axis=1)[None, :]
               - 2 * queries @ pool.T)
    return np.sqrt(np.maximum(squared, 0) / pool.shape[1])


def nearest(queries: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each fingerprint of ``queries``, the index of the closest one in ``pool`` and
    their distance (``rms_distances``); -1 and inf for an empty pool. ``CHUNK`` queries
    at a time, so memory stays bounded by the pool's size."""
    if len(pool) == 0:
        return np.full(len(queries), -1), np.full(len(queries), np.inf)
    pool = np.asarray(pool, np.float64)  # once, not for every chunk
    indices, distances = [], []
    for start in range(0, len(queries), CHUNK):
        chunk = rms_distances(queries[start:start + CHUNK], pool)
        best = chunk.argmin(axis=1)
        indices.append(best)
        distances.append(chunk[np.arange(len(chunk)), best])
    return np.concatenate(indices), np.concatenate(distances)


def set_fingerprints(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """The names and fingerprints of every image of a downscaled set, all splits."""
    splits = read_layout(folder, eye_names=False)
    names = [name for split in splits.values() for name in split.names]
    prints = [read_fingerprints(folder, mode, len(split)) for mode, split in splits.items()]
    return names, np.concatenate(prints)


@dataclass(frozen=True)
class SharedPhoto:
    """An external image that is a photo of the training data."""

    image: str  # its name in the external set
    training_image: str  # the training data's photo it is
    by: str  # "name" or "content"
    distance: float  # between the two fingerprints, grey levels (RMS)


def shared_photos(external_names: list[str], external_prints: np.ndarray,
                  training_names: list[str], training_prints: np.ndarray,
                  compare_names: bool) -> list[SharedPhoto]:
    """The external images that are photos of the training data: the same name (where
    ``compare_names``: names that mean something on both sides, i.e. not the synthetic
    set's invented ones; the split a set's name may carry is left aside), or a
    fingerprint within ``MATCH_RMS``. In the external set's order."""
    closest, distances = nearest(external_prints, training_prints)
    by_name = ({plain_name(name): i for i, name in enumerate(training_names)}
               if compare_names else {})
    shared = []
    for index, name in enumerate(external_names):
        if plain_name(name) in by_name:
            match = by_name[plain_name(name)]
            distance = float(rms_distances(external_prints[index:index + 1],
                                           training_prints[match:match + 1])[0, 0])
            shared.append(SharedPhoto(name, training_names[match], "name", distance))
        elif distances[index] <= MATCH_RMS:
            shared.append(SharedPhoto(name, training_names[closest[index]], "content",
                                      float(distances[index])))
    return shared


SHOWN = 20  # shared photos listed by name in a report; the rest are counted


def shared_report(shared: list[SharedPhoto], images: int, compare_names: bool) -> dict:
    """What an external report records of the photos it left out as the training data's:
    how many of its ``images``, found how, and the first ``SHOWN`` by name."""
    return {"images": len(shared), "of": images, "names_compared": compare_names,
            "by_name": sum(s.by == "name" for s in shared),
            "by_content": sum(s.by == "content" for s in shared),
            "match_rms": MATCH_RMS,
            "listed": [{"image": s.image, "training_image": s.training_image, "by": s.by,
                        "distance": round(s.distance, 2)} for s in shared[:SHOWN]]}
