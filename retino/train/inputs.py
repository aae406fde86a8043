"""What training reads, and how it reaches the model: uint8 arrays in, normalised (and
flipped) batches on the device; the train statistics; the loaders.

``ImageArray`` yields raw ``H x W x 3`` uint8 images from the memory-mapped
``<mode>.npy`` of downscale-images; nothing is decoded per epoch. ``ToModel``
turns a uint8 batch into what the network sees *on the device*: float, normalised
with the train statistics, randomly flipped when training, in the device's memory
format. A ``N x H x W x 3`` batch viewed as ``N x 3 x H x W`` already has the
channels_last layout, so on the GPU the conversion copies straight across.

Every epoch draws its shuffling order and flips from generators seeded with
(``train.run_seed``, epoch), not from a stream that earlier epochs advanced, so a
run resumed after epoch k continues exactly as if it had never stopped: bit for bit
on the CPU; on CUDA, when ``compute.deterministic`` makes its kernels reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from retino.data.arrays import array_path, open_images
from retino.data.layout import VALIDATION, given_modes, read_split
from retino.data.splits import patient_holdout
from retino.data.stats import DataStats, load_stats  # noqa: F401  (the stats file is an input)
from retino.errors import DataError
from retino.params import MIN_BATCHNORM_IMAGES
from retino.train import distributed
from retino.train.device import memory_format

Prepare = Callable[[torch.Tensor], torch.Tensor]  # a loader batch -> model input


class ImageArray(Dataset):
    """Rows of one image array with their grades; ``(uint8 H x W x 3 tensor, grade)``."""

    def __init__(self, path: str | Path, rows: Sequence[int], labels: np.ndarray,
                 names: Sequence[str]):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.names = list(names)
        self._images: np.ndarray | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self._mapped()[self.rows[index]])), int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch in one read, already collated (see ``collate``)."""
        images = np.take(self._mapped(), self.rows[indices], axis=0)
        return torch.from_numpy(images), torch.from_numpy(self.labels[indices])

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The DataLoader's ``collate_fn``: ``__getitems__`` already made the batch."""
        return batch

    def _mapped(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}  # workers map the file themselves

    @staticmethod
    def from_split(folder: str | Path, mode: str) -> "ImageArray":
        """Every image of ``mode`` in the downscaled set ``folder``, checked against its CSV."""
        split = read_split(folder, mode, eye_names=False)
        open_images(array_path(folder, mode), len(split))
        return ImageArray(array_path(folder, mode), np.arange(len(split)), split.labels,
                          split.names)

    def subset(self, indices: Sequence[int]) -> "ImageArray":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageArray(self.path, self.rows[indices], self.labels[indices],
                          [self.names[i] for i in indices])


BUFFERED_SHAPES = 3  # a full batch, an epoch's last partial batch, a scoring batch


