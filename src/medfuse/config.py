"""Configuration: one TOML format validated by pydantic, with a shipped default.

The shipped ``resources/default.toml`` (linked as ``configs/default.toml``) is read first, a user's
file is merged over it key by key, and CLI options win over both.

That file is the only place a default value is written: the classes below declare each key's type and
constraints, and a key left out when a section is built in Python (``TrainConfig(d=16)``, ``MedfuseConfig()``,
an older run's ``model_config.json``) takes its value from the section's table there (``_Section.toml_table``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Source = Literal["mimic3", "mimic4", "meds"]


def default_config_text() -> str:
    """The shipped default configuration, as TOML text."""
    return resources.files("medfuse.resources").joinpath("default.toml").read_text()


@functools.cache
def _shipped_defaults() -> dict[str, Any]:
    return tomllib.loads(default_config_text())


def shipped_defaults(*table: str) -> dict[str, Any]:
    """A (deep) copy of the shipped default.toml's table ``table`` (``"prepare", "meds"``; none = the whole file)."""
    data = _shipped_defaults()
    for name in table:
        data = data[name]
    return copy.deepcopy(data)


def heads_divide(width: str):
    """A validator of ``heads``: the attention width ``width`` (a field declared before it) must divide by it."""

    def check(cls, v: int, info) -> int:
        d = info.data.get(width)
        if d is not None and d % v:
            raise ValueError(f"{width} ({d}) must be divisible by heads ({v})")
        return v

    return field_validator("heads")(check)


class _Section(BaseModel):
    """A configuration section: its keys' defaults are the shipped default.toml's table ``toml_table``."""

    model_config = ConfigDict(extra="forbid")
    toml_table: ClassVar[tuple[str, ...]]

    @model_validator(mode="before")
    @classmethod
    def _shipped_defaults_for_missing_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # an instance of the class, or not a table at all: pydantic says what is wrong
        defaults = shipped_defaults(*cls.toml_table)
        return {**{k: v for k, v in defaults.items() if k in cls.model_fields}, **data}


class SynthConfig(_Section):
    toml_table = ("synth",)
    format: Source
    admissions: int = Field(ge=10)
    seed: int
    note_fraction: float = Field(ge=0.0, le=1.0)


_MEDS_GROUPS = {  # regex keys of [prepare.meds] and the named groups each must have
    "sex_code": ("sex",), "race_code": ("race",), "diagnosis_codes": ("version", "code"), "lab_code": ("test",),
}


class MedsConfig(_Section):
    """How a MEDS dataset's events map to the raw tables ``prepare`` reads (``[prepare.meds]``; docs/meds.md).

    Every ``*_code`` key is a regular expression matched against an event's ``code`` (search, so anchor it
    with ``^``); an empty one matches nothing. Defaults follow the MIMIC-IV MEDS ETL (MEDS-Extract)."""

    toml_table = ("prepare", "meds")

    admission_id_columns: list[str]
    admission_start_code: str
    admission_end_code: str
    admission_end_column: str
    birth_code: str
    birth_precision: Literal["auto", "year", "exact"]
    sex_code: str
    race_code: str
    race_column: str
    diagnosis_codes: list[str]
    diagnosis_parent_codes: bool
    lab_code: str
    lab_unit_column: str
    unknown_unit: str
    lab_flag_column: str
    lab_ref_low_column: str
    lab_ref_high_column: str
    note_code: str
    use_subject_splits: bool
    train_splits: list[str]
    val_splits: list[str]
    test_splits: list[str]

    @field_validator("admission_start_code", "admission_end_code", "birth_code", "sex_code", "race_code",
                     "diagnosis_codes", "lab_code", "note_code")
    @classmethod
    def _valid_regex(cls, v: str | list[str], info) -> str | list[str]:
        for pattern in [v] if isinstance(v, str) else v:
            try:
                groups = re.compile(pattern).groupindex
            except re.error as e:
                raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
            missing = [g for g in _MEDS_GROUPS.get(info.field_name, ()) if pattern and g not in groups]
            if missing:
                raise ValueError(f"{pattern!r} needs the named group(s) {', '.join(f'(?P<{g}>...)' for g in missing)}")
        return v


