"""One run on several processes (train.gpus > 1): gloo on the CPU, as the tests can."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from retino.errors import DataError, ParamsError
from retino.train import distributed
from retino.train.inputs import EpochBatches, make_loader, set_epoch, to_device
from retino.train.loop import batch_loss, make_criterion, scored_outputs, train_one_epoch
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


def _resnet_gradients(rank: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()  # BatchNorm: exact
    return _first_step_gradients(model)


def test_two_processes_compute_the_gradients_of_one_on_the_same_global_batch(tmp_path):
    sharded = _spawn(_resnet_gradients, 2, tmp_path)[0]
    alone = _resnet_gradients(0)
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


# --- every process gets a share BatchNorm can use, whatever the last batch ---------

def _shares(monkeypatch, size: int, batch_size: int, world: int) -> list[list[list[int]]]:
    """Each rank's batches of epoch 0, as EpochBatches hands them out."""
    shares = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        shares.append(list(EpochBatches(size, batch_size, seed=1, sharded=True)))
    return shares


@pytest.mark.parametrize("world", [3, 4])
@pytest.mark.parametrize("last", [1, 2, 3])
def test_every_process_gets_two_images_of_every_batch_whatever_the_last_batch(
        monkeypatch, world, last):
    batch_size = 16  # the default: 818 fit images leave a last batch of 2
    size = 3 * batch_size + last
    shares = _shares(monkeypatch, size, batch_size, world)
    assert len({len(batches) for batches in shares}) == 1  # the same number of steps
    for step in zip(*shares):
        assert min(len(share) for share in step) >= 2, step
    assert sorted(i for batches in shares for batch in batches for i in batch) == \
        list(range(size))  # every image once per epoch
    monkeypatch.setenv("RANK", "0")
    assert EpochBatches(size, batch_size, seed=1, sharded=True).images() == \
        sum(len(batch) for batch in shares[0])


def test_one_process_keeps_its_batches_and_too_few_images_for_the_processes_stop(monkeypatch):
    """On one process only a last batch of a single image joins the one before, as
    always (the default run's histories stay as they were)."""
    assert [len(b) for b in EpochBatches(33, 16, seed=1)] == [16, 17]
    assert [len(b) for b in EpochBatches(34, 16, seed=1)] == [16, 16, 2]
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(DataError, match="7 fit images cannot give each of 4 processes"):
        EpochBatches(7, 16, seed=1, sharded=True)


def _small_model(outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))


def _images(count: int, seed: int = 5) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(count, 3, 8, 8, generator=generator),
                         torch.randint(0, 5, (count,), generator=generator))


def _spawn(job, world: int, tmp_path) -> dict:
    """Run ``job(rank)`` in ``world`` gloo processes; what each returned, by rank."""
    with mp.Manager() as manager:
        results = manager.dict()
        # forked, not spawned: the children start with torch already imported (seconds,
        # not half a minute, on 2 cores); a hung child fails the test instead of the suite
        context = mp.start_processes(_process, nprocs=world, join=False,
                                     args=(job, world, str(tmp_path / "rendezvous"), results),
                                     start_method="fork")
        deadline = time.monotonic() + 300
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"{world} processes did not finish within 300 s")
        return dict(results)


