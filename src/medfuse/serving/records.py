"""The patient record: one admission to predict, as ``medfuse predict`` reads it and the service accepts it.

docs/predict.md describes the format; ``resources/patient_record.schema.json`` is its JSON Schema,
generated from :class:`PatientRecord` (a test keeps the two equal).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

SCHEMA_FILE = "patient_record.schema.json"
MAX_ABS_VALUE = 1e15  # the service refuses larger lab numbers: no lab measures that much
STRICT_NUMBERS = {"strict_numbers": True}
"""Validation context of the service: non-finite and huge lab numbers are refused (422). Files read by
``medfuse predict`` are validated without it: such values reach the transforms and become warnings."""


class LabResult(BaseModel):
    """One lab result, as a row of MIMIC's LABEVENTS."""

    model_config = ConfigDict(extra="forbid")

    test: int | str = Field(description="The test's itemid (e.g. 50912) or its label (e.g. 'Creatinine').")
    value: float | str | None = Field(
        description="A number, or a MIMIC-style string such as '>100' or '<0.5' (the bound is used).")
    unit: str | None = Field(None, description="The value's unit; converted to the model's unit where the "
                             "conversion is known (docs/predict.md), else the value is rejected.")
    time: datetime | None = Field(None, description="When it was charted (ISO 8601). Labs outside the model's "
                                  "prediction window are not used; without a time the admission time is assumed.")
    flag: str | None = Field(None, description="'abnormal' where the laboratory flagged it (MIMIC's FLAG).")
    ref_range_lower: float | None = Field(None, description="The laboratory's reference range, lower bound.")
    ref_range_upper: float | None = Field(None, description="The laboratory's reference range, upper bound.")

    @field_validator("test")
    @classmethod
    def _itemid_fits_int64(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            raise ValueError("an itemid must fit in 64 bits")
        return v

    @field_validator("value", "ref_range_lower", "ref_range_upper", mode="wrap")
    @classmethod
    def _finite_where_strict(cls, v, handler, info: ValidationInfo) -> float | str | None:
        strict = (info.context or {}).get("strict_numbers")
        if strict and isinstance(v, bool):
            raise ValueError("a lab value must be a number or a string, not true or false")
        v = handler(v)
        number = v
        if strict and isinstance(v, str):  # "1e300", ">1e999", "Infinity": the number the transforms would read
            try:
                number = float(v.strip().lstrip("<>=~").strip())
            except ValueError:
                number = None
        if strict and isinstance(number, float):
            if not math.isfinite(number):  # JSON has no NaN or Infinity; 1e999 parses as inf
                raise ValueError("a lab number must be finite (JSON has no NaN or Infinity)")
            if abs(number) > MAX_ABS_VALUE:
                raise ValueError(f"a lab number must be within ±{MAX_ABS_VALUE:g}")
        return v


class NoteSections(BaseModel):
    """The four note sections the model reads, already cut out of the note."""

    model_config = ConfigDict(extra="forbid")

    chief_complaint: str | None = None
    present_illness: str | None = None
    past_history: str | None = None
    admission_medications: str | None = None


class PatientRecord(BaseModel):
    """One admission: an id, its admission time, lab results and a note; either modality may be absent."""

    model_config = ConfigDict(extra="forbid")

    id: str | int = Field(description="Your identifier of the admission; returned unchanged.")
    admittime: datetime | None = Field(None, description="Admission time (ISO 8601).")
    dischtime: datetime | None = Field(None, description="Discharge time, if the stay has ended (ISO 8601).")
    labs: list[LabResult] = Field(default_factory=list)
    note: str | list[str] | None = Field(
        None, description="Raw discharge-style note text, or several notes of the admission in time order; only "
        "the allowed sections are read (the same section rules as `prepare`).")
    sections: NoteSections | None = Field(None, description="The note as named sections instead of raw text.")

    @model_validator(mode="after")
    def _discharge_after_admission(self) -> PatientRecord:
        if self.admittime is not None and self.dischtime is not None:
            a, d = (t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)
                    for t in (self.admittime, self.dischtime))
            if d < a:
                raise ValueError("dischtime is before admittime")
        return self


def record_schema() -> dict:
    """The JSON Schema of a patient record."""
    return PatientRecord.model_json_schema()


if __name__ == "__main__":  # python -m medfuse.serving.records: regenerate the shipped schema
    import json
    from importlib import resources

    with resources.as_file(resources.files("medfuse.resources").joinpath(SCHEMA_FILE)) as path:
        path.write_text(json.dumps(record_schema(), indent=2) + "\n")
