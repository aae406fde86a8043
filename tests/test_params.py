import pytest

from retino.errors import ParamsError
from retino.params import WEIGHT_NAMES, check_arch, load_params, parse_params, run_name
from tests.conftest import ROOT, project_params


def test_project_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.resnet50.imagenet_weights == "IMAGENET1K_V1"
    assert params.train.weighted_loss is False


@pytest.mark.parametrize("section, key, value, allowed", [
    ("train", "epochs_fine_tuning", 0, "integer > 0"),
    ("train", "weighted_loss", "yes", "true or false"),
    ("compute", "device", "gpu", "auto, cpu, cuda"),
    ("data", "image_size", -32, "integer > 0"),
    ("train", "validation_fraction", 1.5, "between 0 and 1"),
    ("train", "epochs_feature_extraction", -1, "integer > 0"),
    ("evaluate", "batch_size", 0, "integer > 0"),
    ("data", "source", "eyepacs", "synthetic, lab, kaggle"),
    ("data", "on_bad_input", "ignore", "stop, skip"),
    ("data", "resplit", "no", "true or false"),
    ("data", "resplit_test_fraction", 0, "between 0 and 1"),
    ("compute", "loader_workers", -1, "integer >= 0"),
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
