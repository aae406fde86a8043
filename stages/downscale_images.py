"""Stage downscale-images: crop, pad to square and resize every listed image."""

import argparse
from pathlib import Path

from retino.cli import run_stage
from retino.atomic import atomic_path
from retino.layout import IMAGE_FOLDER, read_layout, write_split
from retino.params import load_params
from retino.preprocess import default_workers, downscale_folder
from retino.progress import console, counting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True, help="lab-layout folder")
    parser.add_argument("--out", type=Path, required=True, help="downscaled lab-layout folder")
    args = parser.parse_args()
    params = load_params()
    splits = read_layout(args.source)  # every CSV problem surfaces before any image work
    names = [name for split in splits.values() for name in split.names]
    workers = default_workers(params.downscale.workers)
    with atomic_path(args.out) as folder, counting("downscale-images", len(names)) as tick:
        downscale_folder(names, args.source / IMAGE_FOLDER, folder / IMAGE_FOLDER,
                         params.data.image_size, workers, tick)
        for mode, split in splits.items():
            write_split(folder, mode, split)
    console.print(f"{len(names)} images at {params.data.image_size} px "
                  f"({workers} workers) -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
