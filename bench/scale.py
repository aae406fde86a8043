"""Memory of downscale-images and compute-stats as the number of images grows.

    python bench/scale.py                  # 2,000, 20,000 and 40,000 images (about 2 minutes)
    python bench/scale.py --images 500 5000

Each size gets its own scratch project with a synthetic set of small photos (64 px
high, downscaled to 32 px). The two stage scripts run as they do under DVC, and
their peak memory is measured: flat memory means the peak barely moves while the
image count grows tenfold. Writes bench/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import ROOT, project_params, run_measured, scratch_project  # noqa: E402

from retino.data.synthetic import write_dataset  # noqa: E402
from retino.pool import default_workers  # noqa: E402
from retino.progress import console, print_table  # noqa: E402

STAGES = {
    "downscale-images": ["stages/downscale_images.py", "--out", "data/downscaled",
                         "--skipped-out", "metrics/skipped_inputs.csv"],
    "compute-stats": ["stages/compute_stats.py", "--data", "data/downscaled",
                      "--out", "metrics/data_stats.json"],
}


def measure_size(images: int, folder: Path) -> dict:
    params = project_params()
    params["data"].update(source="synthetic", image_size=32)
    project = scratch_project(folder, params)
    console.print(f"generating {images} synthetic photos ...")
    write_dataset(project / "data" / "synthetic", patients=images // 2, canvas_height=64,
                  test_fraction=0.2, seed=1, workers=default_workers(0))
    env = {**os.environ, "PYTHONPATH": str(project)}
    row = {"images": images}
    for stage, command in STAGES.items():
        measured = run_measured([sys.executable, *command], project, env)
        row[stage] = {"seconds": round(measured.seconds, 1),
                      "largest_process_peak_mib": round(measured.largest_process_peak_mib, 1),
                      "all_processes_peak_mib": round(measured.tree_peak_mib, 1)}
        console.print(f"{images} images, {stage}: {row[stage]}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000, 40000])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "scale.json")
    args = parser.parse_args()
    rows = []
    for images in args.images:
        with tempfile.TemporaryDirectory(prefix="retino-scale-") as folder:
            rows.append(measure_size(images, Path(folder) / "project"))
    result = {"workers": default_workers(0), "cpu_count": os.cpu_count(), "sizes": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table("peak memory (MiB) and time (s) per stage", [
        "images", *(f"{s} {k}" for s in STAGES for k in ("s", "largest", "all"))],
        [[r["images"], *(v for s in STAGES for v in r[s].values())] for r in rows])
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
