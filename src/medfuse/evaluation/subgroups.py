"""Subgroups of a split for ``metrics.json``: missing modalities, sex, age band and race / ethnicity.

Each family maps a subgroup name to a boolean row mask, the input of
:func:`medfuse.evaluation.metrics.evaluate_predictions`. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

AGE_BANDS = ((0, "<18"), (18, "18-44"), (45, "45-64"), (65, "65-79"), (80, "80+"))  # lower bound, name
UNKNOWN = "unknown"


def age_bands(age) -> np.ndarray:
    """The :data:`AGE_BANDS` name of each age in years (MIMIC caps ages at 90, so 80+ includes 90)."""
    a = np.asarray(age, dtype=float)
    if np.isnan(a).any():
        raise ValueError("age contains missing values")
    names = np.array([name for _, name in AGE_BANDS])
    return names[np.searchsorted([lo for lo, _ in AGE_BANDS], a, side="right") - 1]


def _masks(values: np.ndarray, order: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{value: values == value}`` for every value present, in ``order`` (else sorted, "unknown" in any case last)."""
    present = set(values.tolist())
    names = [v for v in order if v in present] if order else sorted(present, key=lambda v: (v.lower() == UNKNOWN, v))
    return {name: values == name for name in names}


def _categories(column: pa.ChunkedArray) -> np.ndarray:
    return np.array([UNKNOWN if v in (None, "") else str(v) for v in column.to_pylist()], dtype=object)


def cohort_subgroups(admissions: pa.Table, rows: np.ndarray, note_missing: np.ndarray,
                     lab_missing: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """``(families, not_available)`` for the admissions ``rows`` of a cohort's ``admissions.parquet``.

    Families: ``modality`` (``without_note``: no note; ``without_labs``: no lab token;
    ``without_any_text``: no note and no abnormal-lab text, i.e. the note vector is missing;
    ``note_and_labs``), ``sex``, ``age_band`` (:data:`AGE_BANDS`) and ``race`` when the cohort has a
    ``race`` column with any value; else ``not_available["race"] = "not in source"``. Missing categories are ``"unknown"``.
    """
    has_note = np.asarray(admissions.column("has_notes").to_pylist(), dtype=bool)[rows]
    families = {
        "modality": {"without_note": ~has_note, "without_labs": lab_missing, "without_any_text": note_missing,
                     "note_and_labs": has_note & ~lab_missing},
        "sex": _masks(_categories(admissions.column("sex"))[rows]),
        "age_band": _masks(age_bands(admissions.column("age").to_numpy())[rows], [n for _, n in AGE_BANDS]),
    }
    not_available = {}
    # prepare writes a null race column when the source has none
    if "race" in admissions.column_names and admissions.column("race").null_count < admissions.num_rows:
        families["race"] = _masks(_categories(admissions.column("race"))[rows])
    else:
        not_available["race"] = "not in source"
    return families, not_available
