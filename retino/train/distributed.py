"""One training run on several devices: ``train.gpus`` processes under torchrun.

With ``train.gpus`` above 1, the train stage starts itself again under
``torch.distributed.run`` (torchrun), one process per device, and each process joins
one process group (NCCL on CUDA, gloo on the CPU, which is how the tests run it).
What stays one recipe, whatever the number of processes:

* every epoch's batches are drawn from (``train.run_seed``, epoch) as on one device,
  and each process takes every ``world``-th image of each batch, so the global batch
  and the learning rate are those of params.yaml; a last batch too small to give
  every process ``MIN_BATCHNORM_IMAGES`` (retino.params) joins the one before;
* each process divides its loss sum by the whole batch's denominator (``batch_loss``
  in ``retino.train.loop``), so the gradients DistributedDataParallel averages are
  those of one process on the whole batch;
* BatchNorm is synchronised across processes on CUDA (SyncBatchNorm); on the CPU,
  where PyTorch has no SyncBatchNorm, each process normalises with its own share of
  the batch, and after each epoch takes process 0's running statistics
  (``share_main_buffers``), so every process scores the model process 0 saves;
* the stored features of the feature-extraction phase are computed in shards and
  gathered, then every process trains ``fc`` on all of them, identically;
* validation and test are scored in shards and gathered, so every process sees the
  same scores and keeps the same epoch;
* only process 0 prints, writes the model, the history and the resume state.

A process that fails ends the whole run: torchrun stops the others and reports the
failing rank's error. Several machines: run torchrun yourself on each, with
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint``; the stage sees the process
group torchrun made and does not relaunch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from retino.errors import ParamsError
from retino.params import MIN_BATCHNORM_IMAGES


def world_size() -> int:
    """Processes in this run (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Process 0 alone prints progress and writes outputs."""
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def requested_processes(gpus: int | str, device: torch.device) -> int:
    """``train.gpus`` as a process count: an integer, or ``all`` (every CUDA device)."""
    if gpus == "all":
        if device.type != "cuda":
            raise ParamsError("train.gpus = 'all' needs CUDA devices; on the CPU give a "
                              "number of processes")
        return torch.cuda.device_count()
    if device.type == "cuda" and gpus > torch.cuda.device_count():
        raise ParamsError(f"train.gpus = {gpus} but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    return int(gpus)


def check_batch_size(key: str, batch_size: int) -> None:
    """Each process takes its share of every batch, and BatchNorm in train mode needs 2
    or more images; stop before any work otherwise."""
    smallest = MIN_BATCHNORM_IMAGES * world_size()
    if batch_size < smallest:
        raise ParamsError(f"{key} = {batch_size} is too small for {world_size()} processes "
                          f"(train.gpus): each needs {MIN_BATCHNORM_IMAGES} or more images of "
                          f"every batch; use at least {smallest}")


def relaunch(processes: int, script: str, arguments: Sequence[str]) -> int:
    """Run ``script`` again under torchrun with ``processes`` processes; its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", script, *arguments]
    return subprocess.run(command, check=False).returncode


def start(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; the device this process trains on."""
    if not active():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Sequence[int]) -> list[int]:
    """This process's share of ``indices``: every ``world``-th, from its rank on."""
    return list(indices)[rank()::world_size()]


def gather_shards(local: np.ndarray) -> np.ndarray:
    """The arrays each process computed on ``shard(range(n))``, put back in order."""
    if not active():
        return local
    pieces: list = [None] * world_size()
    dist.all_gather_object(pieces, local)
    total = sum(len(piece) for piece in pieces)
    whole = np.empty((total, *local.shape[1:]), dtype=local.dtype)
    for index, piece in enumerate(pieces):
        whole[index::world_size()] = piece
    return whole


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` as this process trains it: DistributedDataParallel on several devices
    (BatchNorm synchronised on CUDA), else itself. The weights stay ``model``'s."""
    if not active():
        return model
    if device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


def share_main_buffers(model: torch.nn.Module) -> None:
    """Process 0's buffers (BatchNorm's running statistics) on every process.

    Without SyncBatchNorm (the CPU), each process updated its running statistics with
    its own share of the last batches, after DistributedDataParallel had broadcast
    them: the models then differ from the one process 0 saves, and so would their
    shares of the validation and test scores."""
    if not active():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def rank_seed(seed: int) -> int:
    """A seed of this process's own (the flips), offset per rank; rank 0 keeps ``seed``."""
    return seed + 1_000_003 * rank()


def sum_over_ranks(values: list[float]) -> list[float]:
    """``values`` added up over every process (itself when alone)."""
    if not active():
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
