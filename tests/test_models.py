import re

import pytest
import torch

from retino.errors import ParamsError, WeightsUnavailable
from retino.lab import ResNet18, ResNet50
from retino.train.models import backbone_features, build_model, expected_weights_file
from tests.conftest import WEIGHT_FILES


@pytest.mark.parametrize("constructor", [ResNet18, ResNet50])
def test_lab_constructors_forward_backward(constructor):
    torch.manual_seed(0)
    model = constructor(5, False)
    assert model.fc.out_features == 5
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_pretrained_weights_come_from_the_hub_cache(torch_home, arch):
    path = torch_home / "hub" / "checkpoints" / WEIGHT_FILES[arch]
    assert expected_weights_file(arch) == path
    saved = torch.load(path, weights_only=True)
    model = build_model(arch, pretrained=True)
    torch.testing.assert_close(model.conv1.weight, saved["conv1.weight"])
    torch.testing.assert_close(model.layer4[0].conv1.weight, saved["layer4.0.conv1.weight"])
    assert model.fc.out_features == 5


def test_explicit_weights_file(tmp_path, stand_in_weights, offline):
    source = stand_in_weights / "hub" / "checkpoints" / WEIGHT_FILES["resnet18"]
    model = build_model("resnet18", True, weights_file=source)
    torch.testing.assert_close(model.conv1.weight,
                               torch.load(source, weights_only=True)["conv1.weight"])
    with pytest.raises(WeightsUnavailable, match="train.resnet18.weights_file = .*not found"):
        build_model("resnet18", True, weights_file=tmp_path / "nope.pth")


def test_missing_weights_stop_with_the_file_name_and_remedies(offline):
    with pytest.raises(WeightsUnavailable) as error:
        build_model("resnet18", pretrained=True)
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(offline / "hub" / "checkpoints") in message
    assert "train.resnet18.weights_file" in message
    assert "Without ImageNet weights" in message


def test_backbone_features_feed_fc_exactly():
    torch.manual_seed(0)
    model = ResNet18(5, False).eval()
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model.fc(backbone_features(model, images)), model(images))


@pytest.mark.parametrize("content, says", [
    ("resnet50", "it holds resnet50 weights, not resnet18"),
    ("checkpoint", "it is a retino model file, not ImageNet weights"),
    ("missing_fc", "it is not a resnet18 ImageNet state dict: 1 missing tensors (e.g. fc.bias)"),
    ("text", "not a PyTorch weights file that loads with weights_only=True"),
])
def test_a_wrong_weights_file_is_named_with_what_is_wrong(tmp_path, stand_in_weights, content,
                                                         says):
    path = tmp_path / "weights.pth"
    own = torch.load(stand_in_weights / "hub" / "checkpoints" / WEIGHT_FILES["resnet18"],
                     weights_only=True)
    if content == "resnet50":
        path = stand_in_weights / "hub" / "checkpoints" / WEIGHT_FILES["resnet50"]
    elif content == "checkpoint":
        torch.save({"format": "retino-checkpoint-1", "state_dict": own}, path)
    elif content == "missing_fc":
        torch.save({k: v for k, v in own.items() if k != "fc.bias"}, path)
    else:
        path.write_text("not weights")
    with pytest.raises(WeightsUnavailable, match=f"train.resnet18.weights_file = .*{re.escape(says)}"):
        build_model("resnet18", True, weights_file=path)


def test_unknown_weights_name_lists_the_ones_torchvision_has():
    with pytest.raises(ParamsError, match="train.resnet18.imagenet_weights = 'IMAGENET1K_V2': "
                       "torchvision has no such weights for resnet18; choose IMAGENET1K_V1"):
        build_model("resnet18", True, weights_name="IMAGENET1K_V2")
