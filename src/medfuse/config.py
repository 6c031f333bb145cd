"""Configuration: one TOML format validated by pydantic, with a shipped default.

The shipped ``resources/default.toml`` (linked as ``configs/default.toml``) is read first, a user's
file is merged over it key by key, and CLI options win over both.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Source = Literal["mimic3", "mimic4", "meds"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthConfig(_Section):
    format: Source = "mimic3"
    admissions: int = Field(2000, ge=10)
    seed: int = 0
    note_fraction: float = Field(0.95, ge=0.0, le=1.0)


_MEDS_GROUPS = {  # regex keys of [prepare.meds] and the named groups each must have
    "sex_code": ("sex",), "race_code": ("race",), "diagnosis_codes": ("version", "code"), "lab_code": ("test",),
}


class MedsConfig(_Section):
    """How a MEDS dataset's events map to the raw tables ``prepare`` reads (``[prepare.meds]``; docs/meds.md).

    Every ``*_code`` key is a regular expression matched against an event's ``code`` (search, so anchor it
    with ``^``); an empty one matches nothing. Defaults follow the MIMIC-IV MEDS ETL (MEDS-Extract)."""

    admission_id_columns: list[str] = ["hadm_id", "visit_id"]
    admission_start_code: str = "^HOSPITAL_ADMISSION//"
    admission_end_code: str = "^HOSPITAL_DISCHARGE//"
    admission_end_column: str = "end"
    birth_code: str = "^MEDS_BIRTH$"
    birth_precision: Literal["auto", "year", "exact"] = "auto"
    sex_code: str = "^GENDER//(?P<sex>.+)$"
    race_code: str = "^RACE//(?P<race>.*)$"
    race_column: str = "race"
    diagnosis_codes: list[str] = ["^DIAGNOSIS//ICD//(?P<version>[^/]*)//(?P<code>[^/]*)$",
                                  "^ICD(?P<version>9|10)CM/(?P<code>[^/]+)$"]
    diagnosis_parent_codes: bool = True
    lab_code: str = "^LAB//RESULT//(?P<test>[^/]*)//(?P<unit>.*)$"
    lab_unit_column: str = "unit"
    unknown_unit: str = "UNK"
    lab_flag_column: str = "flag"
    lab_ref_low_column: str = "ref_range_lower"
    lab_ref_high_column: str = "ref_range_upper"
    note_code: str = "^NOTE//DISCHARGE"
    use_subject_splits: bool = True
    train_splits: list[str] = ["train"]
    val_splits: list[str] = ["tuning"]
    test_splits: list[str] = ["held_out"]

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
    source: Source = "mimic3"
    diseases: str = ""
    seed: int = 42
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    lab_min_admission_fraction: float = Field(0.05, ge=0.0, le=1.0)
    lab_max_tests: int = Field(64, ge=1)
    lab_hours_before_admission: float = Field(24.0, ge=0.0)
    window_hours: float = Field(0.0, ge=0.0)  # labs up to ADMITTIME + this many hours; 0 = the whole stay
    notes_dir: str = ""  # MIMIC-IV-Note folder when it is not under the raw folder; empty = the raw folder
    memory_limit: str = "3GB"
    temp_directory: str = ""  # DuckDB spill folder (a sub-folder per run); empty = inside the cohort being written
    threads: int = Field(0, ge=0)
    meds: MedsConfig = MedsConfig()

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6 or min(v) <= 0:
            raise ValueError("split_fractions must be three positive numbers summing to 1")
        return v


class LabsConfig(_Section):
    """Masked lab-test modelling (MLTM): the lab embedder and imputer (docs/labs.md)."""

    aggregates: list[Literal["last", "mean", "min", "max"]] = Field(["last"], min_length=1)
    d_model: int = Field(64, ge=4)
    encoder_layers: int = Field(6, ge=1)
    decoder_layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    mask_ratio: float = Field(0.75, gt=0.0, lt=1.0)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    patience: int = Field(10, ge=1)
    seed: int = 0
    device: str = "auto"

    @field_validator("heads")
    @classmethod
    def _heads_divide_width(cls, v: int, info) -> int:
        d = info.data.get("d_model")
        if d is not None and d % v:
            raise ValueError(f"d_model ({d}) must be divisible by heads ({v})")
        return v


class NotesConfig(_Section):
    """Clinical-note embeddings and LoRA fine-tuning (``embed-notes``, ``finetune-notes``; docs/notes.md)."""

    model: str = "default"
    pooling: Literal["auto", "mean", "last"] = "auto"
    max_length: int = Field(0, ge=0)
    stride: int = Field(32, ge=0)
    batch_tokens: int = Field(0, ge=0)
    batch_size: int = Field(0, ge=0)
    normalize: bool = True
    unit: Literal["lines", "text"] = "lines"
    line_clusters: int = Field(64, ge=0)
    line_max: bool = True
    template: str = (
        "Chief complaint: {chief_complaint}\n"
        "History of present illness: {present_illness}\n"
        "Past medical history: {past_history}\n"
        "Medications on admission: {admission_medications}\n"
        "{lab_text}"
    )
    cache: bool = True
    cache_dir: str = ""
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    finetune: bool = False
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0.0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = []
    lora_layers: int = Field(0, ge=0)
    epochs: int = Field(3, ge=1)
    schedule_epochs: int = Field(0, ge=0)
    train_batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    head_lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    patience: int = Field(3, ge=1)
    pos_weight: bool = True
    max_minutes: float = Field(0.0, ge=0.0)
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    cpu_autocast: Literal["auto", "on", "off"] = "auto"
    seed: int = 0

    @field_validator("line_max")
    @classmethod
    def _line_vector_not_empty(cls, v: bool, info) -> bool:
        if not v and info.data.get("line_clusters") == 0:
            raise ValueError("line_max = false needs line_clusters > 0 (the note vector would be empty)")
        return v


class TrainConfig(_Section):
    """The fusion model and its training (``train``; docs/fusion.md, docs/training.md)."""

    kind: Literal["medfuse", "concat", "tfn", "notes_only", "labs_only"] = "medfuse"
    labs_encoder: Literal["frozen", "finetune", "scratch"] = "frozen"
    lab_values: bool = True
    labs_run: str = ""
    notes_run: str = ""
    d: int = Field(32, ge=2)
    heads: int = Field(4, ge=1)
    layers: int = Field(1, ge=1)
    dense_hidden: int = Field(128, ge=1)
    dense_layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(0.15, ge=0.0, lt=1.0)
    mi_weight: float = Field(0.1, ge=0.0)
    use_kronecker: bool = True
    skip_connections: bool = True
    mi_floor: bool = True
    use_cross_attention: bool = True
    mi_sample: bool = True
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    estimator_lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    patience: int = Field(5, ge=1)
    pos_weight: bool = False
    seed: int = 0
    device: str = "auto"


class EvaluateConfig(_Section):
    """``evaluate``: bootstrap resamples, and the rule tuning decision thresholds on validation (docs/evaluation.md)."""

    n_resamples: int = Field(1000, ge=0)
    threshold_rule: Literal["plateau", "f1_max", "shrunk", "half_best_f1", "fixed"] = "plateau"
    threshold_tolerance: float = Field(0.08, ge=0.0, le=1.0)
    threshold_shrinkage: float = Field(10.0, ge=0.0)
    threshold_min_positives: int = Field(1, ge=1)


class CompareConfig(_Section):
    """``compare``: baselines, ablations and the lambda sweep (docs/training.md)."""

    seeds: list[int] = [0, 1, 2]
    mi_weights: list[float] = [0.0, 0.01, 0.1, 0.5, 1.0]
    models: list[str] = []
    n_resamples: int = Field(1000, ge=0)
    workers: int = Field(0, ge=0)
    grid: dict[str, list[int | float]] = {"dropout": [0.1, 0.3], "modality_dropout": [0.15, 0.3]}

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

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = "cpu"
    max_body_bytes: int = Field(4 * 2**20, ge=1024)
    max_records: int = Field(64, ge=1)
    max_labs: int = Field(5000, ge=1)
    max_note_chars: int = Field(100_000, ge=1)
    max_batch: int = Field(32, ge=1)
    max_wait_ms: float = Field(20.0, ge=0.0)
    max_queue: int = Field(256, ge=1)
    shutdown_timeout: float = Field(30.0, gt=0.0)
    line_cache: int = Field(50_000, ge=0)


class MedfuseConfig(_Section):
    synth: SynthConfig = SynthConfig()
    prepare: PrepareConfig = PrepareConfig()
    labs: LabsConfig = LabsConfig()
    notes: NotesConfig = NotesConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    compare: CompareConfig = CompareConfig()
    serve: ServeConfig = ServeConfig()


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


def default_config_text() -> str:
    """The shipped default configuration, as TOML text."""
    return resources.files("medfuse.resources").joinpath("default.toml").read_text()


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> MedfuseConfig:
    """Read the default config, merge a user TOML file and ``{section: {key: value}}`` overrides over it."""
    data = tomllib.loads(default_config_text())
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
