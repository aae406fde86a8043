"""How well the fingerprints of ``retino.data.fingerprints`` tell one photo from another,
on the synthetic set, whose photos are all distinct and alike (one drawing procedure).

    python bench/fingerprints.py                      # default params' set, 48 and 128 px
    python bench/fingerprints.py --sizes 48 --copies 40

Draws the default synthetic set (params.yaml's synthesize section), downscales it at
each size as downscale-images does, and measures:

* false matches: pairs of distinct photos whose fingerprints lie within
  ``MATCH_RMS`` (they would be taken for one photo), and the closest distinct pair;
* copies caught: the first ``--copies`` photos saved again (PNG; JPEG at quality 95,
  85 and 75; JPEG at 70 % and 50 % of the size) and downscaled, each against its
  original: the largest fingerprint distance and how many lie within ``MATCH_RMS``.

Writes ``bench/fingerprints.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retino.data.downscale import prepare_downscaled  # noqa: E402
from retino.data.fingerprints import (MATCH_RMS, fingerprint, rms_distances,  # noqa: E402
                                      set_fingerprints)
from retino.data.layout import image_path, read_split  # noqa: E402
from retino.data.photos import downscale_pixels  # noqa: E402
from retino.data.sources import read_source  # noqa: E402
from retino.data.synthetic import write_dataset  # noqa: E402
from retino.params import load_params  # noqa: E402
from retino.pool import default_workers  # noqa: E402

from measure import cpu_name  # noqa: E402

OUT = Path(__file__).with_name("fingerprints.json")
# how each copy is saved again: (format, JPEG quality, share of the size)
COPIES = {"png": ("PNG", None, 1.0), "jpeg q95": ("JPEG", 95, 1.0),
          "jpeg q85": ("JPEG", 85, 1.0), "jpeg q75": ("JPEG", 75, 1.0),
          "jpeg q75 at 70 %": ("JPEG", 75, 0.7), "jpeg q75 at 50 %": ("JPEG", 75, 0.5)}


def false_matches(folder: Path) -> dict:
    """Distinct photos of one downscaled set taken for one photo."""
    names, prints = set_fingerprints(folder)
    distinct = rms_distances(prints, prints)[np.triu_indices(len(names), k=1)]
    return {"photos": len(names), "pairs": len(distinct),
            "false_matches": int((distinct <= MATCH_RMS).sum()),
            "closest_distinct": round(float(distinct.min()), 2),
            "distinct_0.1_percentile": round(float(np.percentile(distinct, 0.1)), 2)}


def copies_caught(raw: Path, size: int, count: int, scratch: Path) -> dict:
    """Each way of saving a photo again: the distances of the copies to their originals."""
    names = read_split(raw, "train").names[:count]
    found = {}
    for label, (kind, quality, share) in COPIES.items():
        distances = []
        for name in names:
            original = image_path(raw / "data", name)
            with Image.open(original) as photo:
                again = photo.convert("RGB")
                again = again.resize((round(again.width * share), round(again.height * share)),
                                     Image.Resampling.LANCZOS)
            copy = scratch / f"copy.{kind.lower()}"
            again.save(copy, kind, **({"quality": quality} if quality else {}))
            a, b = (fingerprint(downscale_pixels(path, size))[None] for path in (original, copy))
            distances.append(float(rms_distances(a, b)[0, 0]))
        found[label] = {"largest": round(max(distances), 2),
                        "caught": sum(d <= MATCH_RMS for d in distances),
                        "of": len(distances)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 128])
    parser.add_argument("--copies", type=int, default=60, help="photos saved again")
    args = parser.parse_args()
    synthesize = load_params().synthesize
    report = {"command": "python bench/fingerprints.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
              "match_rms": MATCH_RMS,
              "set": {"patients": synthesize.patients, "canvas_height":
                      synthesize.canvas_height, "seed": synthesize.seed}, "sizes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_dataset(scratch / "raw", synthesize.patients, synthesize.canvas_height,
                      synthesize.test_fraction, synthesize.seed, default_workers(0))
        source = read_source("synthetic", scratch / "raw", False, 0.2, 0)
        for size in args.sizes:
            prepare_downscaled(source, scratch / f"{size}", size, default_workers(0), "stop")
            report["sizes"][str(size)] = {
                **false_matches(scratch / f"{size}"),
                "copies": copies_caught(scratch / "raw", size, args.copies, scratch)}
            OUT.write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(report["sizes"][str(size)], indent=2))


if __name__ == "__main__":
    main()
