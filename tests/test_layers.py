"""The package's layering, read from the source: a lower layer never imports a higher one (lazy imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "airflow_agentchat"
# Higher number, higher layer. Top-level modules (models, streaming, exceptions, request_body, ...) are 0.
LAYERS = {"hooks": 1, "batch": 2, "triggers": 2, "plugins": 2, "operators": 3, "decorators": 3}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("airflow_agentchat.")}


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("airflow_agentchat", *path.relative_to(PACKAGE).with_suffix("").parts))
        upward += [f"{module} imports {name}" for name in _imports(path) if _layer(name) > _layer(module)]
    assert upward == []
