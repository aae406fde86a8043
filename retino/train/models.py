"""ResNet-18/50 with a 5-way ``fc``, ImageNet weights from torchvision's hub cache.

(The lab's ``ResNet18(num_class, pretrained)`` and ``ResNet50(...)`` calls live in
``retino.lab`` and build through ``build_model`` here.) Pretrained weights are torchvision's (``IMAGENET1K_V1`` unless
asked otherwise), loaded from ``$TORCH_HOME/hub/checkpoints`` or an explicit file;
when they are neither there nor downloadable the run stops with the file it needs.
A model called "pretrained" is never left with random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models

from retino.errors import ParamsError, WeightsUnavailable, brief
from retino.grading import NUM_CLASS
from retino.params import check_arch

BUILDERS = {"resnet18": tv_models.resnet18, "resnet50": tv_models.resnet50}
WEIGHT_ENUMS = {"resnet18": tv_models.ResNet18_Weights, "resnet50": tv_models.ResNet50_Weights}


def weight_names(arch: str) -> list[str]:
    """The ImageNet weights torchvision has for ``arch`` (``DEFAULT`` is only an alias)."""
    return [name for name in WEIGHT_ENUMS[check_arch(arch)].__members__ if name != "DEFAULT"]


def weights_enum(arch: str, name: str = "IMAGENET1K_V1") -> tv_models.WeightsEnum:
    """The torchvision weights ``name`` of ``arch``; an unknown name lists the known ones."""
    if name not in weight_names(arch):
        raise ParamsError(f"train.{arch}.imagenet_weights = {name!r}: torchvision has no such "
                          f"weights for {arch}; choose {' or '.join(weight_names(arch))}")
    return WEIGHT_ENUMS[arch][name]


def expected_weights_file(arch: str, name: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision looks for the weights: ``<hub dir>/checkpoints/<file>``."""
    url = weights_enum(arch, name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def weights_source(arch: str, name: str, weights_file: str | Path = "") -> Path:
    """The file the ImageNet weights of a pretrained run come from."""
    return Path(weights_file) if weights_file else expected_weights_file(arch, name)


def _missing_weights_message(arch: str, name: str, cause: BaseException) -> str:
    expected = expected_weights_file(arch, name)
    return (f"ImageNet weights for {arch} ({name}) are not available: {expected.name} is "
            f"not in {expected.parent} and could not be downloaded ({cause}).\n"
            f"Supply them one of these ways:\n"
            f"  * run once on a machine with internet, then copy "
            f"$TORCH_HOME/hub/checkpoints/{expected.name} to {expected}\n"
            f"  * set TORCH_HOME to a folder whose hub/checkpoints holds {expected.name}\n"
            f"  * set train.{arch}.weights_file in params.yaml to the .pth file\n"
            f"Or train the scratch runs alone (docs/training.md: 'Without ImageNet "
            "weights').")


def _read_weights_file(arch: str, path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a zip, truncated, a pickle of other objects, ...
        raise WeightsUnavailable(f"{what} = {str(path)!r}: not a PyTorch weights file that "
                                 f"loads with weights_only=True ({brief(error)})") from None


def _reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        return {k: tuple(v.shape) for k, v in BUILDERS[arch]().state_dict().items()}


def _state_dict_problem(arch: str, state: Any) -> str | None:
    """Why ``state`` is not a torchvision ImageNet state dict of ``arch``, or None."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        if isinstance(state, dict) and str(state.get("format", "")).startswith("retino-"):
            return "it is a retino model file, not ImageNet weights"
        return "it does not hold a state dict (a mapping of names to tensors)"
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for candidate in BUILDERS:
        if shapes == _reference_shapes(candidate):
            return None if candidate == arch else f"it holds {candidate} weights, not {arch}"
    reference = _reference_shapes(arch)
    missing, unexpected = sorted(set(reference) - set(shapes)), sorted(set(shapes) - set(reference))
    wrong = sorted(k for k in set(reference) & set(shapes) if reference[k] != shapes[k])
    parts = [f"{len(missing)} missing tensors (e.g. {missing[0]})" if missing else "",
             f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
             f"{len(wrong)} of other shape (e.g. {wrong[0]}: {shapes[wrong[0]]}, expected "
             f"{reference[wrong[0]]})" if wrong else ""]
    return f"it is not a {arch} ImageNet state dict: " + ", ".join(p for p in parts if p)


def load_imagenet_state(arch: str, name: str = "IMAGENET1K_V1",
                        weights_file: str | Path = "") -> dict[str, torch.Tensor]:
    """The ImageNet state dict for ``arch``: from ``weights_file`` or the hub cache
    (downloaded there when online). Raises ``WeightsUnavailable`` otherwise, and for a
    file that holds anything but ``arch``'s ImageNet weights."""
    if weights_file:
        path, what = Path(weights_file), f"train.{arch}.weights_file"
        if not path.is_file():
            raise WeightsUnavailable(f"{what} = {str(path)!r}: file not found")
    else:
        path, what = expected_weights_file(arch, name), f"the hub cache file for {arch} ({name})"
        if not path.is_file():
            try:  # torchvision downloads it into the hub cache (and checks its hash)
                weights_enum(arch, name).get_state_dict(progress=True, check_hash=True)
            except Exception as error:  # urllib, ssl, socket and hash errors alike
                raise WeightsUnavailable(_missing_weights_message(arch, name, error)) from error
    state = _read_weights_file(arch, path, what)
    problem = _state_dict_problem(arch, state)
    if problem:
        raise WeightsUnavailable(f"{what} = {str(path)!r}: {problem}")
    return state


def build_model(arch: str, pretrained: bool, outputs: int = NUM_CLASS,
                weights_name: str = "IMAGENET1K_V1", weights_file: str | Path = "") -> nn.Module:
    """torchvision ResNet with its ``fc`` replaced by a Linear of ``outputs`` outputs (5
    logits for the classification head, 1 score for the regression head)."""
    model = BUILDERS[check_arch(arch)](weights=None)
    if pretrained:
        model.load_state_dict(load_imagenet_state(arch, weights_name, weights_file))
    model.fc = nn.Linear(model.fc.in_features, outputs)
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
