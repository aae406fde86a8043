"""Speed of retino's input path, feature-extraction phase, no-op repro and train steps.

    python bench/run.py --quick   # under 10 minutes on 2 CPU cores
    python bench/run.py           # larger samples, more repeats
    python bench/run.py --train-steps-only --out bench/train_steps.json   # the last part

Prints a table and writes bench/results.json. Every speed-up is a ratio against a
baseline measured in the same run, on the same images, with the same worker count:

* loader_speedup_512 (and at data.image_size): images/s delivered to the model,
  normalised and randomly flipped, by the project's path (uint8 arrays decoded once,
  memory-mapped, normalised and flipped per batch on the device) against the lab's
  (PIL opens a 512 px JPEG and applies flips, ToTensor and Normalize in
  ``__getitem__`` every epoch, i.e. ``RetinopathyLoader``);
* feature_phase_speedup: one feature-extraction epoch (fc on stored backbone
  features) against one epoch that runs the frozen backbone over the images;
* noop_repro_seconds: ``dvc repro`` when nothing changed, in a scratch copy of the
  project on the default synthetic data;
* train-step images/s and peak memory of ResNet-18/50 through the project's
  training step (on the GPU as well, when there is one), with the lab's flips
  (``train.augment: flips``) and with the field's augmentation (``field``), step by
  step in turns in the same process: ``field_relative_rate`` is field's rate as a
  share of flips'.

The scratch project's pretrained stages use stand-in random weights in a temporary
TORCH_HOME: only their speed matters here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from measure import (ROOT, peak_rss_mib, project_params, scratch_project,  # noqa: E402
                     stand_in_torch_home)

from retino.data.downscale import prepare_downscaled  # noqa: E402
from retino.data.layout import IMAGE_FOLDER, image_path, read_split, write_split  # noqa: E402
from retino.data.sources import read_source  # noqa: E402
from retino.data.synthetic import write_dataset  # noqa: E402
from retino.lab import FundusImages, image_transform  # noqa: E402
from retino.progress import console, print_table  # noqa: E402
from retino.train.augment import FieldAugmentation  # noqa: E402
from retino.train.device import autocast, configure_backends, memory_format  # noqa: E402
from retino.train.inputs import (ImageArray, ToModel, epoch_generator, make_loader,  # noqa: E402
                                 set_epoch, to_device)
from retino.train.loop import extract_features, train_one_epoch  # noqa: E402
from retino.train.models import build_model, set_backbone_trainable  # noqa: E402

CPU = torch.device("cpu")
MEAN, STD = (0.45, 0.25, 0.15), (0.28, 0.17, 0.10)  # any fixed values: speed only
TARGETS = {"loader_speedup_512": (">=", 5.0), "feature_phase_speedup": (">=", 20.0),
           "noop_repro_seconds": ("<=", 3.0), "gpu_resnet50_224_images_per_s": (">=", 2500.0)}
EYEPACS_TRAIN_IMAGES = 28_100
SIZES = {"quick": dict(loader_images=256, loader_epochs=2, feature_images=512,
                       noop_patients=600, steps=8),
         "full": dict(loader_images=768, loader_epochs=3, feature_images=2048,
                      noop_patients=2500, steps=30)}


# --- the two input paths ------------------------------------------------------------

def make_image_sets(folder: Path, images: int, size: int) -> tuple[Path, Path]:
    """The same photos twice: the lab's JPEG folder at ``size`` px and retino's arrays."""
    raw = folder / "raw"
    write_dataset(raw, patients=images // 2, canvas_height=size, test_fraction=0.2, seed=3,
                  workers=os.cpu_count() or 1)
    arrays = folder / "arrays"
    prepare_downscaled(read_source("synthetic", raw, False, 0.2, 0), arrays, size,
                       os.cpu_count() or 1, "stop")
    lab = folder / "lab"
    (lab / IMAGE_FOLDER).mkdir(parents=True)
    split = read_split(arrays, "train")
    for name, pixels in zip(split.names, ImageArray.from_split(arrays, "train")):
        Image.fromarray(pixels[0].numpy()).save(image_path(lab / IMAGE_FOLDER, name),
                                                quality=90)
    write_split(lab, "train", split)
    return lab, arrays


def lab_epoch(loader) -> int:
    count = 0
    for images, _ in loader:  # already normalised float tensors
        count += len(images)
    return count


def project_epoch(loader, to_model: ToModel, epoch: int) -> int:
    flips, count = epoch_generator(0, epoch, 1), 0
    set_epoch(loader, epoch)
    for batch, _ in loader:
        count += len(to_model(batch, flips))
    return count


def loader_speed(folder: Path, size: int, images: int, epochs: int, workers: int) -> dict:
    """Images/s of both paths over the train split, alternating epochs, after a warm-up."""
    lab_folder, arrays = make_image_sets(folder, images, size)
    lab = make_loader(FundusImages.from_split(lab_folder, "train",
                                              image_transform("train", MEAN, STD)),
                      16, True, workers, CPU)
    project = make_loader(ImageArray.from_split(arrays, "train"), 16, True, workers, CPU)
    to_model = ToModel(MEAN, STD, CPU)
    seconds = {"lab": 0.0, "retino": 0.0}
    count = 0
    for epoch in range(epochs + 1):  # epoch 0 warms the page cache and is not timed
        started = time.perf_counter()
        count = lab_epoch(lab)
        lab_s = time.perf_counter() - started
        started = time.perf_counter()
        project_epoch(project, to_model, epoch)
        project_s = time.perf_counter() - started
        if epoch:
            seconds["lab"] += lab_s
            seconds["retino"] += project_s
    rates = {k: count * epochs / v for k, v in seconds.items()}
    return {"size": size, "images": count, "epochs": epochs, "workers": workers,
            "lab_images_per_s": round(rates["lab"], 1),
            "retino_images_per_s": round(rates["retino"], 1),
            "speedup": round(rates["retino"] / rates["lab"], 2)}


# --- feature-extraction phase ---------------------------------------------------------

def feature_phase(arrays: Path, arch: str, epochs: int) -> dict:
    """One fc epoch on stored features vs one epoch through the frozen backbone, and the
    whole phase of ``epochs`` epochs both ways (stored: the one-off extraction too)."""
    torch.manual_seed(0)
    model = build_model(arch, pretrained=False)  # weights do not change the speed
    set_backbone_trainable(model, False)
    images = ImageArray.from_split(arrays, "train")
    to_model = ToModel(MEAN, STD, CPU)
    criterion = nn.CrossEntropyLoss()
    frozen = make_loader(images, 16, True, 0, CPU)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=1e-3, momentum=0.9)
    started = time.perf_counter()
    model.train()
    train_one_epoch(model, frozen, criterion, optimizer,
                    lambda batch: to_model(batch, epoch_generator(0, 0, 1)), "frozen backbone")
    backbone_s = time.perf_counter() - started
    started = time.perf_counter()
    stored = extract_features(model, make_loader(images, 64, False, 0, CPU), to_model)
    extract_s = time.perf_counter() - started
    features = make_loader(stored, 16, True, 0, CPU)
    timings = []
    for _ in range(5):  # an fc epoch is short: take the median of five
        started = time.perf_counter()
        model.fc.train()
        train_one_epoch(model.fc, features, criterion, optimizer, to_device(CPU),
                        "stored features")
        timings.append(time.perf_counter() - started)
    stored_s = statistics.median(timings)
    frozen_phase_s, stored_phase_s = backbone_s * epochs, extract_s + stored_s * epochs
    return {"arch": arch, "images": len(images), "size": int(images[0][0].shape[0]),
            "frozen_backbone_epoch_s": round(backbone_s, 3),
            "stored_features_epoch_s": round(stored_s, 4),
            "feature_extraction_once_s": round(extract_s, 3),
            "speedup": round(backbone_s / stored_s, 1),
            "epochs": epochs, "frozen_backbone_phase_s": round(frozen_phase_s, 2),
            "stored_features_phase_s": round(stored_phase_s, 3),
            "phase_speedup": round(frozen_phase_s / stored_phase_s, 2)}


# --- no-op dvc repro --------------------------------------------------------------------

def _shell(command: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def noop_repro(folder: Path, patients: int) -> dict:
    """Seconds of ``dvc repro`` with nothing to do, after a full run (median of 3)."""
    params = project_params()
    params["synthesize"]["patients"] = patients
    params["data"]["image_size"] = 32
    params["train"].update(epochs_feature_extraction=1, epochs_fine_tuning=1)
    env = {**os.environ, "PYTHONPATH": str(folder / "project"),
           "TORCH_HOME": str(stand_in_torch_home(folder / "torch_home")),
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    project = scratch_project(folder / "project", params, env)
    console.print(f"noop repro: first a full `dvc repro` on {2 * patients} images ...")
    started = time.perf_counter()
    _shell(["dvc", "repro"], project, env)
    full_s = time.perf_counter() - started
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        output = _shell(["dvc", "repro"], project, env)
        timings.append(time.perf_counter() - started)
        if "Running stage" in output:
            raise RuntimeError(f"the second `dvc repro` was not a no-op:\n{output}")
    stages = len(_shell(["dvc", "stage", "list", "--name-only"], project, env).split())
    return {"images": 2 * patients, "stages": stages, "first_repro_s": round(full_s, 1),
            "noop_repro_s": [round(t, 2) for t in timings],
            "noop_repro_seconds": round(statistics.median(timings), 2)}


# --- train steps ------------------------------------------------------------------------

def train_step_worker(arch: str, device_name: str, size: int, batch: int, steps: int) -> dict:
    """Images/s of forward + backward + SGD step on in-memory uint8 batches, through the
    project's ToModel (flips) or FieldAugmentation (field), autocast and memory format,
    the two taking turns step by step; and the peak memory."""
    device = torch.device(device_name)
    configure_backends(device)
    torch.manual_seed(0)
    model = build_model(arch, pretrained=False).to(device=device,
                                                   memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    to_model = ToModel(MEAN, STD, device)
    prepares = {"flips": to_model, "field": FieldAugmentation(to_model)}
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    labels = torch.randint(0, 5, (batch,)).to(device)
    if device.type == "cuda":
        pixels = pixels.pin_memory()

    def step(augment: str, index: int) -> None:
        inputs = prepares[augment](pixels, epoch_generator(0, index, 1))
        with autocast(device):
            loss = criterion(model(inputs).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for index in range(3):  # warm-up: cuDNN autotuning, allocator, page faults
        step("flips", index)
        step("field", index)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = dict.fromkeys(prepares, 0.0)
    for index in range(steps):
        for augment in prepares:  # in turns, so that drift reaches both alike
            synchronize()
            started = time.perf_counter()
            step(augment, index)
            synchronize()
            seconds[augment] += time.perf_counter() - started
    peak_mib = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                else peak_rss_mib() * 2**20) / 2**20
    rates = {augment: batch * steps / seconds[augment] for augment in prepares}
    return {"arch": arch, "device": device_name, "size": size, "batch": batch,
            "steps": steps, "images_per_s": round(rates["flips"], 1),
            "field_images_per_s": round(rates["field"], 1),
            "field_relative_rate": round(rates["field"] / rates["flips"], 3),
            "peak_memory_mib": round(peak_mib, 1),
            "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda"
            else "process peak resident memory (VmHWM)"}


def train_step(arch: str, device: str, size: int, batch: int, steps: int) -> dict:
    """``train_step_worker`` in a fresh process, so each peak memory is its own."""
    command = [sys.executable, __file__, "--train-step", arch, device, str(size), str(batch),
               str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"train step {arch} on {device} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_steps(steps: int, default_size: int) -> list[dict]:
    runs = [train_step(arch, "cpu", default_size, 16, steps) for arch in ("resnet18", "resnet50")]
    if torch.cuda.is_available():
        for size, batch in ((224, 256), (512, 64)):
            runs += [train_step(arch, "cuda", size, batch, 4 * steps)
                     for arch in ("resnet18", "resnet50")]
    return runs


# --- report -------------------------------------------------------------------------------

def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def check_targets(results: dict) -> dict:
    figures = {"loader_speedup_512": results["loader_speedup_512"],
               "feature_phase_speedup": results["feature_phase_speedup"],
               "noop_repro_seconds": results["noop_repro_seconds"]}
    gpu = [r for r in results["train_step"] if r["device"] == "cuda"
           and r["arch"] == "resnet50" and r["size"] == 224]
    if gpu:
        figures["gpu_resnet50_224_images_per_s"] = gpu[0]["images_per_s"]
    return {name: {"value": value, "target": f"{TARGETS[name][0]} {TARGETS[name][1]:g}",
                   "met": value >= TARGETS[name][1] if TARGETS[name][0] == ">="
                   else value <= TARGETS[name][1]}
            for name, value in figures.items()}


def eyepacs_epoch_estimates(runs: list[dict]) -> dict:
    """Minutes of one 512 px pass over the lab's 28,100 train images, from measured steps."""
    return {r["arch"]: round(EYEPACS_TRAIN_IMAGES / r["images_per_s"] / 60, 2)
            for r in runs if r["device"] == "cuda" and r["size"] == 512}


