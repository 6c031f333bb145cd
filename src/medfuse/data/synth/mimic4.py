"""The MIMIC-IV layout: ``hosp/`` tables and ``note/discharge``, lower-case headers, strings quoted only
where needed, ICD-9 and ICD-10 codes, provider and specimen ids, masked results with comments."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medfuse.data.synth.csv_gz import date, ints, strings, ts
from medfuse.data.synth.icd_titles import ICD9_TITLES, ICD10_TITLES
from medfuse.data.synth.lab_tests import AM, LABS, OUT, PANELS, SPECIMEN_TYPES
from medfuse.data.synth.labevents import LabResults
from medfuse.data.synth.layout import Admissions, Categories, Columns, Diagnoses, Layout
from medfuse.data.synth.notes import NoteRows
from medfuse.data.synth.population import DAY, YEAR, Cohort

# fmt: off
_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
_MASKED = {  # MIMIC-IV prints some results as "___" with the number in valuenum and a comment
    "glucose": "IF FASTING, 70-100 NORMAL, >125 PROVISIONAL DIABETES.",
    "troponin_t": "cTropnT > 0.10 ng/mL suggests Acute MI.",
    "ntprobnp": "REFERENCE VALUES VARY WITH AGE, SEX, AND RENAL FUNCTION;AT 35% PREVALENCE, NTPROBNP VALUES;  < 450 HAVE 99% NEG PRED VALUE;  >1000 HAVE 78% POS PRED VALUE;SEE ONLINE LAB MANUAL FOR MORE DETAILED INFORMATION.",
    "hba1c": "___",
}
# fmt: on
_MASKABLE = np.array([lab.key in _MASKED for lab in LABS])
_COMMENT_OF = np.array([list(_MASKED).index(lab.key) if lab.key in _MASKED else -1 for lab in LABS])
_PANEL_OF = np.array([[lab.key in tests for tests, _ in PANELS.values()].index(True) for lab in LABS])


def _provider_ids(rng: np.random.Generator, n: int) -> list[str]:
    """MIMIC-IV style provider ids: 'P' and five upper-case letters or digits."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    return ["P" + "".join(row) for row in alphabet[rng.integers(0, len(alphabet), (n, 5))]]


