"""docs/configuration.md has a table row for every configuration key, and no row for a key that does not exist;
each row's default is the shipped default.toml's."""

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
    assert {"note_tokens", "mi_hidden", "mi_logvar_bound", "d", "mi_weight"} <= keys["train"]  # FusionConfig's too
    assert len(keys["notes"]) == len(load_config().notes.model_dump())


@pytest.mark.parametrize("section, key", [("train", "mi_weight"), ("compare.grid", "modality_dropout"),
                                          ("synth", "note_fraction"), ("train", "note_tokens")])
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


def documented_defaults(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, default cell)`` of every table row under a ``[section]`` heading whose second
    column is ``default`` (cells split at ``|`` but not at the ``\\|`` a regular expression needs)."""
    rows, section, default_column = [], None, False
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.search(r"`\[([a-z_.]+)\]`", line)
            section, default_column = (m.group(1) if m else None), False
        elif section and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells[:2] == ["key", "default"]:
                default_column = True
            elif default_column:
                rows += [(section, key, cells[1]) for key in re.findall(r"`([a-z_0-9]+)`", cells[0])]
    return rows


def test_every_documented_default_is_the_shipped_one():
    """A default written as a TOML value (`` `32` ``, `` `"auto"` ``, `` `[0.7, 0.1, 0.2]` ``) must be the
    shipped one; words instead of a value only for a table or a multi-line string."""
    shipped = tomllib.loads(default_config_text())
    rows = [(s, k, cell) for s, k, cell in documented_defaults(DOC.read_text()) if k in config_keys().get(s, ())]
    assert len(rows) == sum(len(keys) for keys in config_keys().values())  # each key once
    wrong = []
    for section, key, cell in rows:
        value = shipped
        for name in (*section.split("."), key):
            value = value[name]
        m = re.fullmatch(r"`([^`]*)`", cell)
        if m:
            documented = tomllib.loads(f"v = {m.group(1)}")["v"]
            if documented != value or (type(documented) is bool) != (type(value) is bool):
                wrong.append(f"{section}.{key}: {cell} (default.toml: {value!r})")
        elif not (isinstance(value, dict) or "\n" in str(value)):
            wrong.append(f"{section}.{key}: {cell!r} is no TOML value (default.toml: {value!r})")
    assert not wrong, "docs/configuration.md defaults differ from default.toml:\n" + "\n".join(wrong)
