"""The whole pipeline on a GPU machine that has no dvc: dvc.yaml's commands, in order.

    PYTHONPATH=. python bench/gpu_pipeline.py --out bench/gpu_pipeline.json

For a lent GPU machine with torch but no dvc (and no network): it reads ``dvc.yaml``,
expands each ``matrix`` stage into its runs as DVC does, substitutes ``${...}`` from
``params.yaml`` and runs every command in the file's order (which is the stage
graph's order), stopping at the first failure. It writes each command's seconds and
exit status to ``--out``. It does not replace ``dvc repro``: nothing is cached or
skipped, and ``dvc.lock`` is not written. Set ``compute.device: cuda`` in params.yaml
first to make sure the stages use the GPU (``auto`` would fall back to nothing: it
picks CUDA when present).
"""

from __future__ import annotations

import argparse
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


def lookup(context: dict, dotted: str) -> object:
    value = context
    for key in dotted.split("."):
        value = value[key]
    return value


def substitute(text: str, context: dict) -> str:
    return PLACEHOLDER.sub(lambda match: str(lookup(context, match.group(1).strip())), text)


def stage_runs(dvc_yaml: dict, params: dict) -> list[tuple[str, str]]:
    """(name, command) of every stage run, ``matrix`` stages expanded as ``name@a-b``."""
    runs = []
    for name, stage in dvc_yaml["stages"].items():
        matrix = stage.get("matrix")
        if not matrix:
            runs.append((name, substitute(stage["cmd"], params)))
            continue
        for values in itertools.product(*matrix.values()):
            item = dict(zip(matrix, values))
            runs.append((f"{name}@{'-'.join(map(str, values))}",
                         substitute(stage["cmd"], {**params, "item": item})))
    return runs


def run_all(runs: list[tuple[str, str]]) -> list[dict]:
    done = []
    for name, command in runs:
        print(f"== {name}: {command}", flush=True)
        started = time.perf_counter()
        status = subprocess.run(command, shell=True, cwd=ROOT).returncode
        done.append({"stage": name, "seconds": round(time.perf_counter() - started, 1),
                     "returncode": status})
        if status != 0:
            break
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/gpu_pipeline.json"))
    args = parser.parse_args()
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    done = run_all(stage_runs(dvc_yaml, params))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"stages": done}, indent=2) + "\n")
    failed = [run for run in done if run["returncode"] != 0]
    sys.exit(f"{failed[0]['stage']} failed" if failed else 0)


if __name__ == "__main__":
    main()
