"""The downscaled set the networks train on: checked splits plus one uint8 array per split.

``data/downscaled/`` holds the lab's four headerless CSVs of the split in use (six with
a val split), ``train.npy``/``test.npy`` with the downscaled images in CSV order, and
each image's fingerprint (``<mode>_fingerprints.npy``, ``retino.data.fingerprints``);
an external set (``data/external/<source>/``, downscale-external) holds its test split
alone. Bad inputs are
found in two steps: the cheap one (CSV rows, then missing or empty files) and the costly
one (images that fail to decode); with ``data.on_bad_input: stop`` the cheap step lists
every problem it finds before the costly one starts, and says that decoding may find
more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from retino.data.arrays import ArrayWriter, array_path
from retino.data.checks import SKIPPED_REPORT, Problem, stop_on
from retino.data.fingerprints import FINGERPRINT_SIDE, fingerprint, fingerprint_path
from retino.data.layout import Split, write_split
from retino.data.photos import downscale_job, file_problem
from retino.data.sources import SourceData
from retino.errors import DataError
from retino.pool import ordered_map


def missing_files(source: SourceData, splits: dict[str, Split]
                  ) -> tuple[dict[str, Split], list[Problem]]:
    """Leave out listed images that are missing or empty; a problem for each."""
    kept, problems = {}, []
    for mode, split in splits.items():
        keep = []
        for index, name in enumerate(split.names):
            path = source.photo(name)
            problem = file_problem(path)
            if problem:
                problems.append(Problem(str(path), None, problem))
            else:
                keep.append(index)
        kept[mode] = split.subset(np.array(keep, dtype=np.int64))
    return kept, problems


def write_images(paths: list[Path], target: Path, size: int, workers: int,
                 on_image: Callable[[], None], preprocess: str = "none"
                 ) -> tuple[list[int], list[Problem], np.ndarray]:
    """Downscale ``paths`` into the array file ``target``; (written indices, problems,
    the written images' fingerprints)."""
    written, problems, prints = [], [], []
    with open(target, "wb") as f:
        writer = ArrayWriter(f, size)
        results = ordered_map(downscale_job, ((path, size, preprocess) for path in paths),
                              workers)
        for index, (path, result) in enumerate(zip(paths, results)):
            if isinstance(result, str):
                problems.append(Problem(str(path), None, result))
            else:
                writer.append(result)
                prints.append(fingerprint(result))
                written.append(index)
            on_image()
        writer.finish()
    return written, problems, np.array(prints, dtype=np.uint8).reshape(
        len(written), 3 * FINGERPRINT_SIDE ** 2)


def prepare_downscaled(source: SourceData, out: Path, size: int, workers: int,
                       on_bad_input: str, on_image: Callable[[], None] = lambda: None,
                       preprocess: str = "none", report: str = SKIPPED_REPORT
                       ) -> tuple[dict[str, Split], list[Problem]]:
    """Write the downscaled set of ``source.splits`` (train and test, or an external
    set's test split alone) into the (new, empty) folder ``out``.

    Returns the splits as written and every input left out (ungradable photos among
    them, which never stop the stage). With ``stop``, any problem raises
    ``DataError`` (naming ``report``, where ``skip`` would list them) and ``out``
    should be discarded by the caller.
    """
    splits, problems = missing_files(source, source.splits)
    stop_on(source.problems + problems, on_bad_input, report, more_may_follow=True)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for mode, split in splits.items():
        paths = [source.photo(name) for name in split.names]
        kept, failed, prints = write_images(paths, array_path(out, mode), size, workers,
                                            on_image, preprocess)
        np.save(fingerprint_path(out, mode), prints)
        written[mode] = split.subset(np.array(kept, dtype=np.int64))
        problems += failed
    stop_on(problems, on_bad_input, report)
    for mode, split in written.items():
        if len(split) == 0:
            raise DataError(f"{source.image_folder}: no usable {mode} images left after "
                            f"leaving out {len(source.problems) + len(problems)} bad input(s)")
    for mode, split in written.items():
        write_split(out, mode, split)
    return written, source.excluded + source.problems + problems


def left_out_lines(source: SourceData, skipped: list[Problem], report: Path) -> list[str]:
    """What a downscale stage left out, in words (rich markup), for its summary."""
    lines = []
    if source.excluded:
        lines.append(f"left out {len(source.excluded)} ungradable photo(s), listed in {report}")
    bad = len(skipped) - len(source.excluded)
    if bad:
        lines.append(f"[yellow]left out {bad} bad input(s), listed in {report}[/]")
    return lines