def run_all(mode: str, workers: int) -> dict:
    sizes = SIZES[mode]
    default_size = project_params()["data"]["image_size"]
    results: dict = {"mode": mode, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="retino-bench-") as scratch:
        scratch = Path(scratch)
        console.rule("input path")
        results["loader"] = [loader_speed(scratch / f"loader{size}", size,
                                          sizes["loader_images"] * (4 if size < 512 else 1),
                                          sizes["loader_epochs"], workers)
                             for size in (512, default_size)]
        console.rule("feature-extraction phase")
        results["feature_phase"] = feature_phase(
            downscaled_set(scratch / f"loader{default_size}", sizes["feature_images"],
                           default_size), "resnet18",
            project_params()["train"]["epochs_feature_extraction"])
        console.rule("no-op dvc repro")
        results["noop_repro"] = noop_repro(scratch / "noop", sizes["noop_patients"])
    console.rule("train steps")
    results["train_step"] = train_steps(sizes["steps"], default_size)
    results["loader_speedup_512"] = results["loader"][0]["speedup"]
    results["loader_speedup_default_size"] = results["loader"][1]["speedup"]
    results["feature_phase_speedup"] = results["feature_phase"]["speedup"]
    results["feature_phase_whole_speedup"] = results["feature_phase"]["phase_speedup"]
    results["noop_repro_seconds"] = results["noop_repro"]["noop_repro_seconds"]
    results["eyepacs_512_epoch_minutes"] = eyepacs_epoch_estimates(results["train_step"])
    results["targets"] = check_targets(results)
    return results


