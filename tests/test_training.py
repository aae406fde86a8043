import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from retino.errors import ParamsError
from retino.train import device as device_module
from retino.train import fit as fit_module
from retino.train import inputs, loop
from retino.train.device import autocast, check_compile, memory_format, resolve_device
from retino.train.fit import Recorder, TrainingState, fit, train_phase
from retino.train.inputs import EpochBatches, ToModel, load_train_data, make_loader, set_epoch
from retino.train.loop import make_criterion
from retino.train.models import backbone_features, build_model
from retino.train.optim import LearningRateSchedule
from retino.train.phases import image_run
from retino.train.recipe import PHASE_FEATURES, PHASE_FINE_TUNING, TrainSettings
from retino.train.resume import ResumeFile, RunIdentity

MEAN, STD = (0.5, 0.2, 0.1), (0.3, 0.15, 0.06)
CPU = torch.device("cpu")


def _settings(init="pretrained", weights=None, epochs=(1, 1)) -> TrainSettings:
    return TrainSettings(init=init, epochs_feature_extraction=epochs[0],
                         epochs_fine_tuning=epochs[1], batch_size=8, lr=0.01, momentum=0.9,
                         weight_decay=5e-4, class_weights=weights, seed=0)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


@pytest.fixture
def data(tiny_dataset):
    return load_train_data(tiny_dataset, MEAN, STD, validation_fraction=0.3, seed=0)


def test_feature_extraction_changes_only_fc(torch_home, data):
    model = build_model("resnet18", pretrained=True)
    before = _snapshot(model)
    result = fit(model, data, _settings(epochs=(1, 0)), CPU)  # the feature phase alone
    assert _changed(before, model) == {"fc.weight", "fc.bias"}  # BN statistics too stay put
    assert [r.phase for r in result.history] == [PHASE_FEATURES]


def test_fine_tuning_changes_the_backbone(torch_home, data):
    model = build_model("resnet18", pretrained=True)
    before = _snapshot(model)
    settings = _settings()
    run = image_run(model, data, settings, CPU)
    state = TrainingState(run.optimizer, LearningRateSchedule(run.optimizer, settings, 1,
                                                              len(run.fit)))
    train_phase(run, PHASE_FINE_TUNING, range(1), settings, Recorder(model),
                nn.CrossEntropyLoss(), state, model, lambda result, state: None)
    changed = _changed(before, model)
    assert {"conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "fc.weight"} <= changed
    assert all(p.requires_grad for p in model.parameters())


def test_stored_features_give_the_frozen_backbone_gradients(torch_home, data):
    model = build_model("resnet18", pretrained=True).eval()
    pixels, labels = zip(*(data.fit[i] for i in range(8)))
    images, labels = ToModel(MEAN, STD, CPU)(torch.stack(pixels)), torch.tensor(labels)
    criterion = nn.CrossEntropyLoss()
    with torch.no_grad():
        stored = backbone_features(model, images)
    criterion(model.fc(stored), labels).backward()
    from_features = [p.grad.clone() for p in model.fc.parameters()]
    model.zero_grad()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("fc."))
    criterion(model(images), labels).backward()
    for stored_grad, parameter in zip(from_features, model.fc.parameters()):
        torch.testing.assert_close(stored_grad, parameter.grad)


def test_weighted_loss_uses_the_computed_weights():
    weights = (0.27, 2.8, 1.3, 8.1, 9.7)
    criterion = make_criterion(weights, CPU)
    torch.testing.assert_close(criterion.weight, torch.tensor(weights))
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 4])
    per_image = nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor(weights)[labels]
    torch.testing.assert_close(criterion(logits, labels), (w * per_image).sum() / w.sum())
    assert make_criterion(None, CPU).weight is None


def test_training_is_deterministic_on_cpu(data):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("resnet18", pretrained=False)
        result = fit(model, data, _settings("scratch", epochs=(1, 1)), CPU)
        runs.append((result.history, result.best_state))
    assert runs[0][0] == runs[1][0]
    assert len(runs[0][0]) == 2  # scratch trains for the sum of both phases
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key


def test_checkpoint_is_chosen_on_validation_not_test(data):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    result = fit(model, data, _settings("scratch", epochs=(1, 2)), CPU)
    keys = [(r.val_qwk, r.val_acc) for r in result.history]
    assert result.best_epoch == keys.index(max(keys)) + 1


