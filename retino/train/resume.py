"""Resume state: a stopped train stage continues from its last completed epoch.

After every epoch the train stage saves the model, the optimizer, the history so
far and the best weights to ``models/<run>.resume.pt`` (atomically, so a kill
mid-write leaves the previous epoch's state). ``dvc repro`` after a Ctrl-C or a
kill reruns the stage, which picks the state up. The state carries a fingerprint
of everything the result depends on (params, statistics, split, input arrays), so
a state left by a run with other settings is ignored, never mixed in. The file is
removed once the stage has written its outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from retino.atomic import atomic_path
from retino.progress import console
from retino.train.fit import EpochRecord, ResumePoint, TrainResult

FORMAT = "retino-resume-1"


def resume_path(model_out: str | Path) -> Path:
    """``models/resnet18-scratch.pt`` -> ``models/resnet18-scratch.resume.pt``."""
    model_out = Path(model_out)
    return model_out.with_name(f"{model_out.stem}.resume.pt")


def fingerprint(settings: dict[str, Any], files: Iterable[Path]) -> str:
    """A hash of the run's settings and the bytes of the (small) files it reads;
    large files enter by size and modification time."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        stat = path.stat()
        if stat.st_size <= 2**20:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class ResumeFile:
    """Where one run keeps its resume state, tagged with the run's fingerprint."""

    def __init__(self, path: str | Path, run_fingerprint: str):
        self.path, self.fingerprint = Path(path), run_fingerprint

    def load(self) -> ResumePoint | None:
        """The saved state of this very run, or None (absent, or made by other settings)."""
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("format") != FORMAT or saved.get("fingerprint") != self.fingerprint:
            console.print(f"{self.path}: left by a run with other settings or data; "
                          "starting over")
            return None
        result = TrainResult(history=[EpochRecord(**row) for row in saved["history"]],
                             best_epoch=saved["best_epoch"], best_state=saved["best_state"],
                             best_key=tuple(saved["best_key"]))
        console.print(f"[bold]resuming after epoch {len(result.history)}[/] from {self.path}")
        return ResumePoint(result, saved["model_state"], saved["optimizer_state"])

    def save(self, result: TrainResult, model: nn.Module,
             optimizer: torch.optim.Optimizer) -> None:
        state = {"format": FORMAT, "fingerprint": self.fingerprint,
                 "history": [asdict(record) for record in result.history],
                 "best_epoch": result.best_epoch, "best_state": result.best_state,
                 "best_key": list(result.best_key), "model_state": model.state_dict(),
                 "optimizer_state": optimizer.state_dict()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
