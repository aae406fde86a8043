import copy
import os

import pytest
import torch

from retino.data.planned import planned_splits, split_problems
from retino.data.sources import missing_folders
from retino.data.stats import class_counts, class_weights, leakage_document
from retino.errors import ParamsError
from retino.grading import majority_baseline_percent
from retino.params import (ARCHS, WEIGHT_NAMES, check_arch, load_params, parse_params,
                           run_name)
from retino.train import distributed
from retino.train.inputs import EpochBatches, epoch_generator, fit_and_validation
from retino.train.loop import make_criterion
from retino.train.optim import LearningRateSchedule, make_optimizer
from retino.train.models import weights_enum
from retino.train.recipe import train_settings
from tests.conftest import ROOT, project_params


def test_project_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.resnet50.imagenet_weights == "IMAGENET1K_V1"
    assert params.train.weighted_loss is False


@pytest.mark.parametrize("section, key, value, allowed", [
    ("train", "epochs_fine_tuning", 0, "integer from 1 to 1,000"),
    ("train", "weighted_loss", "yes", "true or false"),
    ("compute", "device", "gpu", "auto, cpu, cuda"),
    ("data", "image_size", -32, "integer from 32 to 2,048"),
    ("train", "validation_fraction", 1.5, "number >= 0.05 and <= 0.5"),
    ("train", "epochs_feature_extraction", -1, "integer from 1 to 1,000"),
    ("evaluate", "batch_size", 0, "integer from 1 to 4,096"),
    ("data", "source", "eyepacs", "synthetic, lab, kaggle"),
    ("data", "on_bad_input", "ignore", "stop, skip"),
    ("data", "resplit", "no", "true or false"),
    ("data", "resplit_test_fraction", 0, "number >= 0.05 and <= 0.5"),
    ("compute", "loader_workers", -1, "integer from 0 to 256"),
    ("data", "split_seed", -1, "integer from 0 to 4,294,967,295"),
    ("synthesize", "seed", -1, "integer from 0 to 4,294,967,295"),
    ("train", "augment", "mixup", "flips, field"),
    ("train", "lr_schedule", "step", "constant, cosine"),
    ("train", "optimizer", "adam", "sgd, nesterov, adamw"),
    ("train", "ema", 1, "number >= 0 and < 1"),
    ("train", "label_smoothing", -0.1, "number >= 0 and < 1"),
    ("train", "warmup_epochs", -1, "integer from 0 to 999"),
])
def test_bad_value_names_key_value_and_allowed(section, key, value, allowed):
    raw = project_params()
    raw[section][key] = value
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert f"{section}.{key} = {value!r}" in message
    assert allowed in message


def test_all_problems_reported_together():
    raw = project_params()
    raw["train"]["resnet18"]["lr"] = 0
    raw["train"]["resnet50"]["batch_size"] = 0
    raw["train"]["weigted_loss"] = True  # a typo must not pass silently
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "train.resnet18.lr = 0" in message
    assert "train.resnet50.batch_size = 0" in message
    assert "train.weigted_loss: unknown key" in message


@pytest.mark.parametrize("section, old, new", [
    ("train", "seed", "train.run_seed"),
    ("train", "device", "compute.device"),
    ("train", "num_workers", "compute.loader_workers"),
    ("data", "test_fraction", "data.resplit_test_fraction"),
])
def test_old_names_say_the_new_name(section, old, new):
    raw = project_params()
    raw[section][old] = raw[section].get(old, 0)
    with pytest.raises(ParamsError, match=rf"{section}\.{old}: renamed to {new}"):
        parse_params(raw)


def test_removed_downscale_section_points_to_compute():
    raw = project_params()
    raw["downscale"] = {"workers": 2}
    with pytest.raises(ParamsError, match=r"downscale\.workers: renamed to compute\.image_workers"):
        parse_params(raw)
    raw["typo_section"] = {}
    with pytest.raises(ParamsError, match="typo_section: unknown section"):
        parse_params(raw)


def test_unknown_arch_lists_choices():
    with pytest.raises(ParamsError, match="unknown arch 'resnet34': choose resnet18 or resnet50"):
        check_arch("resnet34")
    assert run_name("resnet50", "pretrained") == "resnet50-pretrained"


def test_stage_reports_user_errors_without_traceback(capsys):
    from retino.errors import DataError
    from retino.stage import run_stage

    def main():
        raise DataError("data/x/train_label.csv row 3: label '9' is not a grade")

    with pytest.raises(SystemExit) as stop:
        run_stage(main)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "error: data/x/train_label.csv row 3: label '9'" in err and "Traceback" not in err


