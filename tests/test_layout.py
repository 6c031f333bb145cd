"""Dependencies point one way (README, "Layout of the code"): each unit imports only units below it.

Every sub-package and top-level module of ``medfuse`` is a unit, and every import form counts:
``from medfuse.x import y``, ``from medfuse import x``, ``import medfuse.x``, and imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medfuse

ROOT = Path(medfuse.__file__).parent
# top to bottom; units on one line are peers and never import each other
LAYERS = [
    ["cli"], ["console"], ["demo"], ["runs"], ["serving"], ["evaluation"], ["training"],
    ["labs", "notes", "fusion"], ["data"],
    ["trainer"], ["checkpoint"], ["distributed"], ["torch_utils", "progress", "atomic", "config"],
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def units() -> set[str]:
    return {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}


def imported_units(node: ast.AST) -> list[str]:
    """The medfuse units an import statement names, in every form."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("medfuse.")]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "medfuse":  # names of the package itself (``__version__``) are no unit
            return [a.name for a in node.names if a.name in RANK]
        if node.module.startswith("medfuse."):
            return [node.module.split(".")[1]]
    return []


def imports_between_units() -> set[tuple[str, str]]:
    """``(importer, imported)`` unit pairs over the whole package."""
    edges = set()
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        unit = parts[0]
        if unit == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            edges |= {(unit, target) for target in imported_units(node) if target != unit}
    return edges


def test_every_unit_has_a_layer():
    assert units() == set(RANK), f"units without a layer or layers without a unit: {units() ^ set(RANK)}"


def test_no_unit_imports_a_unit_above_it_or_beside_it():
    wrong = sorted((a, b) for a, b in imports_between_units() if RANK[b] <= RANK[a])
    assert not wrong, f"imports against the layering {LAYERS}: {wrong}"


def test_every_import_form_is_seen():
    forms = {"from medfuse.data import x": ["data"], "from medfuse import distributed, config": ["distributed", "config"],
             "import medfuse.runs.layout": ["runs"], "import os": [], "from . import x": []}
    for code, expected in forms.items():
        assert imported_units(ast.parse(code).body[0]) == expected, code


def test_serving_depends_on_the_bundle_format_only():
    edges = imports_between_units()
    assert not {b for a, b in edges if a == "serving"} & {"runs", "demo", "cli", "console"}
