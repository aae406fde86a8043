"""The CPU levers of the default run, each measured against its baseline in the same run.

    python bench/levers.py            # about 5 minutes on 2 CPU cores

The default run trains and scores ResNet-18 and ResNet-50 on the CPU at
``data.image_size``. This times, on random images and in this one process, what each
setting the default could change buys:

* memory layout: training steps and scoring batches with channels_last against the
  default contiguous (NCHW) layout, for both architectures;
* threads: training steps on one thread against one per core;
* scoring batch size: images/s of scoring at 32, 64 (``evaluate.batch_size``) and 128;
* image size: training-step images/s at 64 and 96 px against ``data.image_size``
  (what a larger default would cost; what size does to accuracy is the default run's
  business, ``bench/default_run.py``);
* torch.compile (``compute.compile``): compiled training steps against eager ones, and
  the seconds the first compiled step takes (the compilation).

Writes bench/levers.json (each figure with its ratio to its baseline) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torchvision import models  # noqa: E402

from measure import project_params  # noqa: E402

from retino.progress import console, print_table  # noqa: E402
from retino.train.phases import compiled  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
TRAIN_BATCH = 16


def interleaved(works: dict[str, Callable[[], None]], repeats: int, rounds: int = 5
                ) -> dict[str, float]:
    """Seconds per call of each work: rounds of ``repeats`` calls, the works taking turns
    within each round (A B C, A B C, ...), so a drift of the machine's speed hits them
    alike; after a warm-up round, the median round of each."""
    for work in works.values():
        for _ in range(2):
            work()
    seconds: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            started = time.perf_counter()
            for _ in range(repeats):
                work()
            seconds[name].append((time.perf_counter() - started) / repeats)
    return {name: statistics.median(values) for name, values in seconds.items()}


def model_in(arch: str, layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(models, arch)(num_classes=5).to(memory_format=LAYOUTS[layout])


def train_step(arch: str, size: int, layout: str, compile_model: bool = False
               ) -> Callable[[], None]:
    """One SGD step of ``arch`` on a random batch of ``TRAIN_BATCH`` images; with
    ``compile_model``, through torch.compile (which compiles on the first step)."""
    model = model_in(arch, layout).train()
    forward = compiled(model, compile_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(TRAIN_BATCH, 3, size, size).to(memory_format=LAYOUTS[layout])
    grades = torch.randint(0, 5, (TRAIN_BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(images), grades).backward()
        optimizer.step()
    return step


def score_batch(arch: str, size: int, layout: str, batch: int) -> Callable[[], None]:
    """Scoring (inference mode) of one random batch of ``batch`` images."""
    model = model_in(arch, layout).eval()
    inputs = torch.randn(batch, 3, size, size).to(memory_format=LAYOUTS[layout])

    def score() -> None:
        with torch.inference_mode():
            model(inputs)
    return score


def images_per_s(seconds: dict[str, float], batches: dict[str, int]) -> dict[str, float]:
    return {name: round(batches[name] / value, 1) for name, value in seconds.items()}


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 2)


def layout_rows(size: int, steps: int) -> list[dict]:
    rows = []
    for arch in ("resnet18", "resnet50"):
        train = images_per_s(interleaved({layout: train_step(arch, size, layout)
                                          for layout in LAYOUTS}, steps),
                             dict.fromkeys(LAYOUTS, TRAIN_BATCH))
        score = images_per_s(interleaved({layout: score_batch(arch, size, layout, 64)
                                          for layout in LAYOUTS}, 2),
                             dict.fromkeys(LAYOUTS, 64))
        rows.append({"lever": "channels_last", "arch": arch, "size": size,
                     "train_images_per_s": train, "score_images_per_s": score,
                     "train_ratio": ratio(train["channels_last"], train["contiguous"]),
                     "score_ratio": ratio(score["channels_last"], score["contiguous"])})
    return rows


class Threads:
    """A training step run on ``count`` threads, the process's count restored after."""

    def __init__(self, step: Callable[[], None], count: int):
        self.step, self.count = step, count

    def __call__(self) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(self.count)
        try:
            self.step()
        finally:
            torch.set_num_threads(before)


