"""params.yaml, parsed once into typed sections and validated before any heavy work.

Every problem found is reported together in one ``ParamsError`` that names the key,
the value and what is allowed, e.g.
``train.resnet18.lr = -0.1: must be a number > 0``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from retino.errors import ParamsError

ARCHS = ("resnet18", "resnet50")
INITS = ("pretrained", "scratch")
DEVICES = ("auto", "cpu", "cuda")
SOURCES = ("synthetic", "lab", "kaggle")
ON_BAD_INPUT = ("stop", "skip")


@dataclass(frozen=True)
class DataParams:
    source: str  # synthetic | lab | kaggle, read from data/<source>
    image_size: int
    on_bad_input: str  # stop | skip
    resplit: bool  # lab source: replace its per-image split by a patient-level one
    resplit_test_fraction: float  # splits made here: share of patients in test
    split_seed: int  # every patient-level split drawn here: test (when made here), validation


@dataclass(frozen=True)
class SynthesizeParams:
    patients: int
    canvas_height: int
    test_fraction: float  # share of patients in the synthetic set's own test split
    seed: int  # the synthetic draw: patients, grades, split, pixels


@dataclass(frozen=True)
class ComputeParams:
    """Where and how wide the stages run; read by every stage that uses the setting."""

    device: str  # auto | cpu | cuda: train and evaluate
    loader_workers: int  # DataLoader worker processes of train and evaluate
    image_workers: int  # processes of synthesize and downscale-images; 0 = one per core


@dataclass(frozen=True)
class ArchParams:
    batch_size: int
    lr: float
    imagenet_weights: str
    weights_file: str  # "" means torchvision's hub cache


@dataclass(frozen=True)
class TrainParams:
    epochs_feature_extraction: int
    epochs_fine_tuning: int
    weighted_loss: bool
    momentum: float
    weight_decay: float
    validation_fraction: float
    run_seed: int  # initial weights, batch order, flips
    resnet18: ArchParams
    resnet50: ArchParams

    def arch(self, name: str) -> ArchParams:
        check_arch(name)
        return getattr(self, name)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int


@dataclass(frozen=True)
class Params:
    data: DataParams
    synthesize: SynthesizeParams
    compute: ComputeParams
    train: TrainParams
    evaluate: EvaluateParams


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ParamsError(f"unknown arch {arch!r}: choose {' or '.join(ARCHS)}")
    return arch


def check_init(init: str) -> str:
    if init not in INITS:
        raise ParamsError(f"unknown init {init!r}: choose {' or '.join(INITS)}")
    return init


# --- value checks: each returns an error text (what is allowed) or None -------------

def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be an integer > 0"


def _non_negative_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be an integer >= 0"


def _any_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else "must be an integer"


def _positive_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a number > 0"


def _non_negative_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a number >= 0"


def _open_fraction(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
    return None if ok else "must be a number between 0 and 1 (exclusive)"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of: {', '.join(allowed)}"
    return check


def _weights_name(value: Any) -> str | None:
    ok = isinstance(value, str) and value.startswith("IMAGENET1K_")
    return None if ok else "must name a torchvision ImageNet weight, e.g. IMAGENET1K_V1"


SECTION_RULES: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "data": {
        "source": _one_of(SOURCES), "image_size": _positive_int,
        "on_bad_input": _one_of(ON_BAD_INPUT), "resplit": _boolean,
        "resplit_test_fraction": _open_fraction, "split_seed": _any_int,
    },
    "synthesize": {
        "patients": _positive_int, "canvas_height": _positive_int,
        "test_fraction": _open_fraction, "seed": _any_int,
    },
    "compute": {
        "device": _one_of(DEVICES), "loader_workers": _non_negative_int,
        "image_workers": _non_negative_int,
    },
    "train": {
        "epochs_feature_extraction": _positive_int, "epochs_fine_tuning": _positive_int,
        "weighted_loss": _boolean, "momentum": _non_negative_number,
        "weight_decay": _non_negative_number, "validation_fraction": _open_fraction,
        "run_seed": _any_int,
    },
    "evaluate": {"batch_size": _positive_int},
}
# Keys of earlier versions: naming one is an error that says where it went.
RENAMED = {
    "train.seed": "train.run_seed (initial weights, batch order, flips; the validation "
                  "hold-out is drawn with data.split_seed)",
    "data.test_fraction": "data.resplit_test_fraction",
    "train.device": "compute.device",
    "train.num_workers": "compute.loader_workers",
    "downscale.workers": "compute.image_workers",
}
REMOVED_SECTIONS = {"downscale": "its workers key is now compute.image_workers"}
ARCH_RULES: dict[str, Callable[[Any], str | None]] = {
    "batch_size": _positive_int, "lr": _positive_number,
    "imagenet_weights": _weights_name, "weights_file": _text,
}


def _check_section(prefix: str, raw: Any, rules: dict, errors: list[str],
                   subsections: tuple[str, ...] = ()) -> dict:
    if not isinstance(raw, dict):
        errors.append(f"{prefix}: missing or not a mapping of keys to values")
        return {}
    for key in sorted(set(raw) - set(rules) - set(subsections)):
        if f"{prefix}.{key}" in RENAMED:
            errors.append(f"{prefix}.{key}: renamed to {RENAMED[f'{prefix}.{key}']}")
        else:
            errors.append(f"{prefix}.{key}: unknown key; allowed: {', '.join(rules)}")
    for key, check in rules.items():
        if key not in raw:
            errors.append(f"{prefix}.{key}: missing")
            continue
        problem = check(raw[key])
        if problem:
            errors.append(f"{prefix}.{key} = {raw[key]!r}: {problem}")
    return raw


def _check_removed_sections(raw: dict, errors: list[str]) -> None:
    for section, where in REMOVED_SECTIONS.items():
        if section not in raw:
            continue
        keys = raw[section] if isinstance(raw[section], dict) else {}
        moved = [f"{section}.{key}: renamed to {RENAMED[f'{section}.{key}']}"
                 for key in keys if f"{section}.{key}" in RENAMED]
        errors.extend(moved or [f"{section}: section removed; {where}"])
    for section in sorted(set(raw) - set(SECTION_RULES) - set(REMOVED_SECTIONS)):
        errors.append(f"{section}: unknown section; allowed: {', '.join(SECTION_RULES)}")


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping and build the typed ``Params``; raise on any problem."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    _check_removed_sections(raw, errors)
    sections = {name: _check_section(name, raw.get(name), rules, errors,
                                     subsections=ARCHS if name == "train" else ())
                for name, rules in SECTION_RULES.items()}
    archs = {a: _check_section(f"train.{a}", sections["train"].get(a), ARCH_RULES, errors)
             for a in ARCHS}
    if errors:
        raise ParamsError(f"{source} has {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    train = {k: v for k, v in sections["train"].items() if k not in ARCHS}
    return Params(
        data=DataParams(**sections["data"]),
        synthesize=SynthesizeParams(**sections["synthesize"]),
        compute=ComputeParams(**sections["compute"]),
        train=TrainParams(**train, **{a: ArchParams(**archs[a]) for a in ARCHS}),
        evaluate=EvaluateParams(**sections["evaluate"]),
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the project root)")
    with path.open(encoding="utf-8") as f:
        return parse_params(yaml.safe_load(f), source=str(path))


def run_name(arch: str, init: str) -> str:
    """The one name of a run everywhere: stage, model, metrics and plot files."""
    return f"{check_arch(arch)}-{check_init(init)}"


def as_dict(section: Any) -> dict:
    """Plain-dict form of a params section, for saving inside checkpoints."""
    return dataclasses.asdict(section)