class PrepareConfig(_Section):
    toml_table = ("prepare",)
    source: Source
    diseases: str
    seed: int
    split_fractions: tuple[float, float, float]
    lab_min_admission_fraction: float = Field(ge=0.0, le=1.0)
    lab_max_tests: int = Field(ge=1)
    lab_hours_before_admission: float = Field(ge=0.0)
    window_hours: float = Field(ge=0.0)
    notes_dir: str
    memory_limit: str
    temp_directory: str
    threads: int = Field(ge=0)
    meds: MedsConfig

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6 or min(v) <= 0:
            raise ValueError("split_fractions must be three positive numbers summing to 1")
        return v


class LabsConfig(_Section):
    """Masked lab-test modelling (MLTM): the lab embedder and imputer (docs/labs.md)."""

    toml_table = ("labs",)

    aggregates: list[Literal["last", "mean", "min", "max"]] = Field(min_length=1)
    d_model: int = Field(ge=4)
    encoder_layers: int = Field(ge=1)
    decoder_layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    mlp_ratio: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)
    mask_ratio: float = Field(gt=0.0, lt=1.0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_fraction: float = Field(ge=0.0, lt=1.0)
    patience: int = Field(ge=1)
    seed: int
    device: str

    _heads_divide_width = heads_divide("d_model")


class NotesConfig(_Section):
    """Clinical-note embeddings and LoRA fine-tuning (``embed-notes``, ``finetune-notes``; docs/notes.md)."""

    toml_table = ("notes",)

    model: str
    pooling: Literal["auto", "mean", "last"]
    max_length: int = Field(ge=0)
    stride: int = Field(ge=0)
    batch_tokens: int = Field(ge=0)
    batch_size: int = Field(ge=0)
    normalize: bool
    unit: Literal["lines", "text"]
    line_clusters: int = Field(ge=0)
    line_max: bool
    template: str
    cache: bool
    cache_dir: str
    device: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    finetune: bool
    lora_rank: int = Field(ge=1)
    lora_alpha: float = Field(gt=0.0)
    lora_dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str]
    lora_layers: int = Field(ge=0)
    epochs: int = Field(ge=1)
    schedule_epochs: int = Field(ge=0)
    train_batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    head_lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    patience: int = Field(ge=1)
    pos_weight: bool
    max_minutes: float = Field(ge=0.0)
    gradient_checkpointing: Literal["auto", "on", "off"]
    cpu_autocast: Literal["auto", "on", "off"]
    seed: int

    @field_validator("line_max")
    @classmethod
    def _line_vector_not_empty(cls, v: bool, info) -> bool:
        if not v and info.data.get("line_clusters") == 0:
            raise ValueError("line_max = false needs line_clusters > 0 (the note vector would be empty)")
        return v


FusionKind = Literal["medfuse", "concat", "tfn", "notes_only", "labs_only"]


class FusionConfig(_Section):
    """The fusion model's architecture and loss (docs/fusion.md): the ``[train]`` keys that shape the model.

    :class:`TrainConfig` is this plus how the model is trained; ``train.fusion`` is this part alone, the
    one object ``medfuse.fusion.build_model`` reads."""

    toml_table = ("train",)
    kind: FusionKind
    d: int = Field(ge=2)  # common width of every token / pooled feature
    heads: int = Field(ge=1)  # must divide d
    layers: int = Field(ge=1)  # blocks per self-attention stack and in the cross-attention stack
    note_tokens: int = Field(ge=1)  # k: the note vector becomes k tokens (Linear(d_a, k*d) reshaped)
    dense_hidden: int = Field(ge=1)
    dense_layers: int = Field(ge=1)  # residual blocks in the dense fusion head
    dropout: float = Field(ge=0.0, lt=1.0)
    modality_dropout: float = Field(ge=0.0, le=0.5)  # a row never loses both modalities, hence <= 0.5
    mi_weight: float = Field(ge=0.0)  # lambda on the vCLUB bound; 0 = the "no MI loss" ablation
    mi_hidden: int = Field(ge=1)  # hidden width of the vCLUB mean / log-variance MLPs
    mi_logvar_bound: float = Field(gt=0.0)  # logvar = bound * tanh(.)
    mi_sample: bool
    use_kronecker: bool
    skip_connections: bool
    mi_floor: bool
    use_cross_attention: bool

    _heads_divide_width = heads_divide("d")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        """The fusion settings among ``data`` (a ``[train]`` table or a TrainConfig dump: other keys are ignored)."""
        return FusionConfig.model_validate({k: v for k, v in data.items() if k in FusionConfig.model_fields})