def _process(rank: int, job, world: int, init_file: str, results: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        results[rank] = job(rank)
    finally:
        dist.destroy_process_group()


FIT_SIZES = (17, 18, 19)  # at batch 8: last batches of 1, 2 and 3 images


def _epochs_of_each_fit_size(rank: int) -> list[float]:
    """One training epoch per fit size, train-mode BatchNorm, the real loop."""
    losses = []
    for size in FIT_SIZES:
        model = _small_model(5)
        trained = distributed.wrap(model, CPU)
        loader = make_loader(_images(size), 8, True, 0, CPU, seed=3, shard=True)
        set_epoch(loader, 0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        loss, _ = train_one_epoch(trained.train(), loader, make_criterion(None, CPU),
                                  optimizer, to_device(CPU), "epoch", sharded=True)
        losses.append(loss)
    return losses


@pytest.mark.parametrize("world", [3, 4])
def test_three_and_four_processes_train_on_every_fit_size(tmp_path, world):
    results = _spawn(_epochs_of_each_fit_size, world, tmp_path)
    for rank, losses in results.items():
        assert all(torch.isfinite(torch.tensor(losses))), (rank, losses)
    assert len({tuple(losses) for losses in results.values()}) == 1  # one summed loss


# --- several processes compute one process's gradient -------------------------------

WEIGHTS = (0.3, 3.0, 1.2, 8.0, 9.0)
LOSSES = {"unweighted": (None, "classification", 0.0),
          "weighted": (WEIGHTS, "classification", 0.0),
          "weighted, smoothed": (WEIGHTS, "classification", 0.2),
          "regression": (WEIGHTS, "regression", 0.0)}
BATCHES = {"even": 8, "uneven": 3}  # 8 images split 4/4; 3 images split 2/1


def _gradients(loss: str, images: int, sharded: bool) -> dict[str, torch.Tensor]:
    """Gradients of one step of the real loss on the first ``images`` images (this
    process's share of them when ``sharded``); BatchNorm in eval mode, so exact."""
    weights, head, smoothing = LOSSES[loss]
    model = _small_model(1 if head == "regression" else 5).eval()
    trained = distributed.wrap(model, CPU) if sharded else model
    inputs, grades = _images(images)[:]
    if sharded:
        share = distributed.shard(range(images))
        inputs, grades = inputs[share], grades[share]
    criterion = make_criterion(weights, CPU, head, label_smoothing=smoothing)
    step, _ = batch_loss(criterion, trained(inputs), grades, sharded)
    step.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _all_gradients(rank: int) -> dict:
    return {(loss, batch): _gradients(loss, images, sharded=True)
            for loss in LOSSES for batch, images in BATCHES.items()}


def test_two_processes_compute_one_process_gradient_for_every_loss_and_share(tmp_path):
    sharded = _spawn(_all_gradients, 2, tmp_path)[0]
    for (loss, batch), gradients in sharded.items():
        alone = _gradients(loss, BATCHES[batch], sharded=False)
        for name, gradient in alone.items():
            torch.testing.assert_close(gradients[name], gradient, rtol=1e-5, atol=1e-7,
                                       msg=lambda m, n=name: f"{loss}, {batch}, {n}: {m}")


def _epoch_loss_parts(rank: int) -> dict:
    """This process's part of the epoch's loss sum for each loss and batch."""
    parts = {}
    for loss, (weights, head, smoothing) in LOSSES.items():
        criterion = make_criterion(weights, CPU, head, label_smoothing=smoothing)
        for batch, images in BATCHES.items():
            outputs, grades = _outputs(images, head)
            share = distributed.shard(range(images))
            parts[(loss, batch)] = batch_loss(criterion, outputs[share], grades[share],
                                              sharded=True)[1]
    return parts


def _outputs(images: int, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return (torch.randn(images, 1 if head == "regression" else 5, generator=generator),
            torch.tensor([0, 4, 1, 3, 2, 4, 0, 3])[:images])


def test_two_shards_parts_of_a_weighted_batch_add_up_to_the_one_process_part(tmp_path):
    # pins the sharded part: each process's share of the batch's mean times its images
    # (the raw weighted sum would add up to something else once the weights are not 1)
    sharded = _spawn(_epoch_loss_parts, 2, tmp_path)
    for loss, (weights, head, smoothing) in LOSSES.items():
        criterion = make_criterion(weights, CPU, head, label_smoothing=smoothing)
        for batch, images in BATCHES.items():
            _, alone = batch_loss(criterion, *_outputs(images, head))
            assert sharded[0][(loss, batch)] + sharded[1][(loss, batch)] == \
                pytest.approx(alone, rel=1e-6), (loss, batch)


def test_the_epoch_loss_of_shares_adds_up_to_the_one_process_loss():
    outputs = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    grades = torch.tensor([0, 1, 4, 2, 0, 3])
    criterion = make_criterion(WEIGHTS, CPU)
    loss, part = batch_loss(criterion, outputs, grades)
    total, denominator = criterion.parts(outputs, grades)
    torch.testing.assert_close(total / denominator, loss)
    assert part == pytest.approx(loss.item() * 6)


# --- the scores come from the model process 0 saves ---------------------------------

def _train_then_score(rank: int) -> dict:
    model = _small_model(5)
    trained = distributed.wrap(model, CPU)
    loader = make_loader(_images(24), 8, True, 0, CPU, seed=3, shard=True)
    set_epoch(loader, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(trained.train(), loader, make_criterion(None, CPU), optimizer,
                    to_device(CPU), "epoch", sharded=True)
    scoring = make_loader(_images(10, seed=9), 4, False, 0, CPU, shard=True)
    _, outputs = scored_outputs(model, scoring, to_device(CPU), sharded=True)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "outputs": outputs}


def test_sharded_scores_equal_one_process_scoring_of_process_0s_model(tmp_path):
    results = _spawn(_train_then_score, 2, tmp_path)
    model = _small_model(5)
    model.load_state_dict(results[0]["state"])
    _, alone = scored_outputs(model, make_loader(_images(10, seed=9), 4, False, 0, CPU),
                              to_device(CPU))
    for rank in results:
        torch.testing.assert_close(torch.from_numpy(results[rank]["outputs"]),
                                   torch.from_numpy(alone), rtol=1e-5, atol=1e-6)


# --- fewer images than processes ----------------------------------------------------

def _score_few(rank: int) -> dict:
    """Scores and stored features of 1 and 2 images on this world's processes."""
    model = _small_model(5).eval()
    scores = {}
    for images in (1, 2):
        loader = make_loader(_images(images, seed=4), 4, False, 0, CPU, shard=True)
        actual, outputs = scored_outputs(model, loader, to_device(CPU), sharded=True)
        scores[images] = (actual, outputs)
    return scores


@pytest.mark.parametrize("world", [2, 3])
def test_fewer_validation_or_test_images_than_processes_still_score(tmp_path, world):
    # failed before: a process whose share was empty concatenated nothing and raised
    results = _spawn(_score_few, world, tmp_path)
    model = _small_model(5).eval()
    for images in (1, 2):
        _, alone = scored_outputs(model, make_loader(_images(images, seed=4), 4, False, 0, CPU),
                                  to_device(CPU))
        for rank in results:
            actual, outputs = results[rank][images]
            assert outputs.shape == (images, 5) and len(actual) == images
            torch.testing.assert_close(torch.from_numpy(outputs), torch.from_numpy(alone))