def downscaled_set(folder: Path, images: int, size: int) -> Path:
    """A downscaled set of ``images`` photos at ``size`` px (reused from the loader run when
    it is at least that large)."""
    arrays = folder / "arrays"
    if arrays.is_dir() and len(read_split(arrays, "train")) >= 0.75 * images:
        return arrays
    return make_image_sets(folder.with_name(folder.name + "-features"), images, size)[1]


def print_summary(results: dict) -> None:
    rows = [[f"loader images/s at {r['size']} px (lab -> retino)",
             f"{r['lab_images_per_s']:.0f} -> {r['retino_images_per_s']:.0f}",
             f"{r['speedup']:.1f}x"] for r in results["loader"]]
    f = results["feature_phase"]
    rows.append([f"feature-phase epoch, {f['arch']} {f['images']} images at {f['size']} px",
                 f"{f['frozen_backbone_epoch_s']:.2f} s -> {f['stored_features_epoch_s']:.4f} s",
                 f"{f['speedup']:.0f}x"])
    rows.append([f"whole feature phase ({f['epochs']} epochs; stored: extraction included)",
                 f"{f['frozen_backbone_phase_s']:.2f} s -> {f['stored_features_phase_s']:.3f} s",
                 f"{f['phase_speedup']:.1f}x"])
    rows.append(["no-op dvc repro", f"{results['noop_repro_seconds']:.2f} s", ""])
    rows += train_step_rows(results["train_step"])
    print_table(f"retino benchmark ({results['mode']})", ["measure", "value", "ratio"], rows)
    for name, target in results["targets"].items():
        mark = "[green]met[/]" if target["met"] else "[red]NOT met[/]"
        console.print(f"{name} = {target['value']} (target {target['target']}): {mark}")
    if results["eyepacs_512_epoch_minutes"]:
        console.print(f"one 512 px EyePACS epoch (28,100 images), train steps only: "
                      f"{results['eyepacs_512_epoch_minutes']} minutes")
    elif not results["machine"]["gpu"]:
        console.print("no CUDA device here: the GPU figures were not measured")