def thread_rows(size: int, steps: int, layout: str) -> list[dict]:
    cores = torch.get_num_threads()
    step = train_step("resnet18", size, layout)
    counts = {"1": 1, str(cores): cores}
    train = images_per_s(interleaved({name: Threads(step, count)
                                      for name, count in counts.items()}, steps),
                         dict.fromkeys(counts, TRAIN_BATCH))
    return [{"lever": "threads", "arch": "resnet18", "size": size, "layout": layout,
             "train_images_per_s": train, "train_ratio": ratio(train["1"], train[str(cores)])}]


def batch_rows(size: int, layout: str) -> list[dict]:
    rows = []
    batches = {str(batch): batch for batch in (32, 64, 128)}
    for arch in ("resnet18", "resnet50"):
        # the same 128 images per round, in batches of each size
        works = {name: Repeated(score_batch(arch, size, layout, batch), 128 // batch)
                 for name, batch in batches.items()}
        speeds = images_per_s(interleaved(works, 1), dict.fromkeys(batches, 128))
        rows.append({"lever": "scoring batch", "arch": arch, "size": size, "layout": layout,
                     "score_images_per_s": speeds,
                     "ratio_to_64": {k: ratio(v, speeds["64"]) for k, v in speeds.items()}})
    return rows


class Repeated:
    def __init__(self, work: Callable[[], None], times: int):
        self.work, self.times = work, times

    def __call__(self) -> None:
        for _ in range(self.times):
            self.work()


def size_rows(size: int, steps: int, layout: str) -> list[dict]:
    rows = []
    sides = {str(side): side for side in sorted({size, 64, 96})}
    for arch in ("resnet18", "resnet50"):
        speeds = images_per_s(interleaved({name: train_step(arch, side, layout)
                                           for name, side in sides.items()}, steps),
                              dict.fromkeys(sides, TRAIN_BATCH))
        rows.append({"lever": "image size", "arch": arch, "layout": layout,
                     "train_images_per_s": speeds,
                     "ratio_to_default": {k: ratio(v, speeds[str(size)])
                                          for k, v in speeds.items()}})
    return rows


def compile_rows(size: int, steps: int, layout: str) -> list[dict]:
    """torch.compile of the training step against eager, and what compiling costs: the
    seconds of the first compiled step, which holds the compilation."""
    eager = train_step("resnet18", size, layout)
    compiled_step = train_step("resnet18", size, layout, compile_model=True)
    started = time.perf_counter()
    compiled_step()
    compile_seconds = time.perf_counter() - started
    train = images_per_s(interleaved({"eager": eager, "compiled": compiled_step}, steps),
                         {"eager": TRAIN_BATCH, "compiled": TRAIN_BATCH})
    return [{"lever": "torch.compile", "arch": "resnet18", "size": size, "layout": layout,
             "train_images_per_s": train, "compile_seconds": round(compile_seconds, 1),
             "train_ratio": ratio(train["compiled"], train["eager"])}]


def print_summary(rows: list[dict]) -> None:
    table = []
    for row in rows:
        figures = {key: value for key, value in row.items()
                   if key.endswith("ratio") or key.startswith("ratio_to")}
        table.append((row["lever"], row["arch"], json.dumps(figures)))
    print_table("CPU levers (ratio to each baseline, same run)", ("lever", "arch", "ratios"),
                table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default_size = project_params()["data"]["image_size"]
    parser.add_argument("--size", type=int, default=default_size,
                        help=f"image side (default: params.yaml's data.image_size, {default_size})")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--out", type=Path, default=Path("bench/levers.json"))
    args = parser.parse_args()
    rows = layout_rows(args.size, args.steps)
    best = "channels_last" if all(row["train_ratio"] > 1 for row in rows) else "contiguous"
    rows += thread_rows(args.size, args.steps, best)
    rows += batch_rows(args.size, best)
    rows += size_rows(args.size, args.steps, best)
    rows += compile_rows(args.size, args.steps, best)
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "processor": platform.processor(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "train_batch": TRAIN_BATCH, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(rows)
    console.print(f"-> {args.out}")


if __name__ == "__main__":
    main()
