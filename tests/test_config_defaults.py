"""One definition per default: the shipped default.toml is the only place a default value is written.

The configuration classes declare types and limits only (no field has a Python default); a key not given
takes its value from the section's table in default.toml. These tests check that the file and the classes
agree (every section, every key, same values) and that every key can be set from a user's TOML file.
"""

from __future__ import annotations

import json
import tomllib
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from medfuse import config as config_module
from medfuse.config import (
    FusionConfig,
    MedfuseConfig,
    NotesConfig,
    TrainConfig,
    default_config_text,
    load_config,
)


def sections(model: type[BaseModel] = MedfuseConfig, path: tuple[str, ...] = ()):
    """``(path, class)`` of every section class under ``model`` (``("prepare", "meds")`` included)."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield (*path, name), field.annotation
            yield from sections(field.annotation, (*path, name))


def table(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for name in path:
        data = data[name]
    return data


SECTIONS = list(sections())
SHIPPED = tomllib.loads(default_config_text())
DEFAULTS = MedfuseConfig().model_dump(mode="json")


def test_the_walk_sees_every_section():
    assert {".".join(p) for p, _ in SECTIONS} == {"synth", "prepare", "prepare.meds", "labs", "notes", "train",
                                                  "evaluate", "compare", "serve"}


def test_default_toml_is_what_the_classes_build():
    assert SHIPPED == DEFAULTS  # every section, every key, same values (24 == 24.0: TOML writes floats as it likes)
    assert load_config() == MedfuseConfig()


@pytest.mark.parametrize("path, cls", SECTIONS, ids=[".".join(p) for p, _ in SECTIONS])
def test_no_default_is_written_in_python(path, cls):
    """A field with a Python default would be a second definition that could drift from the TOML."""
    with_default = [name for name, field in cls.model_fields.items() if not field.is_required()]
    assert not with_default, f"{cls.__name__}: defaults belong in default.toml only: {with_default}"
    assert cls.toml_table == path
    assert cls().model_dump(mode="json") == table(SHIPPED, path)


def test_fusion_config_is_the_architecture_part_of_train():
    fusion = set(FusionConfig.model_fields)
    assert issubclass(TrainConfig, FusionConfig) and fusion < set(TrainConfig.model_fields)
    assert {"note_tokens", "mi_hidden", "mi_logvar_bound", "d", "mi_weight", "use_kronecker"} <= fusion
    assert not {"epochs", "lr", "labs_encoder", "seed", "device"} & fusion
    assert TrainConfig().fusion == FusionConfig()
    assert FusionConfig().model_dump(mode="json") == {k: v for k, v in SHIPPED["train"].items() if k in fusion}
    custom = TrainConfig(note_tokens=2, mi_hidden=8, mi_logvar_bound=2.0, d=16, epochs=3)
    assert type(custom.fusion) is FusionConfig
    assert custom.fusion == FusionConfig(note_tokens=2, mi_hidden=8, mi_logvar_bound=2.0, d=16)


def test_a_saved_runs_train_section_still_loads():
    """``model_config.json`` holds a TrainConfig dump; one written before note_tokens, mi_hidden and
    mi_logvar_bound were [train] keys lacks them and gets the (unchanged) defaults the model was built with."""
    saved = json.loads(json.dumps(TrainConfig(d=16, heads=2, epochs=3).model_dump(mode="json")))
    assert TrainConfig.model_validate(saved) == TrainConfig(d=16, heads=2, epochs=3)
    older = {k: v for k, v in saved.items() if k not in ("note_tokens", "mi_hidden", "mi_logvar_bound")}
    cfg = TrainConfig.model_validate(older)
    assert (cfg.d, cfg.note_tokens, cfg.mi_hidden, cfg.mi_logvar_bound) == (16, 4, 64, 1.0)


def test_the_default_note_template_is_the_toml_one():
    from medfuse.notes.text import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE == NotesConfig().template == SHIPPED["notes"]["template"]
    assert DEFAULT_TEMPLATE.startswith("Chief complaint: {chief_complaint}\n")


def test_a_key_missing_from_default_toml_is_refused(monkeypatch):
    shipped = tomllib.loads(default_config_text())
    del shipped["train"]["note_tokens"]
    monkeypatch.setattr(config_module, "_shipped_defaults", lambda: shipped)
    with pytest.raises(ValueError, match="note_tokens"):
        TrainConfig()
    assert TrainConfig(note_tokens=3).note_tokens == 3


# ---------------------------------------------------------------------------------------------------------
# every key can be set from a user's TOML file


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def candidates(annotation: Any, default: Any) -> list[Any]:
    """Values of the key's type other than its default, most of them valid (the first one that loads is used)."""
    if typing.get_origin(annotation) is Literal:
        return [v for v in typing.get_args(annotation) if v != default]
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default * 2, default + 8, 1]
    if isinstance(default, float):
        return [default / 2, default + 0.5, default * 2, 0.25, 1.0]
    if isinstance(default, str):
        return [default + "x"]
    if isinstance(default, dict):
        first = next(iter(default))
        return [{first: default[first][:1]}, {}]
    if isinstance(default, list):
        if typing.get_origin(annotation) is tuple:
            return [default[::-1]]
        return [default[:-1], default + default[:1]] if default else [["x"], [1]]
    raise TypeError(f"no candidate values for {annotation!r} = {default!r}")


KEYS = [(path, key) for path, cls in SECTIONS for key, field in cls.model_fields.items()
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))]


def test_every_key_is_tested():
    assert len(KEYS) == sum(len(table(DEFAULTS, p)) for p, _ in SECTIONS) - 1  # prepare.meds is a section
    assert (("train",), "note_tokens") in KEYS and (("prepare",), "meds") not in KEYS
    assert (("prepare", "meds"), "sex_code") in KEYS and (("compare",), "grid") in KEYS


@pytest.mark.parametrize("path, key", KEYS, ids=[".".join((*p, k)) for p, k in KEYS])
def test_every_key_can_be_set_from_toml(tmp_path, path, key):
    cls = dict(SECTIONS)[path]
    default = table(DEFAULTS, path)[key]
    tried = []
    for value in [v for v in candidates(cls.model_fields[key].annotation, default) if v != default]:
        f = tmp_path / "user.toml"
        f.write_text(f"[{'.'.join(path)}]\n{key} = {toml_value(value)}\n")
        try:
            cfg = load_config(f)
        except config_module.ConfigError as e:
            tried.append(f"{value!r}: {e}")
            continue
        got = table(cfg.model_dump(mode="json"), path)
        assert got[key] == json.loads(json.dumps(value))
        assert {k: v for k, v in got.items() if k != key} == {k: v for k, v in table(DEFAULTS, path).items()
                                                             if k != key}
        return
    pytest.fail(f"no valid non-default value for {'.'.join((*path, key))}: {tried}")
