"""params.yaml, parsed once into typed sections and validated before any heavy work.

Every problem found is reported together in one ``ParamsError`` that names the key,
the value and what is allowed, e.g.
``train.resnet18.lr = -0.1: must be a number > 0``.

The file is read as DVC reads it (ruamel.yaml, YAML 1.2: ``1e-3`` is a number,
``yes`` is the string "yes"), so ``dvc params diff`` and the stages never disagree.
A stage loads its params with ``load_params(stage=...)`` and gets a view in which
only the keys its ``dvc.yaml`` entry declares (``STAGE_PARAMS``) can be read; those
same keys, and no others, are what it records in its outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from retino.errors import ParamsError

ARCHS = ("resnet18", "resnet50")
INITS = ("pretrained", "scratch")
DEVICES = ("auto", "cpu", "cuda")
SOURCES = ("synthetic", "lab", "kaggle", "aptos", "messidor2", "idrid", "folders")
# sources whose image names never say the patient (a folders tree may, by its names)
PATIENTS_UNKNOWN = ("aptos", "messidor2", "idrid")
ON_BAD_INPUT = ("stop", "skip")
HEADS = ("classification", "regression")
REGRESSION_LOSSES = ("smooth_l1", "mse")
PREPROCESSING = ("none", "graham")
TTA = ("none", "flips")
AUGMENTATIONS = ("flips", "field")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "nesterov", "adamw")
EXTERNAL_SPLITS = ("all", "test")
# each external.split in words, as the stages and reports say it
EXTERNAL_SPLIT_TEXT = {"all": "every gradable image", "test": "its test split"}
# The ImageNet weights torchvision has for each architecture (a test keeps this equal
# to torchvision's own list), so that params.yaml is checked without importing torch.
WEIGHT_NAMES = {"resnet18": ("IMAGENET1K_V1",), "resnet50": ("IMAGENET1K_V1", "IMAGENET1K_V2")}


@dataclass(frozen=True)
class DataParams:
    source: str  # synthetic | lab | kaggle | aptos | messidor2 | idrid | folders: data/<source>
    image_size: int
    on_bad_input: str  # stop | skip
    resplit: bool  # lab source: replace its per-image split by a patient-level one
    resplit_test_fraction: float  # splits made here: share of patients in test
    split_seed: int  # every patient-level split drawn here: test (when made here), validation
    preprocess: str  # none | graham (local average colour subtracted, rim masked)


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
    compile: bool  # train: torch.compile the training step (CUDA only)
    deterministic: bool  # train on CUDA: reproducible kernels, no cuDNN autotuner


@dataclass(frozen=True)
class ArchParams:
    batch_size: int
    lr: float
    imagenet_weights: str
    weights_file: str  # "" means torchvision's hub cache


@dataclass(frozen=True)
class TrainParams:
    head: str  # classification (5 logits, the lab's) | regression (one score, cut-points)
    regression_loss: str  # smooth_l1 | mse (regression head only)
    epochs_feature_extraction: int
    epochs_fine_tuning: int
    weighted_loss: bool
    momentum: float
    weight_decay: float
    validation_fraction: float
    run_seed: int  # initial weights, batch order, augmentation
    augment: str  # flips (the lab's) | field (rotation, scale, shift, colour, flips)
    lr_schedule: str  # constant (the lab's) | cosine, stepped per batch in each phase
    warmup_epochs: int  # linear warm-up at the start of each phase; 0 = none
    optimizer: str  # sgd (the lab's, with momentum) | nesterov | adamw
    ema: float  # decay of the weights' moving average; 0 = off
    label_smoothing: float  # classification head's cross-entropy; 0 = off
    gpus: int | str  # processes (devices) of one run, or "all"; > 1 runs under torchrun
    resnet18: ArchParams
    resnet50: ArchParams


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    tta: str  # none | flips: average the outputs over the four flips of each image
    pair_eyes: bool  # also grade each eye from both eyes' outputs (patient-level split only)


@dataclass(frozen=True)
class ExternalParams:
    # [] or [one source]: a list, so that DVC makes the external stages from it (one per
    # entry) and an empty one adds no stage to the default run
    source: tuple[str, ...]
    split: str  # all (every gradable image) | test (the set's test split)


@dataclass(frozen=True)
class Params:
    data: DataParams
    synthesize: SynthesizeParams
    compute: ComputeParams
    train: TrainParams
    evaluate: EvaluateParams
    external: ExternalParams


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ParamsError(f"unknown arch {arch!r}: choose {' or '.join(ARCHS)}")
    return arch


def check_init(init: str) -> str:
    if init not in INITS:
        raise ParamsError(f"unknown init {init!r}: choose {' or '.join(INITS)}")
    return init


# --- value checks: each returns an error text (what is allowed) or None -------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_in(low: int, high: int, why: str = "") -> Callable[[Any], str | None]:
    """An integer from ``low`` to ``high``; ``why`` says where the bounds come from."""
    def check(value: Any) -> str | None:
        ok = _is_int(value) and low <= value <= high
        return None if ok else f"must be an integer from {low:,} to {high:,}{why}"
    return check


def _number_in(low: float, high: float, low_open: bool = False, high_open: bool = False,
               why: str = "") -> Callable[[Any], str | None]:
    """A number between ``low`` and ``high`` (``*_open``: that end excluded)."""
    def check(value: Any) -> str | None:
        ok = (_is_number(value) and (value > low if low_open else value >= low)
              and (value < high if high_open else value <= high))
        if ok:
            return None
        return (f"must be a number {'>' if low_open else '>='} {low:g} and "
                f"{'<' if high_open else '<='} {high:g}{why}")
    return check


# Bounds: the values a stage can run with (a seed past 2**32 overflows torch's generator
# once the epoch is folded in; ResNet halves the image 5 times) and a ceiling well past
# any sensible value, so that a typo of three extra zeros stops here, not in a stage
# that DVC has already emptied.
SEED = _int_in(0, 2**32 - 1)
EPOCHS = _int_in(1, 1000)
WORKERS = _int_in(0, 256)
BATCH = _int_in(1, 4096)
FRACTION = _number_in(0.05, 0.5, why=" (a share of patients)")


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _process_count(value: Any) -> str | None:
    ok = value == "all" or (_is_int(value) and 1 <= value <= 1024)
    return None if ok else "must be an integer from 1 to 1,024, or all"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of: {', '.join(allowed)}"
    return check


def _external_sources(value: Any) -> str | None:
    """external.source: ``[]`` or a list of one source (brackets included)."""
    if not isinstance(value, list):
        return (f"must be a list: [] (none) or one source in brackets, e.g. [aptos] "
                f"(dvc exp run -S 'external.source=[aptos]'); sources: {', '.join(SOURCES)}")
    unknown = [item for item in value if item not in SOURCES]
    if unknown:
        return f"{unknown[0]!r} is no source; sources: {', '.join(SOURCES)}"
    if len(value) > 1:
        return ("one external source per run: run one experiment per source (dvc exp run "
                "-S 'external.source=[aptos]', then [messidor2]); dvc exp show puts them "
                "side by side")
    return None


SECTION_RULES: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "data": {
        "source": _one_of(SOURCES),
        "image_size": _int_in(32, 2048, " (ResNet halves the image 5 times)"),
        "on_bad_input": _one_of(ON_BAD_INPUT), "resplit": _boolean,
        "resplit_test_fraction": FRACTION, "split_seed": SEED,
        "preprocess": _one_of(PREPROCESSING),
    },
    "synthesize": {
        "patients": _int_in(2 * 5, 100_000, " (10: one patient of each grade at least)"),
        "canvas_height": _int_in(64, 4096), "test_fraction": FRACTION, "seed": SEED,
    },
    "compute": {
        "device": _one_of(DEVICES), "loader_workers": WORKERS, "image_workers": WORKERS,
        "compile": _boolean, "deterministic": _boolean,
    },
    "train": {
        "head": _one_of(HEADS), "regression_loss": _one_of(REGRESSION_LOSSES),
        "epochs_feature_extraction": EPOCHS, "epochs_fine_tuning": EPOCHS,
        "weighted_loss": _boolean, "momentum": _number_in(0, 1, high_open=True),
        "weight_decay": _number_in(0, 1, high_open=True), "validation_fraction": FRACTION,
        "run_seed": SEED, "augment": _one_of(AUGMENTATIONS),
        "lr_schedule": _one_of(LR_SCHEDULES), "warmup_epochs": _int_in(0, 999),
        "optimizer": _one_of(OPTIMIZERS), "ema": _number_in(0, 1, high_open=True),
        "label_smoothing": _number_in(0, 1, high_open=True), "gpus": _process_count,
    },
    "evaluate": {"batch_size": BATCH, "tta": _one_of(TTA), "pair_eyes": _boolean},
    "external": {"source": _external_sources, "split": _one_of(EXTERNAL_SPLITS)},
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
    "batch_size": BATCH, "lr": _number_in(0, 10, low_open=True),
    "imagenet_weights": _text, "weights_file": _text,
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


# why compute.compile is refused on the CPU (bench/levers.py measures it)
CPU_COMPILE = ("torch.compile is for the CUDA training step; on the CPU it measured slower "
               "than eager per step, after a compilation of about a minute in every train "
               "stage (bench/levers.py, docs/performance.md): set compute.compile: false")

MIN_BATCHNORM_IMAGES = 2  # of every batch: BatchNorm in train mode needs 2 or more


def _process_problems(train: dict, archs: dict, compute: dict) -> list[str]:
    """What train.gpus asks of the other keys: 2 images of every batch per process, and
    CUDA devices for ``all``. (How many devices a machine has is the train stage's check,
    on the machine that trains.)"""
    gpus, problems = train.get("gpus"), []
    if compute.get("compile") is True and compute.get("device") == "cpu":
        problems.append(f"compute.compile = true with compute.device = 'cpu': {CPU_COMPILE}")
    if gpus == "all" and compute.get("device") == "cpu":
        problems.append("train.gpus = 'all' needs CUDA devices, but compute.device = 'cpu': "
                        "give a number of CPU processes")
    if compute.get("compile") is True and (gpus == "all" or (_is_int(gpus) and gpus > 1)):
        problems.append(f"compute.compile = true with train.gpus = {gpus!r}: the compiled "
                        "DistributedDataParallel model breaks its graph at every "
                        "SyncBatchNorm layer (open PyTorch issues), so compiling takes far "
                        "longer and may fail; not measured on several GPUs yet: set "
                        "compute.compile: false, or train.gpus: 1")
    processes = gpus if _is_int(gpus) else 1  # "all": at least one device
    for arch, section in archs.items():
        batch = section.get("batch_size")
        if _is_int(batch) and 1 <= batch < MIN_BATCHNORM_IMAGES * processes:  # 0: said above
            problems.append(f"train.{arch}.batch_size = {batch}: must be at least "
                            f"{MIN_BATCHNORM_IMAGES * processes} for {processes} "
                            f"process(es) (train.gpus): BatchNorm needs "
                            f"{MIN_BATCHNORM_IMAGES} images of every batch per process")
    return problems


def _recipe_problems(train: dict) -> list[str]:
    """What the recipe keys ask of each other (each key's own range is checked above)."""
    problems = []
    smoothing, warmup = train.get("label_smoothing"), train.get("warmup_epochs")
    if train.get("head") == "regression" and _is_number(smoothing) and smoothing > 0:
        problems.append(f"train.label_smoothing = {smoothing!r} with train.head = "
                        "'regression': label smoothing is for the classification head's "
                        "cross-entropy; set it to 0")
    if train.get("optimizer") == "nesterov" and train.get("momentum") == 0:
        problems.append("train.optimizer = 'nesterov' with train.momentum = 0: Nesterov "
                        "momentum needs a momentum > 0 (e.g. 0.9)")
    phases = [train.get(key) for key in ("epochs_feature_extraction", "epochs_fine_tuning")]
    if _is_int(warmup) and warmup > 0 and all(_is_int(p) and p >= 1 for p in phases):
        shortest = min(phases)
        if warmup >= shortest:
            problems.append(f"train.warmup_epochs = {warmup}: must be shorter than each "
                            f"training phase (the shortest, of the pretrained runs, has "
                            f"{shortest} epoch(s): train.epochs_feature_extraction and "
                            "train.epochs_fine_tuning)")
    return problems


# sources that hold the same photos in two layouts: one is never an outside test of the other
SAME_PHOTOS = (("lab", "kaggle"),)  # the lab's course copy of Kaggle's EyePACS photos


def _source_problems(data: dict, evaluate: dict, external: dict) -> list[str]:
    """What a source cannot give: the two eyes of a patient, where its names carry none;
    an outside test, where the external set is the training set itself or another
    layout of its photos (``SAME_PHOTOS``)."""
    problems = []
    if evaluate.get("pair_eyes") is True and data.get("source") in PATIENTS_UNKNOWN:
        problems.append(f"evaluate.pair_eyes = true with data.source = {data['source']!r}: "
                        "its image names carry no patient, so no two eyes can be paired "
                        "(docs/data.md); set evaluate.pair_eyes: false")
    sources = external.get("source")
    if isinstance(sources, list) and data.get("source") in sources:
        problems.append(f"external.source = {sources!r} with data.source = "
                        f"{data['source']!r}: external validation tests on a set the model "
                        "was not trained on; name another source, or [] for none")
    for same in SAME_PHOTOS:
        if isinstance(sources, list) and data.get("source") in same and \
                any(s in same and s != data["source"] for s in sources):
            problems.append(f"external.source = {sources!r} with data.source = "
                            f"{data['source']!r}: {' and '.join(same)} are two "
                            "layouts of the same EyePACS photos, so most of the 'external' "
                            "images would be photos the model trained on; name another "
                            "source, or [] for none")
    return problems


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
    for arch, section in archs.items():
        name = section.get("imagenet_weights")
        if isinstance(name, str) and name not in WEIGHT_NAMES[arch]:
            errors.append(f"train.{arch}.imagenet_weights = {name!r}: torchvision has no such "
                          f"weights for {arch}; choose {' or '.join(WEIGHT_NAMES[arch])}")
    errors += _process_problems(sections["train"], archs, sections["compute"])
    errors += _recipe_problems(sections["train"])
    errors += _source_problems(sections["data"], sections["evaluate"], sections["external"])
    if errors:
        raise ParamsError(f"{source} has {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    train = {k: v for k, v in sections["train"].items() if k not in ARCHS}
    return Params(
        data=DataParams(**sections["data"]),
        synthesize=SynthesizeParams(**sections["synthesize"]),
        compute=ComputeParams(**sections["compute"]),
        train=TrainParams(**train, **{a: ArchParams(**archs[a]) for a in ARCHS}),
        evaluate=EvaluateParams(**sections["evaluate"]),
        external=ExternalParams(tuple(sections["external"]["source"]),
                                sections["external"]["split"]),
    )


def read_params_file(path: str | Path = "params.yaml") -> Any:
    """The raw content of ``path`` as DVC sees it (ruamel.yaml's safe loader, YAML 1.2)."""
    from ruamel.yaml import YAML  # only here: code that never reads params.yaml (the GPU
    from ruamel.yaml.error import YAMLError  # check, bench/gpu.py) runs without it

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the project root)")
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from None


# What each stage reads, exactly as its ``params:`` list in dvc.yaml says (a test
# holds the two together); ``{arch}`` stands for the run's architecture.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "check-params": (),  # reads the whole file as a file dep, to validate it
    "synthesize": ("synthesize", "compute.image_workers"),
    "downscale-images": ("data", "compute.image_workers"),
    "compute-stats": ("data.image_size", "data.preprocess"),
    "train": ("train.head", "train.regression_loss", "train.epochs_feature_extraction",
              "train.epochs_fine_tuning", "train.weighted_loss", "train.momentum", "train.weight_decay",
              "train.validation_fraction", "train.run_seed", "train.augment",
              "train.lr_schedule", "train.warmup_epochs", "train.optimizer", "train.ema",
              "train.label_smoothing", "train.gpus", "train.{arch}",
              "data.split_seed", "compute.device", "compute.loader_workers",
              "compute.compile", "compute.deterministic"),
    "evaluate": ("evaluate.batch_size", "evaluate.tta", "evaluate.pair_eyes",
                 "compute.device", "compute.loader_workers"),
    "downscale-external": ("external.split", "data.image_size", "data.preprocess",
                           "data.on_bad_input", "compute.image_workers"),
    "evaluate-external": ("external.split", "data.source", "evaluate.batch_size",
                          "evaluate.tta", "evaluate.pair_eyes", "compute.device",
                          "compute.loader_workers"),
    "compare": ("external",),
    "plots-page": (),
}


