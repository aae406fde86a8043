"""Shared helpers of the benchmark scripts: a scratch copy of the project, and running a
command while measuring its wall time and peak memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # installed with dvc
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def scratch_project(folder: Path, params: dict) -> Path:
    """A copy of the pipeline (dvc.yaml, stages, retino) in ``folder`` with ``params``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("stages", "retino"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def peak_rss_mib(pid: int | str = "self") -> float:
    """The high-water mark of a process's resident memory (Linux ``VmHWM``).

    Not ``getrusage``: its ``ru_maxrss`` of a child starts from the parent's peak,
    because Linux carries the old address space's high-water mark across ``exec``.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status (Linux only)")


@dataclass(frozen=True)
class Measured:
    seconds: float
    largest_process_peak_mib: float  # the largest VmHWM of the command's processes
    tree_peak_mib: float  # all its processes' resident memory added up
    output: str


def _sample_tree(process: psutil.Process, high_water: dict[int, float]) -> float:
    """Resident MiB of ``process`` and its descendants now; updates each one's VmHWM."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss / MIB
            high_water[member.pid] = peak_rss_mib(member.pid)
        except (psutil.Error, OSError):
            pass  # ended between listing and reading
    return total


def run_measured(command: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run ``command``; fail loudly on a non-zero exit.

    Memory is sampled every 20 ms: the sum over the process tree, and each process's
    own high-water mark (monotonic, so only growth in its last 20 ms can be missed).
    """
    log = cwd / f".measure-{os.getpid()}.log"
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        tree_peak, high_water = [0.0], {}

        def sample() -> None:
            watched = psutil.Process(process.pid)
            while process.returncode is None:
                try:
                    tree_peak[0] = max(tree_peak[0], _sample_tree(watched, high_water))
                except psutil.Error:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status = os.waitpid(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        sampler.join()
    output = log.read_text()
    log.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    return Measured(seconds, max(high_water.values(), default=0.0), tree_peak[0], output)
