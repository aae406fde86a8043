"""The field's training augmentation (``train.augment: field``), on the training device.

On top of the lab's random flips, every training image gets a random rotation by
any angle (a fundus photo has no upright), a random zoom and shift, and a random
change of brightness, contrast, saturation and hue, as the strongest published
EyePACS ResNets train (docs/training.md). The whole batch moves at once: one
``affine_grid`` + ``grid_sample`` for the geometry (the flips folded into the same
matrix), tensor ops for the colour, never a loop over images nor PIL, so the GPU
path stays as fast as the arrays allow.

The draws come from the same per-epoch generator as the lab's flips (seeded by
``train.run_seed`` and the epoch), flips first, so a resumed run continues exactly (bit
for bit on the CPU; on CUDA with ``compute.deterministic``). They reach the device in
one non-blocking copy per batch, and the constants of the colour step are made once
per device, so the step never waits for the device.
Outside the eye the photo stays black: the rotation fills with zeros (black before
the normalisation), not with edge pixels, and the colour changes are confined to
the eye by a mask that travels through the same resampling.

Only the image phases' fit batches are augmented: never validation, test, the
stored features of the frozen backbone, nor evaluate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional

from retino.train.device import device_constant, memory_format
from retino.train.inputs import ToModel, epoch_generator, flip_draws, to_device_async

# The ranges drawn from, uniformly (each value of an image independent of the others)
ROTATION_DEGREES = 360.0  # any angle: the eye has no upright
SCALE = (0.9, 1.1)  # zoom; > 1 shows the eye larger
SHIFT = 0.05  # of the side, in x and in y, either way
BRIGHTNESS = (0.8, 1.2)  # factor on every channel
CONTRAST = (0.8, 1.2)  # factor on the distance from the eye's mean grey
SATURATION = (0.8, 1.2)  # factor on the distance from each pixel's grey
HUE = 0.02  # of a full turn of the colour wheel, either way (about 7 degrees)
# A pixel whose brightest channel is at most this (0-255) is the black background,
# where the colour changes do not reach (camera borders are rarely above ~10)
BACKGROUND_LEVEL = 10.0
GREY = (0.299, 0.587, 0.114)  # luma weights of R, G, B (ITU-R BT.601)


class FieldDraws(NamedTuple):
    """What one batch's augmentation does to each of its images (tensors of length N)."""

    horizontal: torch.Tensor  # bool: mirrored left-right
    vertical: torch.Tensor  # bool: mirrored upside down
    angle: torch.Tensor  # degrees, counter-clockwise as the image is displayed
    scale: torch.Tensor  # zoom factor
    shift_x: torch.Tensor  # of the side, to the right
    shift_y: torch.Tensor  # of the side, downwards
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # of a full turn

    def to(self, device: torch.device) -> "FieldDraws":
        """The draws on ``device``, in one copy that does not wait for it."""
        packed = to_device_async(torch.stack([value.to(torch.float64) for value in self]),
                                 device)
        return FieldDraws(packed[0] > 0.5, packed[1] > 0.5, *packed[2:])


