"""Disk used by a built pipeline under each DVC cache link type.

    python bench/disk.py FOLDER        # FOLDER: a project after `dvc repro`, e.g. one
                                       # that `python bench/default_run.py --keep FOLDER` built

For each link type (``copy``, then ``hardlink``, ``symlink``, then the project's own
``.dvc/config`` setting), sets ``cache.type`` in a copy of FOLDER, relinks the workspace
to the cache (``dvc checkout --relink``) and counts the bytes the whole folder holds on
disk (``du -s``, which counts a hard-linked file once), the cache and the workspace's
DVC-cached outputs. Writes ``bench/disk.json``; FOLDER itself is left as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import cpu_name  # noqa: E402

OUT = Path(__file__).with_name("disk.json")
LINK_TYPES = ("copy", "hardlink", "symlink")


def disk_kib(*paths: Path) -> int:
    """KiB on disk of ``paths`` together (``du -s``: a file hard-linked twice counts once)."""
    output = subprocess.run(["du", "-s", "-c", "-k", *map(str, paths)], check=True,
                            capture_output=True, text=True).stdout
    return int(output.strip().splitlines()[-1].split()[0])


def relinked(project: Path, link_type: str | None) -> dict:
    """Disk use of ``project`` after relinking its workspace as ``link_type`` (None: as
    its own config says)."""
    if link_type:
        subprocess.run(["dvc", "config", "--local", "cache.type", link_type], cwd=project,
                       check=True, capture_output=True)
    subprocess.run(["dvc", "checkout", "--relink", "--quiet"], cwd=project, check=True,
                   capture_output=True)
    cached = [project / p for p in ("data/downscaled", "data/synthetic", "models",
                                    "data/params.ok")]
    return {"project_kib": disk_kib(project),
            "cache_kib": disk_kib(project / ".dvc" / "cache"),
            "workspace_outputs_kib": disk_kib(*[p for p in cached if p.exists()]),
            "arrays_kib": disk_kib(project / "data" / "downscaled")}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    built = Path(sys.argv[1]).resolve()
    configured = subprocess.run(["dvc", "config", "cache.type"], cwd=built,
                                capture_output=True, text=True).stdout.strip() or "unset"
    report = {"command": f"python bench/disk.py {sys.argv[1]}", "date": time.strftime("%Y-%m-%d"),
              "machine": cpu_name(), "project_cache_type": configured, "link_types": {}}
    with tempfile.TemporaryDirectory(prefix="retino_disk_", dir=built.parent) as scratch:
        project = Path(scratch) / "project"
        shutil.copytree(built, project, symlinks=True)
        for link_type in LINK_TYPES:
            report["link_types"][link_type] = relinked(project, link_type)
            print(link_type, report["link_types"][link_type], flush=True)
        subprocess.run(["dvc", "config", "--local", "--unset", "cache.type"], cwd=project,
                       capture_output=True)
        report["link_types"][f"project config ({configured})"] = relinked(project, None)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