class Mimic4(Layout):
    """``hosp/`` patients, admissions, diagnoses_icd, d_icd_diagnoses, d_labitems, labevents and
    ``note/discharge`` (``.csv.gz``)."""

    name = "mimic4"
    files: ClassVar[dict[str, str]] = {
        "patients": "hosp/patients.csv.gz",
        "admissions": "hosp/admissions.csv.gz",
        "diagnoses": "hosp/diagnoses_icd.csv.gz",
        "d_icd": "hosp/d_icd_diagnoses.csv.gz",
        "d_labitems": "hosp/d_labitems.csv.gz",
        "labevents": "hosp/labevents.csv.gz",
        "notes": "note/discharge.csv.gz",
    }
    quote_all = False
    # fmt: off
    categories: ClassVar[Categories] = {
        "type": (("EW EMER.", 0.45), ("OBSERVATION ADMIT", 0.12), ("URGENT", 0.16), ("EU OBSERVATION", 0.1), ("DIRECT EMER.", 0.07), ("ELECTIVE", 0.04), ("DIRECT OBSERVATION", 0.04), ("AMBULATORY OBSERVATION", 0.02)),
        "location_ed": (("EMERGENCY ROOM", 1.0),),
        "location": (("PHYSICIAN REFERRAL", 0.45), ("TRANSFER FROM HOSPITAL", 0.3), ("CLINIC REFERRAL", 0.08), ("WALK-IN/SELF REFERRAL", 0.06), ("PROCEDURE SITE", 0.05), ("TRANSFER FROM SKILLED NURSING FACILITY", 0.03), ("PACU", 0.03)),
        "discharge": (("HOME", 0.3), ("HOME HEALTH CARE", 0.3), ("SKILLED NURSING FACILITY", 0.15), (None, 0.1), ("REHAB", 0.06), ("CHRONIC/LONG TERM ACUTE CARE", 0.03), ("HOSPICE", 0.02), ("AGAINST ADVICE", 0.01), ("ACUTE HOSPITAL", 0.01), ("PSYCH FACILITY", 0.01)),
        "insurance_old": (("Medicare", 0.85), ("Other", 0.12), ("Medicaid", 0.03)),
        "insurance_young": (("Other", 0.65), ("Medicaid", 0.25), ("Medicare", 0.1)),
        "language": (("ENGLISH", 0.92), ("?", 0.08)),
        "marital": (("MARRIED", 0.42), ("SINGLE", 0.3), ("WIDOWED", 0.15), ("DIVORCED", 0.08), (None, 0.05)),
        "race": (("WHITE", 0.66), ("BLACK/AFRICAN AMERICAN", 0.14), ("UNKNOWN", 0.05), ("OTHER", 0.03), ("HISPANIC/LATINO - PUERTO RICAN", 0.03), ("ASIAN", 0.03), ("WHITE - OTHER EUROPEAN", 0.02), ("HISPANIC OR LATINO", 0.02), ("UNABLE TO OBTAIN", 0.01), ("ASIAN - CHINESE", 0.01)),
    }
    # fmt: on
    died = "DIED"
    labitem_columns = ("itemid", "label", "fluid", "category")
    itemids = np.array([lab.itemid4 or lab.itemid for lab in LABS])
    units = pa.array([lab.unit4 or lab.unit for lab in LABS], pa.string())
    specimen_types = tuple(s + "." for s in SPECIMEN_TYPES[0])

    def __init__(self, c: Cohort, seed: int):
        super().__init__(c, seed)
        self._lab_providers = _provider_ids(np.random.default_rng([seed, 2]), 800)
        self._specimens = 0  # specimens written so far
        self._note_seq = np.random.default_rng([seed, 5]).integers(1, 30, len(c.subject_id))  # per patient

    def patients(self) -> Columns:
        c = self.c
        return {
            "subject_id": ints(c.subject_id),
            "gender": strings(["F", "M"], c.male.astype(np.int64)),
            "anchor_age": ints(np.where(c.age0 > 89, 91, c.age0.astype(np.int64))),  # capped at 91
            "anchor_year": ints(1970 + (c.admit[c.first] // YEAR).astype(np.int64)),
            "anchor_year_group": strings(_YEAR_GROUPS, c.year_group),
            "dod": date(c.dod, c.dod >= 0),
        }

    def admissions(self, a: Admissions, rng: np.random.Generator) -> Columns:
        n_adm = len(self.c.pat)
        providers = _provider_ids(rng, 3000)
        admission_type = self.category(rng, "type", n_adm)
        return {
            "subject_id": a.subject,
            "hadm_id": a.hadm,
            "admittime": a.admit,
            "dischtime": a.disch,
            "deathtime": a.death,
            "admission_type": pc.if_else(pa.array(a.elective), "SURGICAL SAME DAY ADMISSION", admission_type),
            "admit_provider_id": strings(providers, rng.integers(0, len(providers), n_adm)),
            "admission_location": a.location,
            "discharge_location": a.discharge,
            "insurance": a.insurance,
            "language": a.language,
            "marital_status": a.marital,
            "race": a.race,
            "edregtime": a.ed_reg,
            "edouttime": a.ed_out,
            "hospital_expire_flag": a.expired,
        }

    def diagnoses(self, dx: Diagnoses) -> tuple[Columns, Columns]:
        version = np.where(self.c.icd10[dx.adm], 10, 9)
        used = sorted({(code, int(v)) for code, v in zip(dx.codes, version, strict=True)})
        table = {
            "subject_id": dx.subject,
            "hadm_id": dx.hadm,
            "seq_num": dx.seq,
            "icd_code": dx.code,
            "icd_version": ints(version),
        }
        dictionary = {
            "icd_code": pa.array([k for k, _ in used], pa.string()),
            "icd_version": ints(np.array([v for _, v in used])),
            "long_title": pa.array(
                [ICD9_TITLES[k][2] if v == 9 else ICD10_TITLES[k] for k, v in used], pa.string()
            ),
        }
        return table, dictionary

    def lab_columns(self, r: LabResults, rng: np.random.Generator) -> Columns:
        """Adds specimen and provider ids, storage times, reference ranges, priorities, and prints some
        results as "___" with the number in valuenum and a comment."""
        n, draws, providers = len(r.draw), r.draws, self._lab_providers
        # one specimen per draw and panel; ids unique but scrambled like the real ones
        specimen = np.unique(r.draw * len(PANELS) + _PANEL_OF[r.test], return_inverse=True)[1]
        specimen_id = (self._specimens + specimen + 1) * 2_654_435_761 % 90_000_000 + 10_000_000
        self._specimens += int(specimen.max()) + 1 if n else 0
        hidden = _MASKABLE[r.test] & r.numeric & (rng.random(n) < 0.3)
        has_range = ~np.isnan(r.low) & ~r.text
        n_draws = len(draws.time)
        store = draws.time + rng.lognormal(np.log(70), 0.6, n_draws).astype(np.int64) * 60
        provider = np.where(
            rng.random(n_draws) < 0.16, rng.integers(0, len(providers), n_draws), len(providers)
        )
        kind = draws.kind[r.draw]
        return {
            "labevent_id": r.row_id,
            "subject_id": r.subject,
            "hadm_id": r.hadm,
            "specimen_id": ints(specimen_id),
            "itemid": r.item,
            "order_provider_id": strings([*providers, None], provider[r.draw]),
            "charttime": r.charttime,
            "storetime": ts(store).take(pa.array(r.draw)),
            "value": pc.if_else(pa.array(hidden), "___", r.value),
            "valuenum": r.valuenum,
            "valueuom": r.unit,
            "ref_range_lower": pa.array(r.low, pa.float64(), mask=~has_range),
            "ref_range_upper": pa.array(r.high, pa.float64(), mask=~has_range),
            "flag": r.flag,
            "priority": strings(["STAT", "ROUTINE", None], np.select([kind == AM, kind == OUT], [1, 2], 0)),
            "comments": strings(
                [*_MASKED.values(), None],
                np.where(hidden, _COMMENT_OF[r.test], len(_MASKED)),
            ),
        }

    def note_columns(self, rows: NoteRows, first_row: int) -> Columns:
        """note_id is ``<subject_id>-DS-<note_seq>``, note_seq counting on from a random start per patient."""
        c, pat, n = self.c, rows.pat, len(rows.notes)
        seq = self._note_seq[pat] + np.arange(n) - np.searchsorted(pat, pat)
        return {
            "note_id": pa.array(
                [f"{s}-DS-{q}" for s, q in zip(c.subject_id[pat], seq, strict=True)], pa.string()
            ),
            "subject_id": rows.subject,
            "hadm_id": rows.hadm,
            "note_type": pa.array(["DS"] * n, pa.string()),
            "note_seq": ints(seq),
            "charttime": ts(c.disch[rows.adm] // DAY * DAY),
            "storetime": rows.store,
            "text": rows.text,
        }
