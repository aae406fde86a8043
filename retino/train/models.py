"""ResNet-18/50 with a 5-way ``fc``, ImageNet weights from torchvision's hub cache.

(The lab's ``ResNet18(num_class, pretrained)`` and ``ResNet50(...)`` calls live in
``retino.lab`` and build through ``build_model`` here.) Pretrained weights are torchvision's (``IMAGENET1K_V1`` unless
asked otherwise), loaded from ``$TORCH_HOME/hub/checkpoints`` or an explicit file;
when they are neither there nor downloadable the run stops with the file it needs.
A model called "pretrained" is never left with random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from retino.errors import WeightsUnavailable
from retino.grading import NUM_CLASS
from retino.params import check_arch

BUILDERS = {"resnet18": tv_models.resnet18, "resnet50": tv_models.resnet50}
WEIGHT_ENUMS = {"resnet18": tv_models.ResNet18_Weights, "resnet50": tv_models.ResNet50_Weights}


def weights_enum(arch: str, name: str = "IMAGENET1K_V1") -> tv_models.WeightsEnum:
    enum = WEIGHT_ENUMS[check_arch(arch)]
    if name not in enum.__members__:
        raise ValueError(f"unknown weights {name!r} for {arch}: choose "
                         f"{' or '.join(enum.__members__)}")
    return enum[name]


def expected_weights_file(arch: str, name: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision looks for the weights: ``<hub dir>/checkpoints/<file>``."""
    url = weights_enum(arch, name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _missing_weights_message(arch: str, name: str, cause: BaseException) -> str:
    expected = expected_weights_file(arch, name)
    return (f"ImageNet weights for {arch} ({name}) are not available: {expected.name} is "
            f"not in {expected.parent} and could not be downloaded ({cause}).\n"
            f"Supply them one of these ways:\n"
            f"  * run once on a machine with internet, then copy "
            f"$TORCH_HOME/hub/checkpoints/{expected.name} to {expected}\n"
            f"  * set TORCH_HOME to a folder whose hub/checkpoints holds {expected.name}\n"
            f"  * set train.{arch}.weights_file in params.yaml to the .pth file\n"
            f"Or train the scratch runs alone (README: 'Without ImageNet weights').")


def load_imagenet_state(arch: str, name: str = "IMAGENET1K_V1",
                        weights_file: str | Path = "") -> dict[str, torch.Tensor]:
    """The ImageNet state dict for ``arch``: from ``weights_file`` or the hub cache
    (downloaded there when online). Raises ``WeightsUnavailable`` otherwise."""
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsUnavailable(f"train.{arch}.weights_file = {str(path)!r}: file not found")
        return torch.load(path, map_location="cpu", weights_only=True)
    weights = weights_enum(arch, name)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as error:  # urllib, ssl, socket and hash errors alike
        raise WeightsUnavailable(_missing_weights_message(arch, name, error)) from error


def build_model(arch: str, pretrained: bool, num_class: int = NUM_CLASS,
                weights_name: str = "IMAGENET1K_V1", weights_file: str | Path = "") -> nn.Module:
    """torchvision ResNet with its ``fc`` replaced by a ``num_class``-way Linear."""
    model = BUILDERS[check_arch(arch)](weights=None)
    if pretrained:
        state = load_imagenet_state(arch, weights_name, weights_file)
        model.load_state_dict(state)  # strict: a wrong file fails here, loudly
    model.fc = nn.Linear(model.fc.in_features, num_class)
    return model


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What ``model.fc`` sees: the pooled, flattened output of the last block."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every parameter outside ``fc``."""
    for name, parameter in model.named_parameters():
        if not name.startswith("fc."):
            parameter.requires_grad_(trainable)
