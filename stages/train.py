"""Stage train@<arch>-<init>: train one ResNet, keep the epoch chosen on validation.

Writes one file, the model (models/<arch>-<init>.pt), with the per-epoch history inside
(evaluate publishes it as plots/history/<arch>-<init>.csv). Every output of this stage
is then in DVC's cache, which DVC's run-cache needs: an experiment whose train params
were run before gets its models back instead of training them again.

Reads params.yaml: train.head (classification | regression), train.regression_loss
(smooth_l1 | mse), train.weighted_loss, train.epochs_feature_extraction,
train.epochs_fine_tuning, train.momentum, train.weight_decay,
train.validation_fraction, train.run_seed, train.augment (flips | field),
train.lr_schedule (constant | cosine), train.warmup_epochs, train.optimizer (sgd |
nesterov | adamw), train.ema, train.label_smoothing, train.gpus, train.<arch>
(batch_size, lr, imagenet_weights, weights_file), data.split_seed, compute.device
(auto | cpu | cuda), compute.loader_workers, compute.compile (CUDA only),
compute.deterministic (CUDA: reproducible kernels; recorded in the model file).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from retino.grading import HEAD_OUTPUTS, NUM_CLASS
from retino.params import check_arch, check_init, load_params, run_name
from retino.progress import console, stopwatch
from retino.stage import Stopped, catching_interrupts, run_stage, stage_parser
from retino.train import distributed
from retino.train.checkpoints import save_checkpoint
from retino.train.device import check_compile, configure_backends, resolve_device
from retino.train.fit import (TrainingState, TrainResult, fit, history_rows,
                              training_verdict, validation_decisions)
from retino.train.inputs import load_stats, load_train_data, validation_text
from retino.train.models import build_model, weights_enum, weights_source
from retino.train.recipe import train_settings
from retino.train.resume import (ResumeFile, RunIdentity, code_digests, data_digest,
                                 file_digest, resume_path)


def parse_args() -> argparse.Namespace:
    return stage_parser(__doc__, per_run=True, paths={
        "--stats": "compute-stats JSON", "--model-out": "model file to write",
    }).parse_args()


def run_identity(args: argparse.Namespace, recorded: dict, device: torch.device,
                 weights_file: Path | None) -> RunIdentity:
    """What a resume state must share with this run (see retino.train.resume)."""
    return RunIdentity(
        settings={**recorded, "run": run_name(args.arch, args.init), "device": device.type},
        code=code_digests(Path(__file__), Path(__file__).resolve().parents[1]),
        versions=RunIdentity.versions_now(),
        weights=file_digest(weights_file) if weights_file else None,
        data=data_digest([args.stats, *sorted(args.data.iterdir())]))


def this_process_device(params, arch: str, name: str, model_out: Path) -> torch.device:
    """The device this process trains on; with train.gpus > 1 and no process group yet,
    the stage starts again under torchrun instead and exits with its status (the
    processes end with it: ``distributed.relaunch``)."""
    device = resolve_device(params.compute.device)  # fails before any work if cuda is missing
    check_compile(params.compute.compile, device, params.compute.device)
    processes = distributed.requested_processes(params.train.gpus, device)
    if processes > 1 and not distributed.active():  # one process per device, under torchrun
        console.print(f"train@{name}: {processes} processes under torchrun; they end with "
                      "this stage (Ctrl-C, a SIGTERM or a kill of it stops them all)")
        try:
            sys.exit(distributed.relaunch(processes, __file__, sys.argv[1:]))
        except KeyboardInterrupt:
            raise Stopped(f"train@{name} stopped by Ctrl-C or SIGTERM with its {processes} "
                          "processes (torchrun and every rank have ended); the next `dvc "
                          "repro` resumes after the last epoch saved in "
                          f"{resume_path(model_out)}, or starts again if none was") from None
    distributed.check_batch_size(f"train.{arch}.batch_size",
                                 getattr(params.train, arch).batch_size)
    device = distributed.start(device)
    console.quiet = not distributed.is_main()  # process 0 alone prints and writes
    configure_backends(device, params.compute.deterministic)
    return device


def main() -> None:
    args = parse_args()
    arch, init = check_arch(args.arch), check_init(args.init)
    params = load_params(stage="train", arch=arch)
    train, arch_params = params.train, getattr(params.train, arch)
    pretrained = init == "pretrained"
    if pretrained:
        weights_enum(arch, arch_params.imagenet_weights)  # an unknown name stops here
    device = this_process_device(params, arch, run_name(arch, init), args.model_out)
    stats = load_stats(args.stats)
    torch.manual_seed(train.run_seed)
    model = build_model(arch, pretrained, HEAD_OUTPUTS[train.head],
                        arch_params.imagenet_weights, arch_params.weights_file)
    data = load_train_data(args.data, stats.mean, stats.std, train.validation_fraction,
                           params.data.split_seed)
    settings = train_settings(train, arch, init, params.compute.loader_workers,
                              stats.class_weights, params.compute.compile)
    console.print(f"[bold]{run_name(arch, init)}[/] on {device}: {len(data.fit)} fit, "
                  f"{len(data.validation)} validation ({validation_text(data)}), "
                  f"{len(data.test)} test images")
    recorded = params.recorded()
    weights_file = (weights_source(arch, arch_params.imagenet_weights, arch_params.weights_file)
                    if pretrained else None)
    resume = ResumeFile(resume_path(args.model_out),
                        run_identity(args, recorded, device, weights_file))
    started = time.perf_counter()

    def epoch_done(result: TrainResult, state: TrainingState) -> None:
        if distributed.is_main():
            resume.save(result, model, state)
        interrupts.check()  # a Ctrl-C that Python swallowed stops the run here

    with catching_interrupts() as interrupts:
        try:
            result = fit(model, data, settings, device, resume.load(), on_epoch=epoch_done)
        except KeyboardInterrupt:
            raise Stopped(resume.stopped_text(f"train@{run_name(arch, init)}")) from None
    best = result.history[result.best_epoch - 1]
    model.load_state_dict(result.best_state)
    decisions = validation_decisions(model, data, settings, device)
    distributed.stop()
    if not distributed.is_main():
        return
    with stopwatch.timing("writing"):
        save_checkpoint(args.model_out, result.best_state, arch=arch, init=init,
                        num_class=NUM_CLASS, head=train.head,
                        outputs=HEAD_OUTPUTS[train.head], epoch=result.best_epoch,
                        phase=best.phase, image_size=stats.image_size,
                        preprocess=stats.preprocess, mean=list(stats.mean),
                        std=list(stats.std), weighted_loss=train.weighted_loss,
                        validation_split=validation_text(data),
                        params=recorded, history=history_rows(result.history), **decisions)
    resume.remove()
    console.print(f"[bold]{run_name(arch, init)}[/] done in {time.perf_counter() - started:.0f} s:"
                  f" chose epoch {result.best_epoch} ({best.phase}) on validation QWK "
                  f"{best.val_qwk:.3f}; its test accuracy {best.acc_test:.1f} %")
    console.print(stopwatch.line(), highlight=False)
    verdict = training_verdict(run_name(arch, init), decisions, train.weighted_loss)
    if verdict:
        console.print(f"[bold yellow]warning:[/] {verdict}", soft_wrap=True)


if __name__ == "__main__":
    run_stage(main)
