"""GPU check that fits a short lease: the pipeline's own training loop, timed.

    PYTHONPATH=. python bench/gpu.py                 # one H200: under 8 minutes
    PYTHONPATH=. python bench/gpu.py --device cpu --sizes 32 64 --lab-size 64 \
        --images 8 --batch 2 --steps 1 --epochs 1    # a tiny CPU run, as the tests do

Needs only torch, torchvision, numpy and pillow (no dvc, no network, no install). For
ResNet-18 and ResNet-50 at each size it writes uint8 image arrays on the spot, then
times, on the chosen device with the pipeline's own code (``ImageArray``, ``ToModel``,
bf16 autocast and channels_last on CUDA, ``fit`` with its float32 scoring):

* ``train_step``: forward + backward + SGD step on a batch already in memory, the
  bare model rate;
* ``train_step_compiled`` (on CUDA, or with ``--compile``): the same step through
  ``torch.compile`` (``compute.compile``), with the warm-up seconds that hold the
  compilation, and its speed-up over eager (``compiled_speedup``);
* ``train_step_field``: the same step with ``train.augment: field`` (rotation, zoom,
  shift and colour jitter on the device) in place of the lab's flips, and its rate
  as a share of the flips step's (``field_relative_rate``);
* ``fit``: whole scratch epochs through ``fit`` (loader, flips and normalisation on
  the device, scoring of validation and test after each epoch): the rate a train
  stage sees;

with the peak GPU memory of each. At the lab's size it also times ``fit`` at the
``retino preset lab`` batch (4) with its DataLoader workers (8), the rate the lab's
run trains at, and derives the minutes of one 512 px epoch over the lab's 28,100 train
images from both rates; and it times ``fit`` with ``retino preset field``'s recipe
(batch 16, field augmentation, Nesterov SGD, cosine schedule, regression head), from
which ``field_stage_minutes`` estimates one of that preset's train stages (25 epochs
over 28,100 images). Writes one JSON (``--out``), rewritten after every run so an
interrupted check keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from retino.data.arrays import ArrayWriter  # noqa: E402
from retino.presets import PRESETS  # noqa: E402
from retino.train.augment import FieldAugmentation  # noqa: E402
from retino.train.device import autocast, configure_backends, memory_format  # noqa: E402
from retino.train.fit import fit  # noqa: E402
from retino.train.inputs import ImageArray, ToModel, TrainData, epoch_generator  # noqa: E402
from retino.train.models import build_model  # noqa: E402
from retino.train.phases import compiled  # noqa: E402
from retino.train.recipe import TrainSettings  # noqa: E402

LAB_TRAIN_IMAGES = 28_100
MEAN, STD = (0.45, 0.25, 0.15), (0.28, 0.17, 0.10)  # any fixed values: speed only
BATCH = {224: 256, 512: 64}  # per size; other sizes use 16
LAB = PRESETS["lab"]
FIELD = PRESETS["field"]
FIELD_EPOCHS = FIELD["train.epochs_feature_extraction"] + FIELD["train.epochs_fine_tuning"]
FIELD_RECIPE = dict(augment=FIELD["train.augment"], lr_schedule=FIELD["train.lr_schedule"],
                    optimizer=FIELD["train.optimizer"], head=FIELD["train.head"])


def image_array(folder: Path, name: str, count: int, size: int, seed: int) -> ImageArray:
    """``count`` random uint8 images of ``size`` px, written as the pipeline stores them."""
    path, rng = folder / f"{name}.npy", np.random.default_rng(seed)
    with open(path, "wb") as f:
        writer = ArrayWriter(f, size)
        for _ in range(count):
            writer.append(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
        writer.finish()
    labels = rng.integers(0, 5, size=count)
    return ImageArray(path, np.arange(count), labels, [f"{i}_left" for i in range(count)])


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_rate(arch: str, size: int, batch: int, steps: int, device: torch.device,
                    compile_step: bool = False, augment: str = "flips") -> dict:
    """Images/s of the bare training step on one in-memory batch (after 3 warm-up steps),
    its batches augmented as ``augment`` (train.augment) says; with ``compile_step``,
    through torch.compile (compute.compile), and the seconds of the warm-up steps,
    where the compilation happens."""
    torch.manual_seed(0)
    model = build_model(arch, pretrained=False).to(device, memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    trained = compiled(model, compile_step)
    to_model = ToModel(MEAN, STD, device)
    if augment == "field":
        to_model = FieldAugmentation(to_model)
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    labels = torch.randint(0, 5, (batch,), device=device)
    model.train()

    def step(index: int) -> None:
        with autocast(device):
            loss = nn.functional.cross_entropy(
                trained(to_model(pixels, epoch_generator(0, index, 1))).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    for index in range(3):
        step(index)
    synchronize(device)
    warm_up_s = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(steps):
        step(index)
    synchronize(device)
    return {"images_per_s": round(batch * steps / (time.perf_counter() - started), 1),
            "warm_up_s": round(warm_up_s, 1), "peak_gpu_mib": peak_mib(device)}


def fit_rate(arch: str, size: int, batch: int, images: int, epochs: int,
             device: torch.device, folder: Path, num_workers: int = 0,
             recipe: dict | None = None) -> dict:
    """Images/s of whole scratch epochs through ``fit``, scoring included: a warm-up
    ``fit`` of one epoch, then one of ``epochs`` epochs, timed. ``recipe``: TrainSettings
    fields other than the lab's (augment, lr_schedule, ...)."""
    name = f"{arch}{size}b{batch}"
    data = TrainData(fit=image_array(folder, f"{name}fit", images, size, 1),
                     validation=image_array(folder, f"{name}val", images // 4, size, 2),
                     test=image_array(folder, f"{name}test", images // 4, size, 3),
                     mean=MEAN, std=STD)
    settings = TrainSettings(init="scratch", epochs_feature_extraction=epochs,
                             epochs_fine_tuning=0, batch_size=batch, lr=1e-3, momentum=0.9,
                             weight_decay=5e-4, class_weights=None, seed=0,
                             num_workers=num_workers, **(recipe or {}))
    warm_up = dataclasses.replace(settings, epochs_feature_extraction=1)
    outputs = 1 if settings.head == "regression" else 5
    fit(build_model(arch, pretrained=False, outputs=outputs), data, warm_up, device)
    torch.manual_seed(0)
    model = build_model(arch, pretrained=False, outputs=outputs)
    synchronize(device)
    started = time.perf_counter()
    fit(model, data, settings, device)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": round(images * epochs / seconds, 1), "epochs": epochs,
            "batch": batch, "loader_workers": num_workers, "fit_images": images,
            "scored_images_per_epoch": 2 * (images // 4), "peak_gpu_mib": peak_mib(device),
            **({"recipe": recipe} if recipe else {})}


def lab_epoch_minutes(fit: dict) -> float:
    return round(LAB_TRAIN_IMAGES / fit["images_per_s"] / 60, 2)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


@dataclasses.dataclass
class Plan:
    """What to time: the grid, its sizes and the lab preset's run."""

    archs: list[str]
    sizes: list[int]
    images: int
    steps: int
    epochs: int
    batch: int | None = None  # None: BATCH per size
    workers: int = 0  # DataLoader workers of the grid's fit runs
    lab_size: int = 512
    lab_batch: int = LAB["train.resnet50.batch_size"]
    lab_workers: int = LAB["compute.loader_workers"]
    lab_images: int = 512
    compile_step: bool = False  # also time torch.compile'd train steps


def measure_one(plan: Plan, arch: str, size: int, device: torch.device, folder: Path
                ) -> dict:
    batch = plan.batch or BATCH.get(size, 16)
    reset_peak(device)
    step = train_step_rate(arch, size, batch, plan.steps, device)
    reset_peak(device)
    loop = fit_rate(arch, size, batch, plan.images, plan.epochs, device, folder,
                    plan.workers)
    reset_peak(device)
    field = train_step_rate(arch, size, batch, plan.steps, device, augment="field")
    run = {"arch": arch, "size": size, "batch": batch, "train_step": step,
           "train_step_field": field,
           "field_relative_rate": round(field["images_per_s"] / step["images_per_s"], 2),
           "fit": loop}
    if plan.compile_step:
        reset_peak(device)
        run["train_step_compiled"] = train_step_rate(arch, size, batch, plan.steps, device,
                                                     compile_step=True)
        run["compiled_speedup"] = round(run["train_step_compiled"]["images_per_s"]
                                        / step["images_per_s"], 2)
    if size == plan.lab_size:
        reset_peak(device)
        run["lab_preset_fit"] = fit_rate(arch, size, plan.lab_batch, plan.lab_images,
                                         plan.epochs, device, folder, plan.lab_workers)
        run["lab_epoch_minutes"] = {"lab_preset": lab_epoch_minutes(run["lab_preset_fit"]),
                                    f"batch_{batch}": lab_epoch_minutes(loop)}
        reset_peak(device)
        run["field_preset_fit"] = fit_rate(arch, size, FIELD[f"train.{arch}.batch_size"],
                                           plan.lab_images, plan.epochs, device, folder,
                                           FIELD["compute.loader_workers"], FIELD_RECIPE)
        run["field_stage_minutes"] = round(
            FIELD_EPOCHS * lab_epoch_minutes(run["field_preset_fit"]), 1)
    return run


def measure(plan: Plan, device: torch.device, report=lambda runs: None) -> list[dict]:
    """Every (size, arch) of ``plan``; ``report(runs)`` after each one."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="retino-gpu-") as scratch:
        for size in plan.sizes:
            for arch in plan.archs:
                runs.append(measure_one(plan, arch, size, device, Path(scratch)))
                print(json.dumps(runs[-1]), flush=True)
                report(runs)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--images", type=int, default=2048, help="fit images per run")
    parser.add_argument("--steps", type=int, default=20, help="timed bare train steps")
    parser.add_argument("--epochs", type=int, default=2, help="timed fit epochs")
    parser.add_argument("--lab-size", type=int, default=512,
                        help="the size whose runs estimate one lab epoch (default 512)")
    parser.add_argument("--batch", type=int, help="one batch size for every run (default: "
                        "256 at 224 px, 64 at 512 px, else 16)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers of the grid's fit runs (default 0, "
                        "params.yaml's compute.loader_workers)")
    parser.add_argument("--lab-batch", type=int, default=Plan.lab_batch,
                        help="batch of the lab preset's fit run (default: the preset's)")
    parser.add_argument("--lab-workers", type=int, default=Plan.lab_workers,
                        help="DataLoader workers of that run (default: the preset's)")
    parser.add_argument("--lab-images", type=int, default=Plan.lab_images,
                        help="fit images of that run")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the train step through torch.compile against eager "
                        "(compute.compile; default: on CUDA only)")
    parser.add_argument("--out", type=Path, default=Path("bench/gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but this machine has no usable CUDA device; "
                 "use --device cpu for a dry run")
    configure_backends(device)
    plan = Plan(args.archs, args.sizes, args.images, args.steps, args.epochs, args.batch,
                args.workers, args.lab_size, args.lab_batch, args.lab_workers,
                args.lab_images,
                device.type == "cuda" if args.compile is None else args.compile)
    started = time.perf_counter()
    machine = {"python": platform.python_version(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name(0) if device.type == "cuda"
               else platform.processor() or platform.machine()}

    def write(runs: list[dict], complete: bool = False) -> None:
        result = {"machine": machine, "runs": runs, "complete": complete,
                  "seconds": round(time.perf_counter() - started, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    runs = measure(plan, device, write)
    write(runs, complete=True)
    print(f"{time.perf_counter() - started:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