def test_device_choice_never_falls_back():
    if torch.cuda.is_available():
        pytest.skip("this check needs a machine without CUDA")
    with pytest.raises(ParamsError, match="compute.device = 'cuda' but this machine has no"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ParamsError, match="must be one of: auto, cpu, cuda"):
        resolve_device("tpu")


def test_compile_is_refused_on_the_cpu_whatever_asked_for_it():
    with pytest.raises(ParamsError, match="compute.compile = true, but this stage trains on "
                                          "the CPU \\(compute.device = 'auto'\\)"):
        check_compile(True, CPU, "auto")  # auto found no CUDA: never trains uncompiled
    check_compile(False, CPU, "cpu")
    check_compile(True, torch.device("cuda"), "cuda")  # nothing on CUDA is touched


def test_compile_wraps_the_training_step_alone(data):
    """With compute.compile the image phases train through torch.compile's module,
    which shares the model's parameters; scoring stays on the eager model."""
    model = build_model("resnet18", pretrained=False)
    settings = dataclasses.replace(_settings("scratch"), compile=True)
    run = image_run(model, data, settings, CPU)
    assert isinstance(run.module, torch._dynamo.eval_frame.OptimizedModule)
    assert run.module._orig_mod is model and run.scorer is model
    assert image_run(model, data, _settings("scratch"), CPU).module is model


def test_gpu_speed_settings_are_selected_by_device():
    assert memory_format(torch.device("cuda")) == torch.channels_last
    assert memory_format(CPU) == torch.contiguous_format
    with warnings.catch_warnings():  # "CUDA is not available" on CPU-only machines
        warnings.simplefilter("ignore")
        cuda_autocast = autocast(torch.device("cuda"))
    assert isinstance(cuda_autocast, torch.autocast) and cuda_autocast.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(CPU), torch.autocast)


def test_gpu_input_path_runs_on_cpu_in_bf16_and_channels_last(data, monkeypatch):
    """The CUDA branch of every device switch, exercised on the CPU: bf16 autocast in
    the loop and channels_last batches straight from the uint8 NHWC arrays."""
    monkeypatch.setattr(loop, "autocast",
                        lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    monkeypatch.setattr(inputs, "memory_format", lambda device: torch.channels_last)
    monkeypatch.setattr(fit_module, "memory_format", lambda device: torch.channels_last)
    pixels = torch.stack([data.fit[i][0] for i in range(4)])
    batch = ToModel(MEAN, STD, CPU, reuse_buffers=False)(pixels)  # the CUDA branch
    assert batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch, ToModel(MEAN, STD, CPU)(pixels))
    torch.manual_seed(0)
    result = fit(build_model("resnet18", pretrained=False), data,
                 _settings("scratch", epochs=(1, 1)), CPU)
    assert len(result.history) == 2
    assert all(torch.isfinite(v).all() for v in result.best_state.values() if v.is_floating_point())
    assert device_module.memory_format(torch.device("cuda")) == torch.channels_last


class Interrupted(Exception):
    pass


def _run(data, settings, resume_file=None, stop_after=None):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=settings.init == "pretrained")

    def on_epoch(result, state):
        if resume_file:
            resume_file.save(result, model, state)
        if stop_after == len(result.history):
            raise Interrupted  # as a Ctrl-C right after this epoch's state is saved

    point = resume_file.load() if resume_file else None
    result = fit(model, data, settings, CPU, point, on_epoch)
    return result, _snapshot(model)


@pytest.mark.parametrize("stop_after", [1, 3])  # inside feature extraction; inside fine-tuning
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(torch_home, data, tmp_path,
                                                             stop_after):
    assert_resume_is_exact(data, _settings(epochs=(2, 2)), tmp_path, stop_after)


def assert_resume_is_exact(data, settings, tmp_path, stop_after):
    """A run stopped after epoch ``stop_after`` and resumed ends with the history, the
    weights and the best weights of the uninterrupted run; returns that run's result."""
    whole, whole_weights = _run(data, settings)
    resume_file = ResumeFile(tmp_path / "run.resume.pt", _identity())
    with pytest.raises(Interrupted):
        _run(data, settings, resume_file, stop_after=stop_after)
    resumed, resumed_weights = _run(data, settings, resume_file)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    for key, value in whole_weights.items():
        assert torch.equal(value, resumed_weights[key]), key
    for key, value in whole.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    return whole


