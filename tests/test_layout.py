"""Dependencies point one way: CLI -> demo -> serving -> pipeline -> training -> labs/notes/fusion -> data."""

from __future__ import annotations

import ast
from pathlib import Path

import medfuse

ROOT = Path(medfuse.__file__).parent
LAYERS = ["cli", "demo", "serving", "pipeline", "training", "labs", "notes", "fusion", "data"]


def imports_between_units() -> set[tuple[str, str]]:
    """``(importer, imported)`` sub-package or top-level module pairs, function-local imports included."""
    edges = set()
    for path in ROOT.rglob("*.py"):
        unit = path.relative_to(ROOT).with_suffix("").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medfuse."):
                target = node.module.split(".")[1]
                if target != unit:
                    edges.add((unit, target))
    return edges


def test_no_unit_imports_a_unit_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted((a, b) for a, b in imports_between_units() if a in rank and b in rank and rank[b] < rank[a])
    assert not upward, f"imports against the layering {LAYERS}: {upward}"


def test_stages_never_import_serving_or_the_pipeline():
    edges = imports_between_units()
    for stage in ("data", "labs", "notes", "fusion", "training"):
        assert not {b for a, b in edges if a == stage} & {"serving", "pipeline", "demo", "cli"}, stage
