"""The lab test catalogue: real ITEMIDs and units (MIMIC-III / MIMIC-IV demo), reference ranges,
reporting limits, and the panels tests are ordered in."""

from __future__ import annotations

from dataclasses import dataclass

_NAN = float("nan")


# fmt: off
@dataclass(frozen=True)
class Lab:
    """One test: MIMIC-III item and unit, decimals printed, reference range, reporting limits."""

    key: str
    itemid: int
    unit: str | None
    decimals: int
    normal: tuple[float, float] = (_NAN, _NAN)
    female: tuple[float, float] | None = None
    below: float = _NAN  # values under this limit are reported as "<limit" with an empty VALUENUM
    above: float = _NAN  # ... over it as ">limit"
    itemid4: int | None = None  # MIMIC-IV item when it differs
    unit4: str | None = None  # MIMIC-IV unit when it differs


LABS = (  # in ITEMID order: rows of one draw are written in this order, as in MIMIC-III
    Lab("specimen_type", 50800, None, 0, itemid4=52033),
    Lab("base_excess", 50802, "mEq/L", 0),
    Lab("total_co2", 50804, "mEq/L", 0, (21, 30)),
    Lab("lactate", 50813, "mmol/L", 1, (0.5, 2.0)),
    Lab("pco2", 50818, "mm Hg", 0, (35, 45)),
    Lab("ph", 50820, "units", 2, (7.35, 7.45)),
    Lab("po2", 50821, "mm Hg", 0, (85, 105)),
    Lab("hba1c", 50852, "%", 1, (4.0, 6.0)),
    Lab("alt", 50861, "IU/L", 0, (0, 40)),
    Lab("albumin", 50862, "g/dL", 1, (3.5, 5.2)),
    Lab("alk_phos", 50863, "IU/L", 0, (40, 130)),
    Lab("anion_gap", 50868, "mEq/L", 0, (8, 20)),
    Lab("ast", 50878, "IU/L", 0, (0, 40)),
    Lab("bicarbonate", 50882, "mEq/L", 0, (22, 32)),
    Lab("bilirubin", 50885, "mg/dL", 1, (0, 1.5)),
    Lab("calcium", 50893, "mg/dL", 1, (8.4, 10.3)),
    Lab("chloride", 50902, "mEq/L", 0, (96, 108)),
    Lab("hdl", 50904, "mg/dL", 0, (41, 999)),
    Lab("ldl", 50905, "mg/dL", 0, (0, 129)),
    Lab("cholesterol", 50907, "mg/dL", 0, (0, 199)),
    Lab("ck", 50910, "IU/L", 0, (47, 322)),
    Lab("ck_mb", 50911, "ng/mL", 0, (0, 10), below=1),
    Lab("creatinine", 50912, "mg/dL", 1, (0.5, 1.2), female=(0.4, 1.1)),
    Lab("ferritin", 50924, "ng/mL", 0, (30, 400), female=(13, 150)),
    Lab("glucose", 50931, "mg/dL", 0, (70, 100)),
    Lab("iron", 50952, "ug/dL", 0, (45, 160)),
    Lab("tibc", 50953, "ug/dL", 0, (260, 470)),
    Lab("ldh", 50954, "IU/L", 0, (94, 250)),
    Lab("magnesium", 50960, "mg/dL", 1, (1.6, 2.6)),
    Lab("ntprobnp", 50963, "pg/mL", 0, (0, 852), above=70000),
    Lab("phosphate", 50970, "mg/dL", 1, (2.7, 4.5)),
    Lab("potassium", 50971, "mEq/L", 1, (3.3, 5.1)),
    Lab("sodium", 50983, "mEq/L", 0, (133, 145)),
    Lab("transferrin", 50998, "mg/dL", 0, (200, 360)),
    Lab("triglycerides", 51000, "mg/dL", 0, (0, 149)),
    Lab("troponin_t", 51003, "ng/mL", 2, (0, 0.01), below=0.01),
    Lab("bun", 51006, "mg/dL", 0, (6, 20)),
    Lab("vancomycin", 51009, "ug/mL", 1, (10, 20)),
    Lab("vitamin_b12", 51010, "pg/mL", 0, (243, 894)),
    Lab("basophils", 51146, "%", 1, (0, 1)),
    Lab("eosinophils", 51200, "%", 1, (1, 7)),
    Lab("hematocrit", 51221, "%", 1, (40, 51), female=(36, 48)),
    Lab("hemoglobin", 51222, "g/dL", 1, (13.7, 17.5), female=(11.2, 15.7)),
    Lab("inr", 51237, None, 1, (0.9, 1.1)),
    Lab("lymphocytes", 51244, "%", 1, (19, 53)),
    Lab("mch", 51248, "pg", 1, (26, 32)),
    Lab("mchc", 51249, "%", 1, (32, 37), unit4="g/dL"),
    Lab("mcv", 51250, "fL", 0, (82, 98)),
    Lab("monocytes", 51254, "%", 1, (5, 13)),
    Lab("neutrophils", 51256, "%", 1, (34, 71)),
    Lab("platelets", 51265, "K/uL", 0, (150, 400)),
    Lab("pt", 51274, "sec", 1, (9.4, 12.5)),
    Lab("ptt", 51275, "sec", 1, (25, 36.5), above=150),
    Lab("rdw", 51277, "%", 1, (10.5, 15.5)),
    Lab("rbc", 51279, "m/uL", 2, (4.6, 6.1), female=(3.9, 5.2)),
    Lab("wbc", 51301, "K/uL", 1, (4.0, 10.0)),
)
LAB_INDEX = {lab.key: i for i, lab in enumerate(LABS)}
SPECIMEN_TYPES = (("ART", "VEN", "MIX"), (0.72, 0.24, 0.04))

# Panels drawn together at one CHARTTIME: tests and chance per draw kind (ED/admission, morning, extra
# ICU draw, outpatient). Panels with None chances are made relevance-dependent in panel_masks.
ED, AM, STAT, OUT = range(4)
PANELS: dict[str, tuple[tuple[str, ...], tuple[float, float, float, float] | None]] = {
    "chem7": (("sodium", "potassium", "chloride", "bicarbonate", "bun", "creatinine", "glucose", "anion_gap"), (0.98, 0.97, 0.7, 0.92)),
    "chem_ext": (("calcium", "magnesium", "phosphate"), (0.6, 0.88, 0.45, 0.35)),
    "cbc": (("wbc", "rbc", "hemoglobin", "hematocrit", "mcv", "mch", "mchc", "rdw", "platelets"), (0.97, 0.95, 0.6, 0.88)),
    "coag": (("pt", "inr", "ptt"), None),
    "lft": (("alt", "ast", "alk_phos", "bilirubin", "albumin"), (0.55, 0.18, 0.1, 0.2)),
    "diff": (("neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils"), (0.55, 0.22, 0.12, 0.12)),
    "ldh": (("ldh",), (0.15, 0.05, 0.03, 0.03)),
    "blood_gas": (("specimen_type", "ph", "pco2", "po2", "base_excess", "total_co2", "lactate"), None),
    "cardiac": (("troponin_t", "ck", "ck_mb"), None),
    "bnp": (("ntprobnp",), None),
    "vanco": (("vancomycin",), None),
    "hba1c": (("hba1c",), None),
    "lipids": (("cholesterol", "hdl", "ldl", "triglycerides"), None),
    "iron": (("ferritin", "iron", "tibc", "transferrin"), None),
    "b12": (("vitamin_b12",), None),
}
# fmt: on
