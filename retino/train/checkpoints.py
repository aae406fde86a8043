"""Model files: weights plus the resolved settings, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, strings and numbers, so it loads without
unpickling arbitrary objects (``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from retino.atomic import atomic_path
from retino.errors import DataError, brief
from retino.train.models import build_model

FORMAT = "retino-checkpoint-1"


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], **meta: Any) -> None:
    """Write ``state_dict`` and ``meta`` (arch, init, epoch, params, mean, std, ...) atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "state_dict": state_dict, **meta}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A retino model file, loaded only the safe way (``weights_only=True``: tensors,
    numbers and strings, no code); anything else is refused with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found; run its train stage first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle of arbitrary objects, a truncated file, ...
        raise DataError(f"{path}: refused: it does not load with torch.load(weights_only=True) "
                        f"({brief(error)}); retino loads only model files of plain tensors "
                        "and settings, as its train stage writes them") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
        raise DataError(f"{path}: not a retino model file (format {found!r}, expected "
                        f"{FORMAT!r}); the train stage writes models/<arch>-<init>.pt")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network (no ImageNet download needed) and load the saved weights."""
    model = build_model(checkpoint["arch"], pretrained=False,
                        outputs=checkpoint.get("outputs", checkpoint["num_class"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model