def train_step_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r in runs:
        rows.append([f"train step {r['arch']} {r['device']} {r['size']} px batch {r['batch']}",
                     f"{r['images_per_s']:.0f} img/s", f"peak {r['peak_memory_mib']:.0f} MiB"])
        rows.append(["  the same with train.augment: field",
                     f"{r['field_images_per_s']:.0f} img/s", f"{r['field_relative_rate']:.2f}x"])
    return rows


def print_train_steps(runs: list[dict]) -> None:
    print_table("retino train steps, flips against field", ["measure", "value", "ratio"],
                train_step_rows(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller samples (< 10 min)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers for both input paths (default 0)")
    parser.add_argument("--train-steps-only", action="store_true",
                        help="only the train steps (flips against field), e.g. with --out "
                        "bench/train_steps.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--train-step", nargs=5, metavar=("ARCH", "DEVICE", "SIZE", "BATCH",
                                                          "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_step:
        arch, device, size, batch, steps = args.train_step
        print(json.dumps(train_step_worker(arch, device, int(size), int(batch), int(steps))))
        return
    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    if args.train_steps_only:
        results = {"mode": mode, "machine": machine(),
                   "train_step": train_steps(SIZES[mode]["steps"],
                                             project_params()["data"]["image_size"])}
        results["bench_seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print_train_steps(results["train_step"])
        return
    results = run_all(mode, args.workers)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)
    console.print(f"{results['bench_seconds']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
