"""One run on several processes (train.gpus > 1): gloo on the CPU, as the tests can."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from retino.errors import ParamsError
from retino.train import distributed
from retino.train.inputs import EpochBatches, make_loader, set_epoch
from retino.train.models import build_model

CPU = torch.device("cpu")
GLOBAL_BATCH = 8


def _batch_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(5)
    return TensorDataset(torch.randn(24, 3, 32, 32, generator=generator),
                         torch.randint(0, 5, (24,), generator=generator))


def _first_step_gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gradients of one step on epoch 0's first batch (this process's share of it)."""
    trained = distributed.wrap(model, CPU)
    loader = make_loader(_batch_data(), GLOBAL_BATCH, True, 0, CPU, seed=3, shard=True)
    set_epoch(loader, 0)
    images, labels = next(iter(loader))
    nn.functional.cross_entropy(trained(images), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model("resnet18", pretrained=False).eval()  # BatchNorm: exact
        gradients = _first_step_gradients(model)
        if rank == 0:
            results["gradients"] = gradients
    finally:
        dist.destroy_process_group()


def test_two_processes_compute_the_gradients_of_one_on_the_same_global_batch(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), results), nprocs=2)
        sharded = dict(results["gradients"])
    torch.manual_seed(0)
    alone = _first_step_gradients(build_model("resnet18", pretrained=False).eval())
    assert sharded.keys() == alone.keys()
    for name, gradient in alone.items():
        torch.testing.assert_close(sharded[name], gradient, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_each_process_takes_its_share_of_every_global_batch(monkeypatch):
    whole = list(EpochBatches(20, 8, seed=1))
    shares = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        shares.append(list(EpochBatches(20, 8, seed=1, sharded=True)))
    for batch, first, second in zip(whole, *shares):
        assert sorted(first + second) == sorted(batch) and first == batch[0::2]


def test_too_small_a_batch_for_the_processes_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ParamsError, match="train.resnet18.batch_size = 6 is too small for "
                                          "4 processes"):
        distributed.check_batch_size("train.resnet18.batch_size", 6)
    distributed.check_batch_size("train.resnet18.batch_size", 8)
    with pytest.raises(ParamsError, match="train.gpus = 'all' needs CUDA devices"):
        distributed.requested_processes("all", CPU)
