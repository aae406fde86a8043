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
failing rank's error. The group ends with its stage, however the stage ends: a Ctrl-C
or a SIGTERM makes the stage end torchrun and every rank within seconds (a rank blocked
in a collective included); a stage killed outright takes torchrun with it (the kernel's
parent-death signal), and each rank ends itself once torchrun is gone (a watchdog
thread), so no process keeps the devices or writes a resume file after its stage.
Several machines: run torchrun yourself on each, with ``--nnodes``, ``--node-rank`` and
``--rdzv-endpoint``; the stage sees the process group torchrun made and does not
relaunch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
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
    """Run ``script`` again under torchrun with ``processes`` processes; its exit status.

    torchrun runs in a session of its own, so that a Ctrl-C reaches this stage alone,
    which then ends the whole group itself (``end_group``) instead of leaving torchrun
    to print its own traceback; a SIGTERM is handled alike."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", script, *arguments]
    torchrun = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return torchrun.wait()
    except KeyboardInterrupt:
        end_group(torchrun)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In torchrun's process, before it starts: the kernel kills it when the stage
    that started it dies, even by SIGKILL (Linux; elsewhere nothing happens)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


GRACE_SECONDS = 10  # a rank's time to end after SIGTERM before SIGKILL


def end_group(torchrun: subprocess.Popen) -> None:
    """End torchrun and every rank it started: torchrun first (killed, so that it
    neither restarts the ranks nor reports them failed), then each rank's process
    group (torchrun gives each rank a session of its own) with SIGTERM, and SIGKILL for
    any still there after ``GRACE_SECONDS``."""
    ranks = child_processes(torchrun.pid)
    torchrun.kill()
    torchrun.wait()
    _signal_groups(ranks, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_groups([pid for pid in ranks if alive(pid)], signal.SIGKILL)


def _signal_groups(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass


def _process_state(stat: Path) -> tuple[str, int] | None:
    """(state letter, parent pid) from a Linux ``/proc/<pid>/stat``; None once the
    process has gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name
    except OSError:
        return None
    return fields[0], int(fields[1])


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
            if (_process_state(stat) or ("", -1))[1] == pid]


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    state = _process_state(Path(f"/proc/{pid}/stat"))
    return state is not None and state[0] not in ("Z", "X")


WATCH_SECONDS = 1.0


def end_with_launcher() -> None:
    """In a rank started by torchrun: a watchdog thread that ends this process once
    torchrun is gone (this process then has another parent), whatever it is blocked in."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-torchrun", daemon=True).start()


def start(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; the device this process trains on."""
    if not active():
        return device
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun (the stage's relaunch)
        end_with_launcher()
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
    """The arrays each process computed on ``shard(range(n))``, put back in order. A
    process whose share was empty (fewer images than processes) sends an empty array,
    whose shape the others' pieces settle."""
    if not active():
        return local
    pieces: list = [None] * world_size()
    dist.all_gather_object(pieces, local)
    total = sum(len(piece) for piece in pieces)
    shaped = next((piece for piece in pieces if len(piece)), local)
    whole = np.empty((total, *shaped.shape[1:]), dtype=shaped.dtype)
    for index, piece in enumerate(pieces):
        if len(piece):
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


def sum_tensor_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` (on this process's device) added up over every process, on the
    device: no host read (itself when alone)."""
    if not active():
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total
