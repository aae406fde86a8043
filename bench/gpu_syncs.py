"""Host-device synchronisations per training step on CUDA, counted by PyTorch itself.

    PYTHONPATH=. python bench/gpu_syncs.py                    # this code
    PYTHONPATH=.gpu-deps/retino-before python bench/gpu_syncs.py  # an earlier copy

Runs ``train_one_epoch`` of whichever ``retino`` is on the path, at the lab's batch of 4
and 64 px, with ``torch.cuda.set_sync_debug_mode("warn")`` (one warning per
synchronising call), for the lab's flips with the classification head and for the
field augmentation with the regression head. Each is run for ``STEPS`` and for
``2 * STEPS`` steps: the difference divided by ``STEPS`` is the count per step, free
of what an epoch does once (its start and its end). Prints one JSON line.
"""

from __future__ import annotations

import json
import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset

from retino.train.augment import FieldAugmentation
from retino.train.inputs import ToModel, epoch_generator
from retino.train.loop import make_criterion, train_one_epoch
from retino.train.models import build_model

STEPS, BATCH, SIZE = 20, 4, 64
MEAN, STD = (0.45, 0.25, 0.15), (0.28, 0.17, 0.10)


def synchronisations(steps: int, augment: str, head: str) -> int:
    """The synchronising calls PyTorch reports during one epoch of ``steps`` steps."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    outputs = 1 if head == "regression" else 5
    model = build_model("resnet18", pretrained=False, outputs=outputs).to(device).train()
    images = torch.randint(0, 256, (steps * BATCH, SIZE, SIZE, 3), dtype=torch.uint8)
    grades = torch.randint(0, 5, (steps * BATCH,))
    loader = DataLoader(TensorDataset(images, grades), batch_size=BATCH, pin_memory=True)
    to_model = ToModel(MEAN, STD, device)
    prepare = FieldAugmentation(to_model) if augment == "field" else to_model
    draws = epoch_generator(0, 0, 1)
    criterion = make_criterion(None, device, head)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_one_epoch(model, loader, criterion, optimizer,
                            lambda batch: prepare(batch, draws), "epoch")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def main() -> None:
    found = {}
    for augment, head in (("flips", "classification"), ("field", "regression")):
        short, long = (synchronisations(steps, augment, head) for steps in (STEPS, 2 * STEPS))
        found[f"{augment}, {head}"] = {"per_step": (long - short) / STEPS,
                                       f"epoch_of_{STEPS}_steps": short}
    print(json.dumps(found))


if __name__ == "__main__":
    main()