def declared_keys(stage: str, arch: str | None = None) -> tuple[str, ...]:
    """The params keys ``stage`` declares (for a train stage, of architecture ``arch``)."""
    return tuple(key.format(arch=arch) for key in STAGE_PARAMS[stage])


class UndeclaredParam(LookupError):
    """A stage read a key that its dvc.yaml entry does not list: a bug in retino, since
    a change of that key would not rerun the stage."""


def _covers(declared: tuple[str, ...], key: str) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


class DeclaredParams:
    """A read-only view of (a section of) ``Params`` that lets a stage read only the keys
    it declares; reading any other raises ``UndeclaredParam``."""

    def __init__(self, value: Any, declared: tuple[str, ...], stage: str, prefix: str = ""):
        self._value, self._declared, self._stage, self._prefix = value, declared, stage, prefix

    def __getattr__(self, name: str) -> Any:
        key = f"{self._prefix}.{name}" if self._prefix else name
        if _covers(self._declared, key):
            return getattr(self._value, name)
        if any(d.startswith(key + ".") for d in self._declared):
            return DeclaredParams(getattr(self._value, name), self._declared, self._stage, key)
        raise UndeclaredParam(f"stage {self._stage} reads {key}, which its params in dvc.yaml "
                              f"do not list ({', '.join(self._declared) or 'none'})")

    def recorded(self) -> dict[str, Any]:
        """The declared keys and their values, by dotted key: what the stage's outputs
        record of the settings that made them."""
        return {key: value for key, value in flat_values(self._value).items()
                if _covers(self._declared, key)}