def test_imagenet_weights_must_exist_for_that_architecture():
    raw = project_params()
    raw["train"]["resnet18"]["imagenet_weights"] = "IMAGENET1K_V2"
    raw["train"]["resnet50"]["imagenet_weights"] = "IMAGENET1K_V2"  # exists for resnet50
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value).count("imagenet_weights") == 1
    assert ("train.resnet18.imagenet_weights = 'IMAGENET1K_V2': torchvision has no such "
            "weights for resnet18; choose IMAGENET1K_V1") in str(error.value)


def test_weight_names_match_torchvision():
    from retino.train.models import weight_names
    assert {arch: tuple(weight_names(arch)) for arch in WEIGHT_NAMES} == WEIGHT_NAMES


@pytest.mark.parametrize("text, key, value", [
    ("lr: 1e-3", "lr", 0.001), ("lr: .5", "lr", 0.5), ("batch_size: 0x10", "batch_size", 16),
])
def test_numbers_read_as_dvc_reads_them(tmp_path, text, key, value):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace(
        f"    {key}: {project_params()['train']['resnet18'][key]}", f"    {text}", 1))
    assert getattr(load_params(path).train.resnet18, key) == value


def test_yes_is_a_string_not_true(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace(
        "weighted_loss: false", "weighted_loss: yes", 1))
    with pytest.raises(ParamsError, match="train.weighted_loss = 'yes': must be true or false"):
        load_params(path)


def test_every_preset_names_existing_keys_with_valid_values():
    from retino.params import flat_values
    from retino.presets import PRESETS, preset_options

    known = set(flat_values(load_params(ROOT / "params.yaml")))
    for name, changes in PRESETS.items():
        assert set(changes) <= known, name
        raw = project_params()
        for key, value in changes.items():
            section = raw
            *path, last = key.split(".")
            for part in path:
                section = section[part]
            section[last] = value
        parse_params(raw)  # raises on any value the stages would refuse
        options = preset_options(name)
        assert options[::2] == ["-S"] * len(changes)
    assert "data.image_size=512" in preset_options("lab")
    field = preset_options("field")
    assert {"train.augment=field", "train.lr_schedule=cosine", "train.optimizer=nesterov",
            "train.head=regression", "data.resplit=true", "evaluate.pair_eyes=true"} <= set(field)
    assert not [option for option in field if option.startswith("data.source=")]


# --- nothing check-params lets through fails in a stage ------------------------------
# Each leaf key of params.yaml gets boundary and wrong values: negative, zero, one, two, ten,
# a fraction, huge, a wrong type, an unknown choice. check-params either refuses a
# value, naming its key, or every stage's own checks before heavy work accept it too.
CANDIDATES = (-1, 0, 1, 2, 10, 0.05, 0.5, 1.5, 2**40, "unknown", True, None, [1])


def _leaves(raw: dict, prefix: str = "") -> list[str]:
    return [key for name, value in raw.items()
            for key in (_leaves(value, f"{prefix}{name}.") if isinstance(value, dict)
                        else [f"{prefix}{name}"])]


def _with(raw: dict, key: str, value) -> dict:
    changed = copy.deepcopy(raw)
    *sections, leaf = key.split(".")
    section = changed
    for name in sections:
        section = section[name]
    section[leaf] = value
    return changed


def check_params(raw: dict):
    """What the check-params stage does: the typed params, or ParamsError."""
    params = parse_params(raw)
    problems = split_problems(params)
    problems += missing_folders(params.data.source, params.external.source)
    if problems:
        raise ParamsError("\n".join(problems))
    return params


def stages_accept(params) -> None:
    """The checks each stage runs before heavy work, through the library functions the
    stages call. Three depend on the machine, not on a value, and stay in the train
    stage: CUDA present for compute.device: cuda, train.gpus within the GPUs there are,
    and CUDA for compute.compile (tests/test_training.py); a CPU run is assumed here
    (device auto or cpu; ``all`` needs CUDA)."""
    splits = planned_splits(params)  # synthesize and downscale-images: the same split
    if splits is not None:  # other sources: their data decides, checked by the stages
        class_weights(class_counts(splits["train"].labels))  # compute-stats
        leakage_document(splits)
        majority_baseline_percent(splits["test"].labels)
        kept, _ = fit_and_validation(splits["train"].names, splits["train"].labels,
                                     params.train.validation_fraction,
                                     params.data.split_seed, "data/downscaled")
    processes = params.train.gpus
    if processes == "all":  # the number of CUDA devices: the machine's check
        return
    os.environ["WORLD_SIZE"] = str(processes)
    try:
        distributed.requested_processes(processes, torch.device("cpu"))
        for arch in ARCHS:
            arch_params = getattr(params.train, arch)
            distributed.check_batch_size(f"train.{arch}.batch_size", arch_params.batch_size)
            weights_enum(arch, arch_params.imagenet_weights)
            for init in ("pretrained", "scratch"):
                settings = train_settings(params.train, arch, init,
                                          params.compute.loader_workers, (1.0,) * 5)
                torch.manual_seed(settings.seed)
                last = settings.epochs_feature_extraction + settings.epochs_fine_tuning
                os.environ["RANK"] = str(processes - 1)  # the largest per-rank seed
                epoch_generator(distributed.rank_seed(settings.seed), last, 1)
                optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], settings)
                LearningRateSchedule(optimizer, settings, settings.epochs_fine_tuning, 1)
                make_criterion(None, torch.device("cpu"), settings.head,
                               settings.regression_loss, settings.label_smoothing)
                if splits is not None:
                    EpochBatches(len(kept), settings.batch_size, settings.seed,
                                 sharded=processes > 1)
    finally:
        os.environ.pop("WORLD_SIZE", None)
        os.environ.pop("RANK", None)