class ToModel:
    """uint8 ``N x H x W x 3`` batches -> normalised float ``N x 3 x H x W`` on ``device``.

    On the CPU, per image, flipping, the uint8 -> float conversion and the change of
    layout happen in one copy, and the normalisation runs in place while the image
    is still in cache; the result goes into one of two buffers that take turns
    (allocations over 32 MiB come fresh from the kernel every time, and touching new
    pages costs more than the conversion itself): a returned batch stays valid until
    two more batches of the same shape have been prepared, which is how the training
    and scoring loops use it. On CUDA the same steps run vectorised over the whole
    batch (a loop of per-image kernel launches would dominate), into fresh
    channels_last memory from the caching allocator.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 reuse_buffers: bool | None = None):
        self.device = device
        # CUDA's caching allocator already reuses memory; on the CPU two buffers do
        self.reuse_buffers = device.type == "cpu" if reuse_buffers is None else reuse_buffers
        # (x / 255 - mean) / std  ==  x * scale + shift, on the 0..255 scale
        scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.scale = scale.to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
                      * 255.0 * scale).to(device)
        self._buffers: dict[torch.Size, list[torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor, flips: torch.Generator | None = None) -> torch.Tensor:
        """Normalise ``batch``; with a ``flips`` generator, flip each image at random
        left-right and upside down (independently, p = 0.5 each)."""
        horizontal, vertical = flip_draws(len(batch), flips)
        return self.flipped(batch, horizontal, vertical)

    def flipped(self, batch: torch.Tensor, horizontal: Sequence[bool],
                vertical: Sequence[bool]) -> torch.Tensor:
        """Normalise ``batch``, mirroring image i left-right where ``horizontal[i]`` and
        upside down where ``vertical[i]`` (test-time augmentation fixes them)."""
        images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if not self.reuse_buffers:
            return self._whole_batch(images, horizontal, vertical)
        out = self._output(images.shape)
        scale, shift = self.scale[0], self.shift[0]
        for index, image in enumerate(images):  # image by image: each stays in cache
            if horizontal[index]:
                image = image.flip(2)
            if vertical[index]:
                image = image.flip(1)
            out[index].copy_(image).mul_(scale).add_(shift)
        return out

    def _whole_batch(self, images: torch.Tensor, horizontal: list[bool],
                     vertical: list[bool]) -> torch.Tensor:
        out = torch.empty(images.shape, device=self.device,
                          memory_format=memory_format(self.device))
        out.copy_(images)
        for flipped, dim in ((horizontal, 3), (vertical, 2)):
            if any(flipped):
                chosen = to_device_async(torch.tensor(flipped), self.device).view(-1, 1, 1, 1)
                out = torch.where(chosen, out.flip(dim), out)
        out = out.mul_(self.scale).add_(self.shift)
        return out.contiguous(memory_format=memory_format(self.device))

    def _output(self, shape: torch.Size) -> torch.Tensor:
        pair = self._buffers.pop(shape, None) or [torch.empty(shape) for _ in range(2)]
        pair.reverse()
        self._buffers[shape] = pair  # most recently used last
        while len(self._buffers) > BUFFERED_SHAPES:
            self._buffers.pop(next(iter(self._buffers)))
        return pair[0]


def to_device_async(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without waiting for the device: on CUDA through
    pinned memory and a non-blocking copy (a copy from ordinary memory waits until the
    device has finished everything queued before it)."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def flip_draws(count: int, generator: torch.Generator | None) -> tuple[list[bool], list[bool]]:
    """Which of ``count`` images to mirror left-right, and which upside down.

    The lab's two augmentations: a mirrored left eye looks like a right eye, and
    EyePACS holds photos taken upside down. Drawing on a CPU generator seeded per
    epoch keeps training reproducible and resumable on any device. No generator:
    no flips.
    """
    if generator is None:
        return [False] * count, [False] * count
    horizontal, vertical = (torch.rand(2, count, generator=generator) < 0.5).tolist()
    return horizontal, vertical


@dataclass(frozen=True)
class TrainData:
    """The image sets of one training run, and the statistics that normalise them."""

    fit: ImageArray
    validation: ImageArray
    test: ImageArray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    validation_given: bool = False  # True: the data's own val split; False: held out here


def load_train_data(folder: str | Path, mean: Sequence[float], std: Sequence[float],
                    validation_fraction: float, seed: int) -> TrainData:
    """Fit and validation images: the downscaled set's own val split beside all of its
    train split, where it has one (a ``folders`` tree's ``val/``); else the train split
    divided by patient, ``validation_fraction`` of the patients held out, drawn with
    ``seed`` (``data.split_seed``)."""
    images = ImageArray.from_split(folder, "train")
    test = ImageArray.from_split(folder, "test")
    if has_validation_split(folder):
        return TrainData(fit=images, validation=ImageArray.from_split(folder, VALIDATION),
                         test=test, mean=tuple(mean), std=tuple(std), validation_given=True)
    kept, held_out = fit_and_validation(images.names, images.labels, validation_fraction,
                                        seed, folder)
    return TrainData(fit=images.subset(kept), validation=images.subset(held_out),
                     test=test, mean=tuple(mean), std=tuple(std))


def validation_text(data: TrainData) -> str:
    """Where a run's validation images come from, in words (printed and recorded)."""
    return ("the data's own val split" if data.validation_given
            else "train patients held out with data.split_seed")


def has_validation_split(folder: str | Path) -> bool:
    """Whether the downscaled set ``folder`` holds a val split of its own."""
    return VALIDATION in given_modes(folder)


def validation_pool(folder: str | Path) -> ImageArray:
    """The images a run's validation images were taken from: the set's own val split, or
    its train split (the hold-out)."""
    return ImageArray.from_split(folder, VALIDATION if has_validation_split(folder)
                                 else "train")


def fit_and_validation(names: list[str], labels: np.ndarray, validation_fraction: float,
                       seed: int, folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Image indices (fit, validation) of the train split: a patient-level hold-out drawn
    with ``seed`` (``data.split_seed``); an empty side stops the run, naming ``folder``."""
    kept, held_out = patient_holdout(names, labels, validation_fraction,
                                     np.random.default_rng(seed))
    if len(kept) < 2 or len(held_out) == 0:
        raise DataError(f"{folder}: train.validation_fraction = {validation_fraction} leaves "
                        f"{len(kept)} fit and {len(held_out)} validation images; training "
                        "needs at least 2 fit images (BatchNorm) and 1 validation image")
    return kept, held_out


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one epoch's shuffling (stream 0) or flips (stream 1)."""
    return torch.Generator().manual_seed((seed * 100_003 + epoch) * 2 + stream)


class EpochBatches(Sampler[list[int]]):
    """Batches of a fresh random order each epoch, drawn from (seed, epoch) alone.

    The order depends on nothing but ``set_epoch``: not on how many epochs this
    process has run, nor on DataLoader workers (a persistent-workers DataLoader
    draws its worker seed from its own generator once, which would shift a shared
    stream after a resume). BatchNorm in train mode needs 2 or more images, on every
    process of a multi-device run: a last batch too small to give each process 2
    joins the one before (on one process, a last batch of a single image).
    """

    def __init__(self, size: int, batch_size: int, seed: int, sharded: bool = False):
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0
        self.sharded = sharded
        processes = distributed.world_size() if sharded else 1
        self.smallest = MIN_BATCHNORM_IMAGES * processes  # the images a batch needs
        if sharded and size < self.smallest:
            raise DataError(f"{size} fit images cannot give each of {processes} processes "
                            f"(train.gpus) the {MIN_BATCHNORM_IMAGES} images BatchNorm needs "
                            f"per batch: use at most {max(size // MIN_BATCHNORM_IMAGES, 1)} "
                            "processes, or more data")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batch_sizes(self) -> list[int]:
        """The size of each batch of an epoch, over every process together."""
        sizes = [self.batch_size] * (self.size // self.batch_size)
        if self.size % self.batch_size:
            sizes.append(self.size % self.batch_size)
        if len(sizes) > 1 and sizes[-1] < self.smallest:
            last = sizes.pop()
            sizes[-1] += last
        return sizes

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch, 0))
        ends = np.cumsum(self.batch_sizes())
        batches = [order[end - size:end].tolist()
                   for end, size in zip(ends, self.batch_sizes())]
        if self.sharded:  # each process of a multi-device run: its share of every batch
            batches = [distributed.shard(batch) for batch in batches]
        return iter(batches)

    def __len__(self) -> int:
        return len(self.batch_sizes())

    def images(self) -> int:
        """How many images one epoch hands this process."""
        if not self.sharded:
            return self.size
        return sum(len(distributed.shard(range(size))) for size in self.batch_sizes())


def loader_images(loader: DataLoader) -> int:
    """How many images one pass over ``loader`` hands this process."""
    if isinstance(loader.batch_sampler, EpochBatches):
        return loader.batch_sampler.images()
    return len(loader.sampler)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int,
                device: torch.device, seed: int = 0, shard: bool = False) -> DataLoader:
    """A DataLoader in CSV order, or (``shuffle``) in the order ``EpochBatches`` draws
    from ``seed`` and the epoch that ``set_epoch`` sets. With ``shard``, in a
    multi-device run, this process loads only its share (``retino.train.distributed``).

    Image arrays deliver whole batches themselves (one read per batch, no stacking)."""
    collate = ImageArray.collate if isinstance(dataset, ImageArray) else None
    sharded = shard and distributed.active()
    if shuffle:
        batching = dict(batch_sampler=EpochBatches(len(dataset), batch_size, seed, sharded))
    else:
        order = distributed.shard(range(len(dataset))) if sharded else None
        batching = dict(batch_size=batch_size, sampler=order)
    return DataLoader(dataset, **batching, num_workers=num_workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make a shuffling ``loader``'s next pass use the order of its seed and ``epoch``."""
    loader.batch_sampler.set_epoch(epoch)


def to_device(device: torch.device) -> Prepare:
    """Move a ready batch (stored features, or the lab loader's float images) to ``device``."""
    def prepare(inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(device, non_blocking=True)
        if inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=memory_format(device))
        return inputs
    return prepare
