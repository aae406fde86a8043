"""The whole pipeline on a GPU machine that has no dvc: dvc.yaml's commands, in order.

    PYTHONPATH=. python bench/gpu_pipeline.py --quick --out bench/gpu_pipeline.json
    PYTHONPATH=. python bench/gpu_pipeline.py --params compute.device=cuda data.image_size=512

For a lent GPU machine with torch but no dvc (and no network): it reads ``dvc.yaml``,
expands each ``matrix`` and ``foreach`` stage into its runs as DVC does, substitutes ``${...}`` from
``params.yaml`` and runs every command in the file's order (which is the stage
graph's order), stopping at the first failure. It does not replace ``dvc repro``:
nothing is cached or skipped, and ``dvc.lock`` is not written.

Observable however it ends: ``--out`` is rewritten before each stage starts (naming
the stage running) and after it ends (its seconds, exit status and last output
lines), so a run cut short by its time limit still says how far it got and where the
time went. ``--params KEY=VALUE ...`` override params.yaml for this run (values read
as YAML, as ``dvc exp run -S`` does); params.yaml is put back afterwards.
``--quick`` adds ``QUICK`` (a small set and short schedule on CUDA, meant to fit in
about 4 minutes on one GPU; later ``--params`` win).
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
LAST_LINES = 15  # of each stage's output, kept in the JSON
QUICK = ("compute.device=cuda", "synthesize.patients=300", "data.image_size=128",
         "train.epochs_feature_extraction=1", "train.epochs_fine_tuning=2",
         "train.resnet18.batch_size=32", "train.resnet50.batch_size=32")


def lookup(context: dict, dotted: str) -> object:
    value = context
    for key in dotted.split("."):
        value = value[key]
    return value


def substitute(text: str, context: dict) -> str:
    return PLACEHOLDER.sub(lambda match: str(lookup(context, match.group(1).strip())), text)


def listed(value: object, params: dict) -> list:
    """A ``matrix`` or ``foreach`` list, given inline or as ``${key}`` of params (the
    external stages' ``${external.source}``, empty by default)."""
    if isinstance(value, str):
        return list(lookup(params, PLACEHOLDER.fullmatch(value.strip()).group(1).strip()))
    return list(value)


def stage_runs(dvc_yaml: dict, params: dict) -> list[tuple[str, str]]:
    """(name, command) of every stage run, ``matrix`` stages expanded as ``name@a-b`` and
    ``foreach`` stages as ``name@item``."""
    runs = []
    for name, stage in dvc_yaml["stages"].items():
        if "foreach" in stage:
            runs += [(f"{name}@{item}", substitute(stage["do"]["cmd"], {**params, "item": item}))
                     for item in listed(stage["foreach"], params)]
            continue
        matrix = stage.get("matrix")
        if not matrix:
            runs.append((name, substitute(stage["cmd"], params)))
            continue
        for values in itertools.product(*(listed(v, params) for v in matrix.values())):
            item = dict(zip(matrix, values))
            runs.append((f"{name}@{'-'.join(map(str, values))}",
                         substitute(stage["cmd"], {**params, "item": item})))
    return runs


def with_overrides(params: dict, overrides: list[str]) -> dict:
    """``params`` with each ``KEY=VALUE`` applied (an unknown key is an error, as with
    ``dvc exp run -S``)."""
    changed = copy.deepcopy(params)
    for override in overrides:
        key, separator, raw = override.partition("=")
        *sections, leaf = key.split(".")
        section = changed
        try:
            for name in sections:
                section = section[name]
            known = separator and leaf in section
        except (KeyError, TypeError):
            known = False
        if not known:
            raise SystemExit(f"--params {override!r}: give KEY=VALUE with a key of "
                             "params.yaml, e.g. compute.device=cuda")
        section[leaf] = yaml_value(raw)
    return changed


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def yaml_value(raw: str) -> object:
    """``raw`` as DVC and the stages read it (YAML 1.2): PyYAML's YAML 1.1 leaves
    ``1e-3`` a string, which the stages would refuse."""
    value = yaml.safe_load(raw)
    return float(raw) if isinstance(value, str) and NUMBER.fullmatch(raw) else value


def run_stage(command: str, cwd: Path) -> tuple[int, list[str]]:
    """Run ``command``, echoing its output; (exit status, its last lines)."""
    process = subprocess.Popen(command, shell=True, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace")
    last: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
    for line in process.stdout:
        print(line, end="", flush=True)
        last.append(line.rstrip("\n"))
    return process.wait(), list(last)


def write_json(out: Path, document: dict) -> None:
    """``document`` to ``out`` through a temporary file: a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(out)


def write_report(out: Path, done: list[dict], running: str | None, overrides: list[str]) -> None:
    write_json(out, {"overrides": overrides, "running": running, "stages": done})


def run_all(runs: list[tuple[str, str]], out: Path, overrides: list[str] = (),
            cwd: Path = ROOT) -> list[dict]:
    """Every run in order, stopping at the first failure; ``out`` rewritten before and
    after each stage."""
    done: list[dict] = []
    for name, command in runs:
        print(f"== {name}: {command}", flush=True)
        write_report(out, done, name, list(overrides))
        started = time.perf_counter()
        status, last = run_stage(command, cwd)
        done.append({"stage": name, "seconds": round(time.perf_counter() - started, 1),
                     "returncode": status, "last_lines": last})
        write_report(out, done, None, list(overrides))
        if status != 0:
            break
    return done


def require_ruamel() -> None:
    """The stages read params.yaml as DVC does, with ruamel.yaml (installed with dvc, so
    absent where dvc is): stop before any stage, saying how to bring it along."""
    try:
        import ruamel.yaml  # noqa: F401
    except ImportError:
        raise SystemExit("the stages read params.yaml with ruamel.yaml, which this python "
                         "lacks: copy the ruamel folder from the site-packages of a python "
                         "that has dvc (`pip show ruamel.yaml` prints where) into .gpu-deps/ "
                         "in this repository and run with PYTHONPATH=.:.gpu-deps") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/gpu_pipeline.json"))
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params.yaml overrides for this run")
    parser.add_argument("--quick", action="store_true",
                        help="a small set and short schedule on CUDA: " + " ".join(QUICK))
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="run only these stage runs (names as dvc stage list prints "
                        "them), in dvc.yaml's order; default: all")
    args = parser.parse_args()
    require_ruamel()
    overrides = [*(QUICK if args.quick else ()), *args.params]
    params_file = ROOT / "params.yaml"
    original = params_file.read_text()
    params = with_overrides(yaml.safe_load(original), overrides)
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        runs = stage_runs(dvc_yaml, params)
        if args.stages:
            unknown = sorted(set(args.stages) - {name for name, _ in runs})
            if unknown:
                raise SystemExit(f"--stages {unknown[0]}: no such stage run; dvc.yaml has "
                                 + ", ".join(name for name, _ in runs))
            runs = [run for run in runs if run[0] in args.stages]
        done = run_all(runs, args.out, overrides)
    finally:
        params_file.write_text(original)
    failed = [run for run in done if run["returncode"] != 0]
    sys.exit(f"{failed[0]['stage']} failed" if failed else 0)


if __name__ == "__main__":
    main()