class TrainConfig(FusionConfig):
    """The fusion model (the :class:`FusionConfig` keys) and its training (``[train]``; docs/training.md)."""

    labs_encoder: Literal["frozen", "finetune", "scratch"]
    lab_values: bool
    labs_run: str
    notes_run: str
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    estimator_lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_fraction: float = Field(ge=0.0, lt=1.0)
    grad_clip: float = Field(gt=0.0)
    patience: int = Field(ge=1)
    pos_weight: bool
    seed: int
    device: str

    @property
    def fusion(self) -> FusionConfig:
        """The fusion model's own settings: the FusionConfig part of this section."""
        return FusionConfig.from_dict(self.model_dump())


class EvaluateConfig(_Section):
    """``evaluate``: bootstrap resamples, and the rule tuning decision thresholds on validation (docs/evaluation.md)."""

    toml_table = ("evaluate",)

    n_resamples: int = Field(ge=0)
    threshold_rule: Literal["plateau", "f1_max", "shrunk", "half_best_f1", "fixed"]
    threshold_tolerance: float = Field(ge=0.0, le=1.0)
    threshold_shrinkage: float = Field(ge=0.0)
    threshold_min_positives: int = Field(ge=1)


class CompareConfig(_Section):
    """``compare``: baselines, ablations and the lambda sweep (docs/training.md)."""

    toml_table = ("compare",)

    seeds: list[int]
    mi_weights: list[float]
    models: list[str]
    n_resamples: int = Field(ge=0)
    workers: int = Field(ge=0)
    grid: dict[str, list[int | float]]

    @field_validator("grid")
    @classmethod
    def _grid_keys_are_train_settings(cls, grid: dict[str, list[int | float]]) -> dict[str, list[int | float]]:
        for key, values in grid.items():
            if key not in TrainConfig.model_fields or key in ("kind", "seed", "labs_run", "notes_run", "device"):
                raise ValueError(f"compare.grid: {key!r} is not a tunable train setting")
            if not values:
                raise ValueError(f"compare.grid.{key}: give at least one value")
            for v in values:
                TrainConfig(**{key: v})  # each value must be valid for its train setting
        return grid


class ServeConfig(_Section):
    """``medfuse serve``: the HTTP service, its limits and micro-batching (docs/serving.md)."""

    toml_table = ("serve",)

    host: str
    port: int = Field(ge=0, le=65535)
    device: str
    max_body_bytes: int = Field(ge=1024)
    max_records: int = Field(ge=1)
    max_labs: int = Field(ge=1)
    max_note_chars: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    max_wait_ms: float = Field(ge=0.0)
    max_queue: int = Field(ge=1)
    shutdown_timeout: float = Field(gt=0.0)
    line_cache: int = Field(ge=0)


class MedfuseConfig(_Section):
    toml_table = ()
    synth: SynthConfig
    prepare: PrepareConfig
    labs: LabsConfig
    notes: NotesConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    compare: CompareConfig
    serve: ServeConfig


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate."""


WHOLE_TABLES = {("compare", "grid")}  # tables a user's file replaces whole instead of key by key


def _merge(base: dict[str, Any], override: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (*path, key) not in WHOLE_TABLES:
            out[key] = _merge(out[key], value, (*path, key))
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> MedfuseConfig:
    """Read the default config, merge a user TOML file and ``{section: {key: value}}`` overrides over it."""
    data = shipped_defaults()
    if path:
        path = Path(path)
        try:
            data = _merge(data, tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    if overrides:
        clean = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        data = _merge(data, clean)
    try:
        return MedfuseConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path or 'configuration'}: {where}: {first['msg']}") from None


def config_hash(section: BaseModel) -> str:
    """A stable short hash of a config section (sorted-key JSON, sha256)."""
    text = json.dumps(section.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