def _between(uniform: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * uniform


def field_draws(count: int, generator: torch.Generator | None) -> FieldDraws:
    """The augmentation of ``count`` images from ``generator`` (the epoch's flips stream):
    the flips are drawn first, exactly as for ``train.augment: flips``. No generator:
    the identity (no flip, no rotation, factors 1)."""
    horizontal, vertical = flip_draws(count, generator)
    if generator is None:
        zeros = torch.zeros(count, dtype=torch.float64)
        ones = torch.ones(count, dtype=torch.float64)
        return FieldDraws(torch.tensor(horizontal), torch.tensor(vertical), zeros, ones,
                          zeros, zeros, ones, ones, ones, zeros)
    uniform = torch.rand(8, count, generator=generator, dtype=torch.float64)
    return FieldDraws(
        horizontal=torch.tensor(horizontal), vertical=torch.tensor(vertical),
        angle=_between(uniform[0], 0.0, ROTATION_DEGREES),
        scale=_between(uniform[1], *SCALE),
        shift_x=_between(uniform[2], -SHIFT, SHIFT), shift_y=_between(uniform[3], -SHIFT, SHIFT),
        brightness=_between(uniform[4], *BRIGHTNESS), contrast=_between(uniform[5], *CONTRAST),
        saturation=_between(uniform[6], *SATURATION), hue=_between(uniform[7], -HUE, HUE))


def sampling_grid_matrices(draws: FieldDraws) -> torch.Tensor:
    """``N x 2 x 3`` matrices for ``affine_grid``: from each output pixel to where it
    samples the input, in normalised coordinates (x right, y down, -1..1).

    The image content moves by ``out = shift + scale * R(angle) * F * in`` (F the
    flips, R a rotation counter-clockwise as displayed); the grid needs the inverse,
    ``in = F * R(-angle) * (out - shift) / scale``."""
    radians = draws.angle * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    flip_x = 1.0 - 2.0 * draws.horizontal.to(cos.dtype)
    flip_y = 1.0 - 2.0 * draws.vertical.to(cos.dtype)
    # R(-angle) with y pointing down is [[cos, -sin], [sin, cos]]
    inverse = torch.stack([torch.stack([flip_x * cos, -flip_x * sin], dim=-1),
                           torch.stack([flip_y * sin, flip_y * cos], dim=-1)], dim=-2)
    inverse = inverse / draws.scale.view(-1, 1, 1)
    shift = 2.0 * torch.stack([draws.shift_x, draws.shift_y], dim=-1)  # side = 2 units
    offset = -(inverse @ shift.unsqueeze(-1))
    return torch.cat([inverse, offset], dim=-1)


HUE_AXIS = [[1 / 3] * 3] * 3  # the outer product of the grey axis (1, 1, 1) / sqrt(3)
HUE_CROSS = [[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]  # its cross-product matrix


def _hue_rotations(hue: torch.Tensor) -> torch.Tensor:
    """``N x 3 x 3`` RGB matrices turning each colour about the grey axis by ``hue``
    turns (black, white and greys stay as they are)."""
    turn = hue * (2.0 * math.pi)
    cos, sin = torch.cos(turn).view(-1, 1, 1), torch.sin(turn).view(-1, 1, 1)
    cross = device_constant("hue cross", HUE_CROSS, hue) / math.sqrt(3.0)
    outer = device_constant("hue axis", HUE_AXIS, hue)
    eye = device_constant("identity", torch.eye(3).tolist(), hue)
    return cos * eye + sin * cross + (1.0 - cos) * outer  # Rodrigues' formula


def recoloured(pixels: torch.Tensor, eye: torch.Tensor, draws: FieldDraws) -> torch.Tensor:
    """Brightness, contrast, saturation and hue of ``N x 3 x H x W`` pixels (0-255)
    changed by ``draws``, within the ``eye`` mask (``N x 1 x H x W``, 0-1) only: each
    pixel moves from its value towards its recoloured value by the mask's share, all
    the way inside the eye, not at all outside (black stays black). At the rim the
    resampling has already blended the eye with the black fill, in the pixels and in
    the mask alike; multiplying the pixels by the mask again would darken the rim a
    second time."""
    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.to(pixels.dtype).view(-1, 1, 1, 1)

    grey_weights = device_constant("grey", list(GREY), pixels).view(1, 3, 1, 1)
    changed = pixels * per_image(draws.brightness)
    grey = (changed * grey_weights).sum(dim=1, keepdim=True)
    eye_mean = (grey * eye).sum(dim=(2, 3), keepdim=True) / eye.sum(dim=(2, 3),
                                                                      keepdim=True).clamp(min=1)
    changed = (changed - eye_mean) * per_image(draws.contrast) + eye_mean
    grey = (changed * grey_weights).sum(dim=1, keepdim=True)
    changed = grey + (changed - grey) * per_image(draws.saturation)
    changed = torch.einsum("nij,njhw->nihw", _hue_rotations(draws.hue).to(pixels.dtype),
                           changed).clamp(0.0, 255.0)
    return pixels + eye * (changed - pixels)


def augmented_pixels(images: torch.Tensor, draws: FieldDraws) -> torch.Tensor:
    """``N x 3 x H x W`` images (0-255, any dtype) flipped, rotated, zoomed, shifted and
    recoloured as ``draws`` say; float32, 0-255, black outside the eye."""
    pixels = images.float()
    eye = (pixels.amax(dim=1, keepdim=True) > BACKGROUND_LEVEL).float()
    draws = draws.to(pixels.device)
    grid = functional.affine_grid(sampling_grid_matrices(draws).float(), list(pixels.shape),
                                  align_corners=False)
    moved = functional.grid_sample(torch.cat([pixels, eye], dim=1), grid, mode="bilinear",
                                   padding_mode="zeros", align_corners=False)
    return recoloured(moved[:, :3], moved[:, 3:], draws)


class FieldAugmentation:
    """uint8 ``N x H x W x 3`` fit batches -> augmented, normalised ``N x 3 x H x W`` on
    the device of ``to_model`` (its statistics), drawn from the epoch's generator."""

    def __init__(self, to_model: ToModel):
        self.device, self.scale, self.shift = to_model.device, to_model.scale, to_model.shift

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        pixels = augmented_pixels(images, field_draws(len(batch), generator))
        normalised = pixels.mul_(self.scale).add_(self.shift)
        return normalised.contiguous(memory_format=memory_format(self.device))


def augmented_examples(pixels: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` augmented versions of one ``H x W x 3`` uint8 image, as the first
    epoch of ``train.run_seed = seed`` would draw them (``retino preview --augment``)."""
    images = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).unsqueeze(0)
    draws = field_draws(count, epoch_generator(seed, 0, 1))
    out = augmented_pixels(images.expand(count, -1, -1, -1), draws)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return list(out.numpy())
