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


@dataclass(frozen=True)
class Measured:
    seconds: float
    largest_process_peak_mib: float  # exact: getrusage of the command and its children
    tree_peak_mib: float  # all its processes together, sampled every 20 ms
    output: str


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass  # ended between listing and reading
    return total


def run_measured(command: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run ``command``; fail loudly on a non-zero exit."""
    log = cwd / f".measure-{os.getpid()}.log"
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        peak = [0]

        def sample() -> None:
            watched = psutil.Process(process.pid)
            while process.returncode is None:
                try:
                    peak[0] = max(peak[0], _tree_rss(watched))
                except psutil.Error:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        sampler.join()
    output = log.read_text()
    log.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    return Measured(seconds, usage.ru_maxrss * 1024 / MIB, peak[0] / MIB, output)
