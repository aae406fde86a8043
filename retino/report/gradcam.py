"""Grad-CAM: where in a photo the evidence for a model's output lies.

Selvaraju et al. (ICCV 2017): take the activations of the last convolutional block
(``layer4`` of a torchvision ResNet) and the gradients of the explained output with
respect to them; weight each channel by its mean gradient, sum over channels, keep
the positive part and scale it up to the photo. Written with plain torch hooks, so
nothing beyond torch is needed. The output explained is the predicted grade's logit.

``layer4`` sees the image at 1/32 of its size: 16 x 16 positions at the lab's 512 px,
but 2 x 2 at retino's 48 px default, a map that says little. So the block explained
is the last one with at least ``MIN_POSITIONS`` positions a side (``layer4`` from 192 px
up, ``layer3`` at 96 px, ``layer2`` at 48 px).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional

from retino.grading import GRADES
from retino.train.device import full_precision

MIN_SIDE = 256  # px of an overlay picture
MIN_POSITIONS = 6  # a side of the explained block's map
BLOCKS = ("layer4", "layer3", "layer2", "layer1")  # last first


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
             ) -> tuple[np.ndarray, torch.Tensor]:
    """Heat maps (N x H x W in 0..1, at the images' size) and the model's outputs.

    ``images`` are normalised model inputs; ``target`` holds the output index to
    explain per image (default: each image's highest logit).
    """
    activations: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            activations[name] = output
        return keep

    handles = [getattr(model, name).register_forward_hook(keeper(name)) for name in BLOCKS]
    model.eval()
    try:
        with torch.enable_grad(), full_precision():  # callers may score under no_grad
            outputs = model(images.detach())
            if target is None:
                target = outputs.argmax(dim=1)
            chosen = outputs.gather(1, target.view(-1, 1).to(outputs.device)).sum()
            block = explained_block({name: tuple(a.shape[-2:])
                                     for name, a in activations.items()})
            # the gradient at the explained block only: nothing flows on into earlier
            # layers or into the weights, which a full backward pass would fill in
            gradient, = torch.autograd.grad(chosen, activations[block])
    finally:
        for handle in handles:
            handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = functional.relu((weights * activations[block]).sum(dim=1, keepdim=True))
    cam = functional.interpolate(cam, size=images.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).detach().cpu().numpy(), outputs.detach()


def explained_block(sides: dict[str, tuple[int, int]]) -> str:
    """The last block whose map has at least ``MIN_POSITIONS`` positions a side (else
    the first)."""
    return next((name for name in BLOCKS if min(sides[name]) >= MIN_POSITIONS), BLOCKS[-1])


def overlay(rgb: np.ndarray, heat: np.ndarray, caption: str, alpha: float = 0.45
            ) -> Image.Image:
    """The photo (H x W x 3 uint8) with the heat map blended over it (inferno colours,
    transparent where the map is 0) and ``caption`` in the top-left corner."""
    from matplotlib import colormaps  # imported here: only pictures need matplotlib

    colours = colormaps["inferno"](heat)[..., :3]
    weight = alpha * heat[..., None]
    blended = (1 - weight) * rgb / 255.0 + weight * colours
    picture = Image.fromarray(np.clip(blended * 255, 0, 255).astype(np.uint8))
    if picture.width < MIN_SIDE:  # small training sizes: enlarge so the caption fits
        picture = picture.resize((MIN_SIDE, MIN_SIDE), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    box = draw.textbbox((6, 6), caption)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((6, 6), caption, fill=(255, 255, 255))
    return picture


def grade_caption(grade: int) -> str:
    return f"grade {grade} ({GRADES[grade]})"