def _identity(**changes) -> RunIdentity:
    fields = dict(settings={"train.run_seed": 0, "run": "resnet18-scratch"},
                  code={"stages/train.py": "aa", "retino/train/loop.py": "bb"},
                  versions=RunIdentity.versions_now(), weights=None, data="cc")
    return RunIdentity(**{**fields, **changes})


@pytest.mark.parametrize("changes, named", [
    (dict(settings={"train.run_seed": 1, "run": "resnet18-scratch"}), "params (train.run_seed)"),
    (dict(code={"stages/train.py": "aa", "retino/train/loop.py": "b2"}),
     "code (retino/train/loop.py)"),
    (dict(versions={"torch": "0.0", "torchvision": "0.0", "numpy": "0.0"}),
     "torch/torchvision/numpy versions"),
    (dict(weights="dd"), "ImageNet weights file"),
    (dict(data="c2"), "input data"),
])
def test_resume_state_of_another_run_is_ignored_saying_why(data, tmp_path, capsys, changes,
                                                          named):
    settings = _settings("scratch", epochs=(1, 1))
    with pytest.raises(Interrupted):
        _run(data, settings, ResumeFile(tmp_path / "r.pt", _identity()), stop_after=1)
    assert ResumeFile(tmp_path / "r.pt", _identity()).load() is not None
    capsys.readouterr()
    assert ResumeFile(tmp_path / "r.pt", _identity(**changes)).load() is None
    message = capsys.readouterr().err
    assert f"left by a run with other {named}; ignored, starting over" in message
    assert len(message.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_unreadable_resume_file_is_discarded_with_a_warning(tmp_path, capsys, content):
    path = tmp_path / "r.pt"
    path.write_bytes(content)
    assert ResumeFile(path, _identity()).load() is None
    assert "cannot be read as a resume state" in capsys.readouterr().err
    assert not path.exists()


def test_a_last_batch_of_one_image_joins_the_one_before():
    batches = list(EpochBatches(size=17, batch_size=8, seed=0))
    assert [len(b) for b in batches] == [8, 9]  # not 8, 8, 1
    assert sorted(i for b in batches for i in b) == list(range(17))
    assert len(EpochBatches(17, 8, 0)) == 2 and len(EpochBatches(18, 8, 0)) == 3
    assert [len(b) for b in EpochBatches(1, 8, 0)] == [1]


def test_training_on_a_fit_set_that_leaves_one_image_over_does_not_crash(data):
    torch.manual_seed(0)
    settings = dataclasses.replace(_settings("scratch", epochs=(1, 0)),
                                   batch_size=len(data.fit) - 1)  # BatchNorm at 1x1 px
    result = fit(build_model("resnet18", pretrained=False), data, settings, CPU)
    assert len(result.history) == 1 and np.isfinite(result.history[0].train_loss)


def _epoch_order(loader, epoch: int) -> list[int]:
    set_epoch(loader, epoch)
    return [int(i) for _, labels in loader for i in labels]


def test_batch_order_depends_on_seed_and_epoch_only_even_with_persistent_workers(data):
    indexed = TensorDataset(torch.zeros(len(data.fit), 1), torch.arange(len(data.fit)))
    running = make_loader(indexed, 4, True, 2, CPU, seed=5)  # persistent workers
    orders = [_epoch_order(running, epoch) for epoch in range(3)]
    resumed = make_loader(indexed, 4, True, 2, CPU, seed=5)  # a fresh process, at epoch 2
    assert _epoch_order(resumed, 2) == orders[2]
    assert _epoch_order(make_loader(indexed, 4, True, 0, CPU, seed=5), 1) == orders[1]
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(len(data.fit)))


def test_vectorised_batch_path_equals_the_per_image_one_with_flips():
    pixels = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    per_image = ToModel(MEAN, STD, CPU)(pixels, torch.Generator().manual_seed(3))
    whole_batch = ToModel(MEAN, STD, CPU, reuse_buffers=False)(pixels,
                                                              torch.Generator().manual_seed(3))
    torch.testing.assert_close(whole_batch, per_image, rtol=0, atol=1e-6)