def flat_values(params: Params) -> dict[str, Any]:
    """``{"train.resnet18.lr": 0.001, ...}``: every leaf of ``params`` by its dotted key."""
    def walk(prefix: str, value: Any) -> dict[str, Any]:
        if dataclasses.is_dataclass(value):
            return {k: v for field in dataclasses.fields(value)
                    for k, v in walk(f"{prefix}.{field.name}".lstrip("."),
                                     getattr(value, field.name)).items()}
        return {prefix: value}
    return walk("", params)


def load_params(path: str | Path = "params.yaml", stage: str | None = None,
                arch: str | None = None) -> Any:
    """Read and validate all of ``params.yaml``. With ``stage``, return that stage's
    ``DeclaredParams`` view; without, the whole ``Params`` (tests, benchmarks)."""
    params = parse_params(read_params_file(path), source=str(path))
    if stage is None:
        return params
    return DeclaredParams(params, declared_keys(stage, arch), stage)


def run_name(arch: str, init: str) -> str:
    """The one name of a run everywhere: stage, model, metrics and plot files."""
    return f"{check_arch(arch)}-{check_init(init)}"


def run_code(arch: str, init: str) -> str:
    """The run's compact code for table columns: ``resnet18-pretrained`` -> ``r18p``."""
    return f"r{check_arch(arch).removeprefix('resnet')}{check_init(init)[0]}"
