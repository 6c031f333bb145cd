"""docs/configuration.md has a table row for every configuration key, and no row for a key that does not exist."""

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from medfuse.config import MedfuseConfig, default_config_text, load_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"


def documented_keys(text: str) -> dict[str, set[str]]:
    """``{section: keys}``: the backticked keys in the first cell of each table row under a heading that
    names the section as ``[section]`` (e.g. ``## `[compare.grid]` keys``)."""
    keys: dict[str, set[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.search(r"`\[([a-z_.]+)\]`", line)
            section = m.group(1) if m else None
            if section:
                keys.setdefault(section, set())
        elif section and line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            keys[section].update(re.findall(r"`([a-z_0-9]+)`", first))
    return keys


def config_keys() -> dict[str, set[str]]:
    """Every section of MedfuseConfig and its fields; a dict-valued field (``compare.grid``) is also a
    section whose keys are those of its shipped default."""
    defaults = tomllib.loads(default_config_text())
    out: dict[str, set[str]] = {}

    def walk(model: type[BaseModel], path: str, default: dict) -> None:
        out[path] = set(model.model_fields)
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{path}.{name}" if path else name, default.get(name, {}))
            elif isinstance(default.get(name), dict):
                out[f"{path}.{name}"] = set(default[name])

    walk(MedfuseConfig, "", defaults)
    del out[""]
    return out


def missing_and_unknown(text: str) -> tuple[list[str], list[str]]:
    doc, cfg = documented_keys(text), config_keys()
    missing = [f"{s}.{k}" for s, ks in cfg.items() for k in sorted(ks - doc.get(s, set()))]
    unknown = [f"{s}.{k}" for s, ks in doc.items() if s in cfg for k in sorted(ks - cfg[s])]
    return missing, unknown


def test_every_config_key_has_a_row_in_docs_configuration():
    missing, unknown = missing_and_unknown(DOC.read_text())
    assert not missing, f"docs/configuration.md: no table row for {', '.join(missing)}"
    assert not unknown, f"docs/configuration.md: rows for keys that do not exist: {', '.join(unknown)}"


def test_the_walk_covers_sections_fields_and_the_grid():
    keys = config_keys()
    assert set(keys) == {"synth", "prepare", "prepare.meds", "labs", "notes", "train", "evaluate", "compare",
                         "compare.grid", "serve"}
    assert {"grid", "seeds"} <= keys["compare"] and keys["compare.grid"] == {"dropout", "modality_dropout"}
    assert len(keys["notes"]) == len(load_config().notes.model_dump())


@pytest.mark.parametrize("section, key", [("train", "mi_weight"), ("compare.grid", "modality_dropout"),
                                          ("synth", "note_fraction")])
def test_a_removed_row_is_named(section, key):
    text = DOC.read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"no row for {key}"
    lines, current, kept = text.splitlines(), None, []
    for line in lines:  # drop the key's row under its own section only
        if line.startswith("#"):
            m = re.search(r"`\[([a-z_.]+)\]`", line)
            current = m.group(1) if m else None
        if not (current == section and line.startswith(f"| `{key}` |")):
            kept.append(line)
    before, _ = missing_and_unknown(text)  # rows other work may still owe are not this test's business
    after, _ = missing_and_unknown("\n".join(kept))
    assert set(after) - set(before) == {f"{section}.{key}"}