def test_scoring_runs_in_float32_even_when_training_uses_bf16(data, monkeypatch):
    monkeypatch.setattr(loop, "autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    loader = make_loader(data.validation, 8, False, 0, CPU)
    to_model = ToModel(MEAN, STD, CPU)
    _, logits = loop.predict_logits(model, loader, CPU, to_model)
    with torch.no_grad():
        expected = torch.cat([model(to_model(batch)) for batch, _ in loader])
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, expected.numpy())


def test_the_chosen_epoch_and_validation_scores_ignore_the_test_images(data):
    """Were the "validation" columns computed on test, other test images would move them."""
    runs = []
    for test in (data.test, data.fit.subset(range(12))):
        torch.manual_seed(0)
        result = fit(build_model("resnet18", pretrained=False),
                     dataclasses.replace(data, test=test), _settings("scratch", epochs=(1, 2)),
                     CPU)
        runs.append(result)
    validation = [[(r.val_qwk, r.val_acc) for r in run.history] for run in runs]
    assert validation[0] == validation[1] and runs[0].best_epoch == runs[1].best_epoch
    assert [r.acc_test for r in runs[0].history] != [r.acc_test for r in runs[1].history]


# --- CUDA settings that a CPU machine can still check --------------------------------

@pytest.fixture
def cuda_flags():
    """The backend flags as they were, restored after the test."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:4]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def test_compute_deterministic_makes_cuda_reproducible_and_is_recorded(cuda_flags):
    device_module.configure_backends(torch.device("cuda"), deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    device_module.configure_backends(torch.device("cuda"), deterministic=False)
    assert torch.backends.cudnn.benchmark  # the autotuner, when reproducibility is not asked
    from retino.params import declared_keys
    assert "compute.deterministic" in declared_keys("train", "resnet18")  # in the model file


def test_scoring_runs_in_true_float32_and_the_training_step_keeps_tf32():
    # failed before: this torch lets cuDNN convolutions use TF32 by default, scoring too
    seen = []

    class Probe(nn.Module):
        def forward(self, inputs):
            seen.append(torch.backends.cudnn.conv.fp32_precision)
            return inputs.flatten(1)[:, :5]

    before = torch.backends.cudnn.conv.fp32_precision
    loader = make_loader(TensorDataset(torch.randn(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)),
                         2, False, 0, CPU)
    loop.predict_logits(Probe(), loader, CPU)
    assert seen == ["ieee", "ieee"]
    assert torch.backends.cudnn.conv.fp32_precision == before  # restored for training


def test_a_training_step_reads_nothing_back_from_the_device(monkeypatch):
    """The loss and the right answers add up on the device; with the bar's refresh
    interval out of reach, one read per epoch however many steps (the DataLoader's own
    draw of its seed, once an epoch on the CPU, is the only other ``item``)."""
    monkeypatch.setattr(loop, "READ_SECONDS", 1e9)
    original, item = loop.read_numbers, torch.Tensor.item
    counts = {"reads": 0, "items": 0}

    def counted(key, call):
        def wrapper(*args):
            counts[key] += 1
            return call(*args)
        return wrapper
    monkeypatch.setattr(loop, "read_numbers", counted("reads", original))
    monkeypatch.setattr(torch.Tensor, "item", counted("items", item))
    seen = []
    for images in (40, 80):  # 10 and 20 steps
        counts.update(reads=0, items=0)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        data = TensorDataset(torch.randn(images, 3, 2, 2), torch.randint(0, 5, (images,)))
        loader = make_loader(data, 4, True, 0, CPU, seed=1)
        set_epoch(loader, 0)
        loss, accuracy = loop.train_one_epoch(
            model, loader, make_criterion([1.0, 2, 3, 4, 5], CPU),
            torch.optim.SGD(model.parameters(), lr=0.1), inputs.to_device(CPU), "epoch")
        assert np.isfinite(loss) and 0 <= accuracy <= 100
        seen.append(dict(counts))
    assert seen[0] == seen[1] and seen[0]["reads"] == 1 and seen[0]["items"] <= 1, seen
