"""dvc.yaml lists, for every stage, exactly the retino files its script imports.

A change to a file that shapes a result must rerun the stage (a missing dep leaves a
stale output behind a green ``dvc repro``), and a change to any other file must not
(an extra dep reruns a train stage for nothing). Imports are read with ``ast``.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from retino.imports import project_imports
from retino.params import STAGE_PARAMS, UndeclaredParam, declared_keys, load_params
from tests.conftest import ROOT

# Files a stage may import without listing them, because they cannot change any
# result. Only names, each with its reason.
EXEMPT = {
    "retino/progress.py": "progress bars and tables: what is printed, never what is written",
    "retino/stage.py": "command-line parsing, user errors printed, Ctrl-C honoured",
    "retino/errors.py": "exception classes; their messages are not results",
    "retino/__init__.py": "package docstring only (test_exempt_packages_hold_no_code)",
    "retino/data/__init__.py": "package docstring only",
    "retino/train/__init__.py": "package docstring only",
    "retino/report/__init__.py": "package docstring only",
}


def stage_body(stage: dict) -> dict:
    """A stage's definition: its own, or the ``do`` of a ``foreach`` stage."""
    return stage.get("do", stage)


def stage_script(stage: dict) -> str:
    words = stage_body(stage)["cmd"].split()
    return words[words.index("python") + 1]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def dependency_problems(dvc_yaml: dict, root: Path = ROOT) -> list[str]:
    """Every way the stages' retino deps differ from what their scripts import."""
    problems = []
    for name, stage in dvc_yaml["stages"].items():
        script = stage_script(stage)
        deps = [d for d in stage_body(stage).get("deps", []) if isinstance(d, str)]
        imported = {str(p.relative_to(root)) for p in project_imports(root / script, root)}
        needed = imported - set(EXEMPT)
        if script not in deps:
            problems.append(f"stage {name}: its script {script} is not a dep")
        problems += [f"stage {name}: imports {path} but dvc.yaml does not list it (nor a "
                     "folder above it)" for path in sorted(needed) if not covered(path, deps)]
        for dep in (d for d in deps if d.startswith("retino")):
            files = [dep] if dep.endswith(".py") else [
                str(p.relative_to(root)) for p in sorted((root / dep).rglob("*.py"))]
            unused = [f for f in files if f not in needed and not (f in EXEMPT and f != dep)]
            problems += [f"stage {name}: lists {dep}, but its script never imports {f}, so a "
                         "change there would rerun it for nothing" for f in unused]
    return problems


def project_dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_lists_exactly_the_code_it_runs():
    assert dependency_problems(project_dvc_yaml()) == []


def test_a_missing_or_needless_dep_is_named_with_its_stage():
    broken = copy.deepcopy(project_dvc_yaml())
    broken["stages"]["compute-stats"]["deps"].remove("retino/data/splits.py")
    broken["stages"]["train"]["deps"].append("retino/data/synthetic.py")
    assert dependency_problems(broken) == [
        "stage compute-stats: imports retino/data/splits.py but dvc.yaml does not list it "
        "(nor a folder above it)",
        "stage train: lists retino/data/synthetic.py, but its script never imports "
        "retino/data/synthetic.py, so a change there would rerun it for nothing"]


def test_exempt_packages_hold_no_code():
    for path in (p for p in EXEMPT if p.endswith("__init__.py")):
        body = ast.parse((ROOT / path).read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{path} holds code"


def test_stage_scripts_import_only_their_step_and_the_shared_basics():
    steps = {"check_params": "data", "synthesize": "data", "downscale_images": "data",
             "compute_stats": "data", "downscale_external": "data", "train": "train",
             "evaluate": "report", "evaluate_external": "report", "compare": "report",
             "plots_page": "report"}
    for script in sorted((ROOT / "stages").glob("*.py")):
        step = steps[script.stem]
        tree = ast.parse(script.read_text())
        modules = {node.module for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module
                   and node.module.startswith("retino.")}
        foreign = {m for m in modules if m.count(".") > 1 and m.split(".")[1] != step}
        assert not foreign, f"{script.name} imports from another step: {sorted(foreign)}"


FACES = ("lab.py", "cli.py", "__main__.py", "predict.py")  # user-facing entry points, on top


def _level(module_path: str) -> int:
    """Position in the stage graph: shared basics 0, data 1, train 2, report 3, faces 4."""
    parts = Path(module_path).parts
    if len(parts) > 2:
        return {"data": 1, "train": 2, "report": 3}[parts[1]]
    return 4 if parts[1] in FACES else 0


def test_imports_point_down_the_stage_graph():
    for module in sorted((ROOT / "retino").rglob("*.py")):
        own = str(module.relative_to(ROOT))
        for path in project_imports(module, ROOT):
            imported = str(path.relative_to(ROOT))
            assert _level(imported) <= _level(own) or imported.endswith("__init__.py"), \
                f"{own} imports {imported}, which sits later in the stage graph"


def _declared_in_dvc_yaml(stage: dict) -> list[str]:
    return [key if isinstance(key, str) else next(iter(key))
            for key in stage_body(stage).get("params", [])]


def test_dvc_yaml_declares_exactly_the_params_each_stage_reads():
    """STAGE_PARAMS is what load_params(stage=...) lets a stage read and what its outputs
    record; dvc.yaml must rerun the stage on exactly those keys."""
    stages = project_dvc_yaml()["stages"]
    assert set(stages) == set(STAGE_PARAMS)
    for name, stage in stages.items():
        declared = [key.replace("${item.arch}", "{arch}") for key in _declared_in_dvc_yaml(stage)]
        assert declared == list(STAGE_PARAMS[name]), name


def test_reading_an_undeclared_param_is_a_bug_that_stops_the_stage():
    params = load_params(ROOT / "params.yaml", stage="evaluate")
    assert params.evaluate.batch_size > 0 and params.compute.device in ("auto", "cpu", "cuda")
    with pytest.raises(UndeclaredParam, match="stage evaluate reads train, which its params in dvc.yaml do not list"):
        params.train.weighted_loss
    with pytest.raises(UndeclaredParam, match="reads compute.image_workers"):
        params.compute.image_workers


def test_a_train_stage_records_its_declared_params_and_no_others():
    recorded = load_params(ROOT / "params.yaml", stage="train", arch="resnet50").recorded()
    assert "train.resnet50.lr" in recorded and "data.split_seed" in recorded
    assert not [key for key in recorded if key.startswith(("train.resnet18", "data.source",
                                                           "evaluate", "synthesize"))]
    assert all(any(key == d or key.startswith(d + ".") for d in
                   declared_keys("train", "resnet50")) for key in recorded)