SMALLEST_SET = {"synthesize.patients": 10}  # a second base: the other keys' limits show


@pytest.mark.parametrize("base", [{}, SMALLEST_SET], ids=["defaults", "smallest-set"])
def test_every_value_check_params_lets_through_passes_every_stages_own_checks(base):
    raw = project_params()
    for key, value in base.items():
        raw = _with(raw, key, value)
    stages_accept(check_params(raw))
    accepted = refused = 0
    for key in _leaves(raw):
        for value in CANDIDATES:
            try:
                params = check_params(_with(raw, key, value))
            except ParamsError as error:
                assert key in str(error), f"{key} = {value!r}: {error}"
                refused += 1
                continue
            try:
                stages_accept(params)
            except Exception as error:  # noqa: BLE001 (any failure is the finding)
                pytest.fail(f"check-params accepts {key} = {value!r}, a stage then fails: "
                            f"{type(error).__name__}: {error}")
            accepted += 1
    assert accepted > 50 and refused > 200  # both sides of the line were tried


@pytest.mark.parametrize("changes, named", [
    ({"data.split_seed": -1}, "data.split_seed = -1"),
    ({"synthesize.seed": -1}, "synthesize.seed = -1"),
    ({"train.resnet18.batch_size": 1}, "train.resnet18.batch_size = 1: must be at least 2"),
    ({"train.gpus": 4, "train.resnet50.batch_size": 6},
     "train.resnet50.batch_size = 6: must be at least 8 for 4 process(es)"),
    ({"train.gpus": "all", "compute.device": "cpu"}, "train.gpus = 'all' needs CUDA"),
    ({"compute.compile": True, "compute.device": "cpu"},
     "compute.compile = true with compute.device = 'cpu': torch.compile is for the CUDA"),
    ({"compute.compile": True, "compute.device": "cuda", "train.gpus": 2},
     "compute.compile = true with train.gpus = 2: the compiled DistributedDataParallel "
     "model breaks its graph at every SyncBatchNorm layer"),
    ({"compute.compile": True, "train.gpus": "all"}, "compute.compile = true with "
     "train.gpus = 'all'"),
    ({"synthesize.patients": 10, "train.validation_fraction": 0.05},
     "train.validation_fraction = 0.05 (drawn with data.split_seed = 0) holds out 0"),
    ({"synthesize.patients": 10, "synthesize.test_fraction": 0.05}, "leaves no test images"),
    ({"train.head": "regression", "train.label_smoothing": 0.1},
     "train.label_smoothing = 0.1 with train.head = 'regression': label smoothing is for"),
    ({"train.warmup_epochs": 3}, "train.warmup_epochs = 3: must be shorter than each "
     "training phase (the shortest, of the pretrained runs, has 3 epoch(s)"),
    ({"train.optimizer": "nesterov", "train.momentum": 0}, "Nesterov momentum needs a momentum"),
    ({"data.source": "aptos", "evaluate.pair_eyes": True},
     "evaluate.pair_eyes = true with data.source = 'aptos': its image names carry no patient"),
    ({"external.source": ["idrid"]}, "external.source = 'idrid': data/idrid/ not found; "
     "see docs/data.md"),
    ({"data.source": "kaggle"}, "data.source = 'kaggle': data/kaggle/ not found"),
])
def test_values_a_stage_used_to_stop_on_are_refused_by_check_params(changes, named):
    raw = project_params()
    for key, value in changes.items():
        raw = _with(raw, key, value)
    with pytest.raises(ParamsError) as error:
        check_params(raw)
    assert named in str(error.value)
