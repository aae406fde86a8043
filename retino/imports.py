"""Which files of this project a script runs: its ``retino`` imports, followed
transitively, read with ``ast`` (nothing is imported or executed).

The dependency test checks every stage's ``deps`` in dvc.yaml against this, and
the train stage's resume fingerprint hashes the same files, so that editing code
that shapes a result can neither leave a stale output behind a green ``dvc repro``
nor be mixed into a resumed run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "retino"


def module_file(root: Path, module: str) -> Path | None:
    """``retino.data.stats`` -> ``<root>/retino/data/stats.py`` (or a package's
    ``__init__.py``); None when it is not a file of this project."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names a file imports, including ``from pkg import submodule``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    """``retino.data.stats`` -> ``retino``, ``retino.data``, ``retino.data.stats``:
    importing a module runs every package ``__init__`` above it."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def project_imports(script: Path, root: Path) -> list[Path]:
    """Every ``retino`` file that running ``script`` imports, directly or indirectly,
    sorted; paths are under ``root`` (the project root)."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        path = pending.pop()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported_modules(tree):
            for module in _with_parents(name):
                found = module_file(root, module)
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return sorted(seen)
