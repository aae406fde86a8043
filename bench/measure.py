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

import yaml

from retino.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
EXTERNAL_README = Path("metrics") / "external" / "README.md"


def scratch_project(folder: Path, params: dict, env: dict | None = None) -> Path:
    """A copy of the pipeline (dvc.yaml, stages, retino, metrics/external's README, the
    DVC config and plot templates) in ``folder`` with ``params``; with ``env``, also a
    git and DVC repo."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("stages", "retino"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    # the external reports' folder, a dependency of compare, kept by its README
    (folder / EXTERNAL_README).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / EXTERNAL_README, folder / EXTERNAL_README)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if env is not None:
        for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
        shutil.copy(ROOT / ".dvc" / "config", folder / ".dvc" / "config")
        shutil.copytree(ROOT / ".dvc" / "plots", folder / ".dvc" / "plots")
    return folder


def cpu_name() -> str:
    """The processor's model name (Linux), else what Python knows of the machine."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    import platform
    return platform.processor() or platform.machine()


# the file names torchvision's hub cache uses for the ImageNet weights retino can ask for
STAND_IN_FILES = {"resnet18": ("resnet18-f37072fd.pth",),
                  "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")}


def stand_in_torch_home(folder: Path) -> Path:
    """A TORCH_HOME whose hub cache holds seeded random 'ImageNet' ResNet weights, for
    offline tests and timings; they are not ImageNet weights and give no ImageNet results.

    Their BatchNorm statistics are calibrated on noise, as real weights' are on images:
    left at their initial values, eval-mode activations grow through ResNet-50's 50
    layers until the CPU slows to a crawl on huge and denormal numbers.
    """
    import torch
    from torchvision import models as tv_models

    checkpoints = folder / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for arch, files in STAND_IN_FILES.items():
        torch.manual_seed(123)
        model = getattr(tv_models, arch)()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.momentum = None  # a plain average over the calibration batches
        with torch.no_grad():
            for _ in range(4):
                model.train()(torch.randn(16, 3, 64, 64))
        for norm in norms:
            norm.momentum = 0.1
        for name in files:
            torch.save(model.state_dict(), checkpoints / name)
    return folder


def project_params() -> dict:
    return read_params_file(ROOT / "params.yaml")


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


def _sample_tree(process, high_water: dict[int, float]) -> float:
    """Resident MiB of ``process`` and its descendants now; updates each one's VmHWM."""
    import psutil  # installed with dvc; only here, so the GPU box (no dvc) imports this file

    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss / MIB
            high_water[member.pid] = peak_rss_mib(member.pid)
        except (psutil.Error, OSError, RuntimeError):
            pass  # ended between listing and reading (a zombie has no VmHWM left)
    return total


def run_measured(command: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run ``command``; fail loudly on a non-zero exit.

    Memory is sampled every 20 ms: the sum over the process tree, and each process's
    own high-water mark (monotonic, so only growth in its last 20 ms can be missed).
    """
    import psutil

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
