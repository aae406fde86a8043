"""Stage train@<arch>-<init>: train one ResNet, keep the epoch chosen on validation."""

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from retino.atomic import write_text
from retino.grading import NUM_CLASS
from retino.params import as_dict, check_arch, check_init, load_params, run_name
from retino.progress import console
from retino.stage import catching_interrupts, run_stage
from retino.train.checkpoints import save_checkpoint
from retino.train.device import configure_backends, resolve_device
from retino.train.fit import TrainResult, fit, history_rows
from retino.train.inputs import load_stats, load_train_data
from retino.train.models import build_model
from retino.train.recipe import train_settings
from retino.train.resume import ResumeFile, fingerprint, resume_path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--init", required=True)
    parser.add_argument("--data", type=Path, required=True, help="downscaled set")
    parser.add_argument("--stats", type=Path, required=True, help="compute-stats JSON")
    parser.add_argument("--model-out", type=Path, required=True)
    parser.add_argument("--history-out", type=Path, required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    arch, init = check_arch(args.arch), check_init(args.init)
    params = load_params()
    train, arch_params = params.train, params.train.arch(arch)
    device = resolve_device(params.compute.device)  # fails before any work if cuda is missing
    configure_backends(device)
    stats = load_stats(args.stats)
    torch.manual_seed(train.run_seed)
    model = build_model(arch, init == "pretrained", NUM_CLASS, arch_params.imagenet_weights,
                        arch_params.weights_file)
    data = load_train_data(args.data, stats.mean, stats.std, train.validation_fraction,
                           params.data.split_seed)
    settings = train_settings(train, arch, init, params.compute.loader_workers,
                              stats.class_weights)
    console.print(f"[bold]{run_name(arch, init)}[/] on {device}: {len(data.fit)} fit, "
                  f"{len(data.validation)} validation, {len(data.test)} test images")
    resume = ResumeFile(resume_path(args.model_out), fingerprint(
        {"run": run_name(arch, init), "settings": asdict(settings), "train": as_dict(train),
         "split_seed": params.data.split_seed, "device": device.type},
        [args.stats, *sorted(args.data.iterdir())]))
    started = time.perf_counter()

    def epoch_done(result: TrainResult, optimizer: torch.optim.Optimizer) -> None:
        resume.save(result, model, optimizer)
        interrupts.check()  # a Ctrl-C that Python swallowed stops the run here

    with catching_interrupts() as interrupts:
        result = fit(model, data, settings, device, resume.load(), on_epoch=epoch_done)
    best = result.history[result.best_epoch - 1]
    save_checkpoint(args.model_out, result.best_state, arch=arch, init=init,
                    num_class=NUM_CLASS, epoch=result.best_epoch, phase=best.phase,
                    image_size=stats.image_size, mean=list(stats.mean), std=list(stats.std),
                    weighted_loss=train.weighted_loss,
                    params={"train": as_dict(train), "data": as_dict(params.data),
                            "compute": as_dict(params.compute)})
    write_text(args.history_out, pd.DataFrame(history_rows(result.history)).to_csv(
        index=False, float_format="%.4f"))
    resume.remove()
    console.print(f"[bold]{run_name(arch, init)}[/] done in {time.perf_counter() - started:.0f} s:"
                  f" chose epoch {result.best_epoch} ({best.phase}) on validation kappa "
                  f"{best.val_kappa:.3f}; its test accuracy {best.acc_test:.1f} %")


if __name__ == "__main__":
    run_stage(main)
