"""docs/design.md names every module of the package, with the layer tests/test_layers.py gives it."""

from __future__ import annotations

import re

from tests.test_layers import LAYERS, PACKAGE

DESIGN = PACKAGE.parent / "docs" / "design.md"
ROW = re.compile(r"^\| `([\w/]+\.py)` \| (\d) \| (.+) \|$", re.MULTILINE)


def _modules() -> dict[str, int]:
    """Every module with code (empty ``__init__.py`` files are not modules worth a row) and its layer."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and not path.read_text("utf-8").strip():
            continue
        name = path.relative_to(PACKAGE).as_posix()
        found[name] = LAYERS.get(name.split("/")[0], 0) if "/" in name else 0
    return found


def _rows() -> dict[str, tuple[int, str]]:
    return {m.group(1): (int(m.group(2)), m.group(3).strip()) for m in ROW.finditer(DESIGN.read_text("utf-8"))}


def test_every_module_has_a_row_with_its_job():
    rows = _rows()
    missing = sorted(set(_modules()) - set(rows))
    assert not missing, (
        f"docs/design.md has no row for {', '.join(missing)}: add `| `module` | layer | one job |` to its module table"
    )
    assert all(job for _, job in rows.values())


def test_no_row_names_a_module_that_is_gone():
    stale = sorted(set(_rows()) - set(_modules()))
    assert not stale, f"docs/design.md names modules that do not exist: {', '.join(stale)}"


def test_each_row_gives_the_layer_test_layers_checks():
    modules = _modules()
    wrong = [
        f"{m}: doc says {layer}, tests/test_layers.py says {modules[m]}"
        for m, (layer, _) in _rows().items()
        if m in modules and layer != modules[m]
    ]
    assert not wrong, "; ".join(wrong)


def test_the_layer_table_lists_the_packages_of_test_layers():
    text = DESIGN.read_text("utf-8")
    for package, layer in LAYERS.items():
        assert re.search(rf"^\| {layer} \|[^\n]*`{package}/`", text, re.MULTILINE), (
            f"{package}/ is not in layer {layer}"
        )


def test_no_speed_figures_in_docstrings():
    """Figures go stale in docstrings; they live in benchmarks/RESULTS.md."""
    import ast

    figure = re.compile(
        r"\d\s*x faster|times faster|microsecond|of the time of|\d\s*(?:items|requests|ops)/s\b"
        r"|\d per second"
    )
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node) or ""
                found += [f"{path.relative_to(PACKAGE)}: {m.group(0)!r}" for m in figure.finditer(doc)]
    assert not found, found
