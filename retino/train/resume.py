"""Resume state: a stopped train stage continues from its last completed epoch.

After every epoch the train stage saves the model, the optimizer, the phase's
learning-rate schedule, the weights' moving average (``train.ema``), the history so
far and the best weights to ``models/<run>.resume.pt`` (atomically, so a kill
mid-write leaves the previous epoch's state). ``dvc repro`` after a Ctrl-C or a
kill reruns the stage, which picks the state up, but only when it was left by this
very run: the state carries a ``RunIdentity`` (the declared params, the code the
stage runs, the library versions, the ImageNet weights file and the input data),
and a state that differs in any of them is ignored with a line that says which. A
file that cannot be read is discarded with a warning. The file is removed once the
stage has written its outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torchvision
from torch import nn

from retino.atomic import atomic_path
from retino.errors import brief
from retino.imports import project_imports
from retino.progress import console
from retino.train.fit import EpochRecord, ResumePoint, TrainingState, TrainResult

FORMAT = "retino-resume-3"  # 3: the schedule, the moving average and the lr of each epoch
SMALL_FILE = 2**20  # larger inputs enter the identity by size and modification time


def resume_path(model_out: str | Path) -> Path:
    """``models/resnet18-scratch.pt`` -> ``models/resnet18-scratch.resume.pt``."""
    model_out = Path(model_out)
    return model_out.with_name(f"{model_out.stem}.resume.pt")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digests(script: Path, root: Path) -> dict[str, str]:
    """sha256 of the stage script and of every retino file it imports."""
    files = [script.resolve(), *project_imports(script.resolve(), root)]
    return {str(path.relative_to(root)): file_digest(path) for path in files}


def data_digest(files: Iterable[Path]) -> str:
    """The input files: small ones by content, large ones (the image arrays) by size
    and modification time, which hashing gigabytes at every start would not beat."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(path.name.encode())
        if stat.st_size <= SMALL_FILE:
            digest.update(path.read_bytes())
        else:
            digest.update(f":{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """Everything a resumed run must share with the run that left the state."""

    settings: dict[str, Any]  # the declared params, the run name, the device type
    code: dict[str, str]  # file -> sha256
    versions: dict[str, str]  # torch, torchvision, numpy
    weights: str | None  # sha256 of the ImageNet weights file; None for scratch
    data: str  # the statistics file and the downscaled set

    @staticmethod
    def versions_now() -> dict[str, str]:
        return {"torch": torch.__version__, "torchvision": torchvision.__version__,
                "numpy": np.__version__}

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """What of ``saved`` (an identity as stored) differs from this one, in words."""
        found = []
        changed = sorted(k for k in {*self.settings, *saved.get("settings", {})}
                         if self.settings.get(k) != saved.get("settings", {}).get(k))
        if changed:
            found.append("params (" + ", ".join(changed) + ")")
        files = sorted(k for k in {*self.code, *saved.get("code", {})}
                       if self.code.get(k) != saved.get("code", {}).get(k))
        if files:
            found.append("code (" + ", ".join(files) + ")")
        for name in ("versions", "weights", "data"):
            if getattr(self, name) != saved.get(name):
                found.append({"versions": "torch/torchvision/numpy versions",
                              "weights": "ImageNet weights file", "data": "input data"}[name])
        return found


class ResumeFile:
    """Where one run keeps its resume state, tagged with the run's identity."""

    def __init__(self, path: str | Path, identity: RunIdentity):
        self.path, self.identity = Path(path), identity
        self.saved_epochs = 0  # the epochs the state on disk holds (loaded or saved here)

    def load(self) -> ResumePoint | None:
        """The saved state of this very run, or None (absent, unreadable, or left by a
        run that differs; a line says why)."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
        except Exception as error:  # truncated zip, foreign pickle, wrong format alike
            console.print(f"[yellow]warning:[/] {self.path}: cannot be read as a resume "
                          f"state ({brief(error)}); discarded, starting over",
                          soft_wrap=True)
            self.remove()
            return None
        differences = self.identity.differences(saved.get("identity", {}))
        if differences:
            console.print(f"{self.path}: left by a run with other {'; '.join(differences)}; "
                          "ignored, starting over", soft_wrap=True, highlight=False)
            return None
        result = TrainResult(history=[EpochRecord(**row) for row in saved["history"]],
                             best_epoch=saved["best_epoch"], best_state=saved["best_state"],
                             best_key=tuple(saved["best_key"]))
        console.print(f"[bold]resuming after epoch {len(result.history)}[/] from {self.path}")
        self.saved_epochs = len(result.history)
        return ResumePoint(result, saved["model_state"], saved["optimizer_state"],
                           saved["schedule_state"], saved["average_state"])

    def save(self, result: TrainResult, model: nn.Module, training: TrainingState) -> None:
        average = training.average.state_dict() if training.average is not None else None
        state = {"format": FORMAT, "identity": json.loads(json.dumps(asdict(self.identity))),
                 "history": [asdict(record) for record in result.history],
                 "best_epoch": result.best_epoch, "best_state": result.best_state,
                 "best_key": list(result.best_key), "model_state": model.state_dict(),
                 "optimizer_state": training.optimizer.state_dict(),
                 "schedule_state": training.schedule.state_dict(), "average_state": average}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.saved_epochs = len(result.history)

    def stopped_text(self, stage: str) -> str:
        """Where a stopped run stands, in one line: what the next ``dvc repro`` does."""
        if not self.saved_epochs:
            return (f"{stage} stopped by Ctrl-C in epoch 1, before any epoch was saved; the "
                    "next `dvc repro` starts it again")
        return (f"{stage} stopped by Ctrl-C in epoch {self.saved_epochs + 1}; the next `dvc "
                f"repro` resumes after epoch {self.saved_epochs} ({self.path})")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
