"""The GPU box, end to end, in one short run: every stage on CUDA, and what the CPU
cannot measure.

    bench/gpu_check.sh                                # on the lent GPU machine
    PYTHONPATH=. python bench/gpu_check.py --cpu-dry-run --out /tmp/check.json
                                                      # the same steps, tiny, on the CPU

Needs what a lent GPU machine has (torch, torchvision, numpy, pandas, pillow, pyyaml,
rich, matplotlib) plus ruamel.yaml, which the stages read params.yaml with: carried in
``.gpu-deps/`` (bench/gpu_check.sh says how). Each section runs in a process of its own
with a time limit, in a scratch copy of the project (``--workdir``), and ``--out`` is
rewritten after every section, so a run cut short still says how far it got:

* ``pipeline``: every stage of dvc.yaml on CUDA (``bench/gpu_pipeline.py``): the
  default recipe, its pretrained runs on stand-in ImageNet weights, so the
  stored-feature phase runs too;
* ``pipeline_field``: the same with ``retino preset field`` (regression head, field
  augmentation, Nesterov SGD, cosine schedule), EMA and ``compute.compile: true`` (in
  the CPU dry run: the data stages and one model, without compile; its default pipeline
  trains ResNet-18 alone);
* ``predict``: ``retino predict --explain`` with a CUDA-trained model, then the same
  photos graded by the model reloaded on the CPU;
* ``agreement``: one model file scoring the test split on CUDA and on the CPU (the
  share given the same grade, the largest referable-score difference, both QWKs), and
  on CUDA with TF32 against true float32 (largest logit difference, grades changed);
* ``syncs``: host-device synchronisations per training step
  (``torch.cuda.set_sync_debug_mode``), with flips and classification and with the
  field augmentation and the regression head, for this code and, when carried in
  ``.gpu-deps/retino-before``, the code before the step stopped waiting;
* ``fit_rates``: ``fit``'s images/s at batch 4, 16 and 64 at 512 px (ResNet-50);
* ``determinism``: two identical short runs compared bit for bit, without and with
  ``compute.deterministic``, and what it costs in time;
* ``compile_field``: ``torch.compile`` against eager (the compile seconds), and
  ``train.augment: field`` against flips, at 512 px (``bench/gpu.py``'s train steps).

With ``--cpu-dry-run`` every section runs at a tiny size on the CPU, and the parts
that need CUDA (TF32, synchronisations, compile) say so instead of running: the suite
runs it this way, so the script cannot rot between leases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# The sections in order, each with its time limit (seconds) on the GPU machine.
SECTIONS = {"pipeline": 150, "pipeline_field": 150, "predict": 40, "agreement": 40,
            "syncs": 60, "fit_rates": 90, "determinism": 90, "compile_field": 120}
# Small, short runs on CUDA, meant to take about two minutes on one GPU (not yet timed).
GPU_PIPELINE = ("compute.device=cuda", "synthesize.patients=150", "data.image_size=128",
                "train.epochs_feature_extraction=1", "train.epochs_fine_tuning=1",
                "train.resnet18.batch_size=32", "train.resnet50.batch_size=32")
DRY_PIPELINE = ("compute.device=cpu", "synthesize.patients=30", "synthesize.canvas_height=64",
                "data.image_size=32", "train.epochs_feature_extraction=1",
                "train.epochs_fine_tuning=1", "train.resnet18.batch_size=8",
                "train.resnet50.batch_size=8")
# The dry run's pipelines: ResNet-18 alone (ResNet-50 runs the same code), and for the
# field preset one model after the data stages, enough to run the preset's code path.
DRY_STAGES = ("check-params", "synthesize", "downscale-images", "compute-stats",
              "train@resnet18-pretrained", "train@resnet18-scratch",
              "evaluate@resnet18-pretrained", "evaluate@resnet18-scratch", "plots-page")
DRY_FIELD_STAGES = ("check-params", "downscale-images", "compute-stats",
                    "train@resnet18-scratch", "evaluate@resnet18-scratch")
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "retino", "bench/gpu_pipeline.py",
                 "metrics/external/README.md")
MODEL = "models/resnet18-pretrained.pt"


def needs_cuda(what: str) -> dict:
    return {"skipped": f"needs CUDA ({what}); this run is on the CPU"}


def project(workdir: Path) -> Path:
    """The scratch copy of the project the pipeline sections run in (made once)."""
    folder = workdir / "project"
    if not folder.is_dir():
        for name in PROJECT_FILES:
            source, target = ROOT / name, folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
    return folder


def torch_home(workdir: Path) -> Path:
    """Stand-in ImageNet weights (random, BatchNorm calibrated), made once."""
    from measure import stand_in_torch_home

    home = workdir / "torch_home"
    if not home.is_dir():
        stand_in_torch_home(home)
    return home


def section_env(workdir: Path) -> dict:
    paths = [str(project(workdir)), str(ROOT / ".gpu-deps"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "TORCH_HOME": str(torch_home(workdir)),
            "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# --- the sections ---------------------------------------------------------------------

def pipeline(workdir: Path, dry: bool, field: bool = False) -> dict:
    """Every stage of dvc.yaml, in order, through bench/gpu_pipeline.py."""
    from retino.presets import PRESETS

    overrides = list(DRY_PIPELINE if dry else GPU_PIPELINE)
    if field:
        preset = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
                  for key, value in PRESETS["field"].items()
                  if not key.startswith(("data.image_size", "train.epochs", "compute.",
                                         "train.resnet"))]
        overrides += preset + ["train.ema=0.99", f"compute.compile={str(not dry).lower()}"]
    folder = project(workdir)
    out = workdir / f"pipeline{'_field' if field else ''}.json"
    stages = (DRY_FIELD_STAGES if field else DRY_STAGES) if dry else ()
    command = [sys.executable, "bench/gpu_pipeline.py", "--out", str(out), "--params",
               *overrides, *(["--stages", *stages] if stages else [])]
    result = subprocess.run(command, cwd=folder, env=section_env(workdir),
                            capture_output=True, text=True)
    report = json.loads(out.read_text()) if out.is_file() else {}
    return {"returncode": result.returncode, "overrides": overrides,
            "stages": [{key: stage[key] for key in ("stage", "seconds", "returncode",
                                                    "last_lines")}
                       for stage in report.get("stages", [])],
            **({"error": result.stderr[-3000:]} if result.returncode else {})}


def predict(workdir: Path, dry: bool) -> dict:
    """``retino predict --explain`` on the training device, then on the CPU."""
    folder = project(workdir)
    photos = sorted((folder / "data" / "synthetic" / "data").glob("*.jpeg"))[:8]
    runs = {}
    for device in ("cpu",) if dry else ("cuda", "cpu"):
        out = workdir / f"predictions-{device}.csv"
        command = [sys.executable, "-m", "retino", "predict", "--model", MODEL,
                   *map(str, photos), "--device", device, "--out", str(out),
                   "--explain", str(workdir / f"explain-{device}")]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=folder, env=section_env(workdir),
                                capture_output=True, text=True)
        runs[device] = {"returncode": result.returncode,
                        "seconds": round(time.perf_counter() - started, 1),
                        "explained": len(list((workdir / f"explain-{device}").glob("*"))),
                        "grades": _csv_column(out, "grade"),
                        **({"error": result.stderr[-2000:]} if result.returncode else {})}
    if "cuda" in runs:
        cuda, cpu = runs["cuda"]["grades"], runs["cpu"]["grades"]
        runs["same_grades"] = sum(a == b for a, b in zip(cuda, cpu))
        runs["photos"] = len(cuda)
    return runs


def _csv_column(path: Path, column: str) -> list[str]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row[column] for row in csv.DictReader(f)]


def agreement(workdir: Path, dry: bool) -> dict:
    """The same model file scoring the test split on CUDA and on the CPU; TF32 on CUDA."""
    import numpy as np
    import torch

    from retino.grading import predicted_grades, quadratic_weighted_kappa, referable_score
    from retino.report.evaluation import predict_test_split

    folder = project(workdir)
    os.chdir(folder)
    scored = {device: predict_test_split(MODEL, "data/downscaled", device, 64, 0)
              for device in (("cpu",) if dry else ("cuda", "cpu"))}
    report = {"test_images": len(scored["cpu"].actual)}
    for device, test in scored.items():
        report[f"qwk_{device}"] = quadratic_weighted_kappa(test.actual,
                                                           predicted_grades(test.logits))
    if dry:
        return {**report, "cuda_against_cpu": needs_cuda("a CUDA device"),
                "tf32": needs_cuda("TF32")}
    cuda, cpu = scored["cuda"].logits, scored["cpu"].logits
    report["same_grade_share"] = float(np.mean(predicted_grades(cuda) == predicted_grades(cpu)))
    report["largest_referable_score_difference"] = float(np.max(np.abs(
        referable_score(cuda) - referable_score(cpu))))
    report["largest_logit_difference"] = float(np.max(np.abs(cuda - cpu)))
    report["tf32"] = _tf32_against_fp32(scored["cuda"], torch)
    return report


def _tf32_against_fp32(test, torch) -> dict:
    """Logits of the test images with cuDNN's TF32 convolutions (this torch's default)
    against the true float32 ones evaluate computes."""
    import numpy as np

    from retino.grading import predicted_grades
    from retino.train.inputs import make_loader

    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    outputs = []
    with torch.no_grad():
        for inputs, _ in make_loader(test.images, 64, False, 0, torch.device("cuda")):
            outputs.append(test.model(test.to_model(inputs).float()).float().cpu())
    tf32 = torch.cat(outputs).numpy()
    return {"largest_logit_difference": float(np.max(np.abs(tf32 - test.logits))),
            "grades_changed": int(np.sum(predicted_grades(tf32) != predicted_grades(
                test.logits)))}


def syncs(workdir: Path, dry: bool) -> dict:
    """Synchronisations per training step, for this code and the code carried before."""
    if dry:
        return needs_cuda("torch.cuda.set_sync_debug_mode")
    codes = {"now": str(ROOT)}
    before = ROOT / ".gpu-deps" / "retino-before"
    if before.is_dir():
        codes["before"] = str(before)
    found = {}
    for label, code in codes.items():
        result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_syncs.py")],
                                env={**os.environ, "PYTHONPATH": code}, capture_output=True,
                                text=True)
        found[label] = (json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0
                        else {"error": result.stderr[-2000:]})
    return found


def fit_rates(workdir: Path, dry: bool) -> dict:
    """fit's images/s at the lab's batch of 4, at 16 and at 64 (ResNet-50, 512 px)."""
    import torch
    import gpu

    device = torch.device("cpu" if dry else "cuda")
    size, images = (32, 8) if dry else (512, 256)
    folder = workdir / "arrays"
    folder.mkdir(exist_ok=True)
    rates = {}
    for batch in (2, 4) if dry else (4, 16, 64):
        gpu.reset_peak(device)
        rates[f"batch_{batch}"] = gpu.fit_rate("resnet50", size, batch, images, 1, device, folder)
    return {"size": size, "arch": "resnet50", **rates}


def determinism(workdir: Path, dry: bool) -> dict:
    """Two identical short runs, bit for bit, without and with compute.deterministic."""
    found = {}
    for deterministic in (False,) if dry else (False, True):
        result = subprocess.run([sys.executable, __file__, "--one-run-pair",
                                 str(int(deterministic)), "--workdir", str(workdir),
                                 *(["--cpu-dry-run"] if dry else [])],
                                env=section_env(workdir), capture_output=True, text=True)
        found[f"deterministic_{str(deterministic).lower()}"] = (
            json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0
            else {"error": result.stderr[-2000:]})
    if not dry:
        plain, exact = found["deterministic_false"], found["deterministic_true"]
        if "seconds" in plain and "seconds" in exact:
            found["cost"] = round(exact["seconds"] / plain["seconds"], 2)
    return found


def run_pair(deterministic: bool, workdir: Path, dry: bool) -> dict:
    """In a process of its own (the CUDA settings are the process's): two identical
    scratch runs of ResNet-18 through ``fit``; whether their weights are equal."""
    import torch
    import gpu

    from retino.train.device import configure_backends
    from retino.train.fit import fit
    from retino.train.inputs import TrainData
    from retino.train.models import build_model
    from retino.train.recipe import TrainSettings

    device = torch.device("cpu" if dry else "cuda")
    configure_backends(device, deterministic)
    size, images = (32, 16) if dry else (128, 512)
    folder = workdir / f"pair{int(deterministic)}"
    folder.mkdir(exist_ok=True)
    data = TrainData(fit=gpu.image_array(folder, "fit", images, size, 1),
                     validation=gpu.image_array(folder, "val", images // 4, size, 2),
                     test=gpu.image_array(folder, "test", images // 4, size, 3),
                     mean=gpu.MEAN, std=gpu.STD)
    settings = TrainSettings(init="scratch", epochs_feature_extraction=2,
                             epochs_fine_tuning=0, batch_size=16, lr=1e-3, momentum=0.9,
                             weight_decay=5e-4, class_weights=None, seed=0)
    weights, started = [], time.perf_counter()
    for _ in range(2):
        torch.manual_seed(0)
        result = fit(build_model("resnet18", pretrained=False), data, settings, device)
        weights.append(result.best_state)
    seconds = (time.perf_counter() - started) / 2
    same = all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    return {"identical_weights": same, "seconds": round(seconds, 1),
            "differing_tensors": sum(not torch.equal(weights[0][k], weights[1][k])
                                     for k in weights[0])}


def compile_field(workdir: Path, dry: bool) -> dict:
    """torch.compile against eager, and field against flips, on bare train steps."""
    import torch
    import gpu

    device = torch.device("cpu" if dry else "cuda")
    size, batch, steps = (32, 2, 1) if dry else (512, 16, 20)
    report = {"size": size, "batch": batch,
              "eager": gpu.train_step_rate("resnet50", size, batch, steps, device),
              "field": gpu.train_step_rate("resnet50", size, batch, steps, device,
                                           augment="field")}
    report["field_relative_rate"] = round(report["field"]["images_per_s"]
                                          / report["eager"]["images_per_s"], 2)
    if dry:
        report["compiled"] = needs_cuda("compute.compile")
        return report
    report["compiled"] = gpu.train_step_rate("resnet50", size, batch, steps, device,
                                             compile_step=True)
    report["compiled_speedup"] = round(report["compiled"]["images_per_s"]
                                       / report["eager"]["images_per_s"], 2)
    return report


RUNNERS = {"pipeline": pipeline, "pipeline_field": lambda w, d: pipeline(w, d, field=True),
           "predict": predict, "agreement": agreement, "syncs": syncs,
           "fit_rates": fit_rates, "determinism": determinism,
           "compile_field": compile_field}


# --- the run --------------------------------------------------------------------------

def write_json(out: Path, document: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(out)


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "date": time.strftime("%Y-%m-%d")}


def run_sections(names: list[str], workdir: Path, out: Path, dry: bool) -> dict:
    """Each section in a process of its own, within its limit; ``out`` after each."""
    document = {"command": " ".join(sys.argv), "machine": machine(), "cpu_dry_run": dry,
                "sections": {}, "running": None}
    for name in names:
        document["running"] = name
        write_json(out, document)
        part = workdir / f"{name}.json"
        command = [sys.executable, __file__, "--section", name, "--workdir", str(workdir),
                   "--part", str(part), *(["--cpu-dry-run"] if dry else [])]
        started = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True,
                                    timeout=None if dry else SECTIONS[name])
            outcome = (json.loads(part.read_text()) if result.returncode == 0 and part.is_file()
                       else {"error": result.stderr[-3000:]})
        except subprocess.TimeoutExpired:
            outcome = {"error": f"over its limit of {SECTIONS[name]} s"}
        document["sections"][name] = {"seconds": round(time.perf_counter() - started, 1),
                                      **outcome}
        print(f"{name}: {document['sections'][name]['seconds']} s"
              + (" (error)" if "error" in outcome else ""), flush=True)
    document["running"] = None
    write_json(out, document)
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check.json")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="every section tiny, on the CPU (what the tests run)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new one)")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # one section, in its process
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one-run-pair", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run_pair is not None:
        print(json.dumps(run_pair(bool(args.one_run_pair), args.workdir, args.cpu_dry_run)))
    elif args.section:
        write_json(args.part, RUNNERS[args.section](args.workdir, args.cpu_dry_run))
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retino_gpu_check_"))
        run_sections(args.sections, workdir, args.out, args.cpu_dry_run)


if __name__ == "__main__":
    main()
