"""The MIMIC-III layout: upper-case CSVs in one folder, every string quoted, ``ROW_ID`` columns."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from medfuse.data.synth.conditions import REASONS
from medfuse.data.synth.csv_gz import date, ints, strings, ts
from medfuse.data.synth.icd_titles import ICD9_TITLES
from medfuse.data.synth.lab_tests import LABS, SPECIMEN_TYPES
from medfuse.data.synth.labevents import LabResults
from medfuse.data.synth.layout import Admissions, Categories, Columns, Diagnoses, Layout
from medfuse.data.synth.notes import NoteRows


class Mimic3(Layout):
    """PATIENTS, ADMISSIONS, DIAGNOSES_ICD, D_ICD_DIAGNOSES, D_LABITEMS, LABEVENTS and NOTEEVENTS
    (``.csv.gz``)."""

    name = "mimic3"
    files: ClassVar[dict[str, str]] = {
        "patients": "PATIENTS.csv.gz",
        "admissions": "ADMISSIONS.csv.gz",
        "diagnoses": "DIAGNOSES_ICD.csv.gz",
        "d_icd": "D_ICD_DIAGNOSES.csv.gz",
        "d_labitems": "D_LABITEMS.csv.gz",
        "labevents": "LABEVENTS.csv.gz",
        "notes": "NOTEEVENTS.csv.gz",
    }
    quote_all = True
    # fmt: off
    categories: ClassVar[Categories] = {
        "location_ed": (("EMERGENCY ROOM ADMIT", 1.0),),
        "location": (("TRANSFER FROM HOSP/EXTRAM", 0.55), ("CLINIC REFERRAL/PREMATURE", 0.25), ("PHYS REFERRAL/NORMAL DELI", 0.15), ("TRANSFER FROM SKILLED NUR", 0.05)),
        "discharge": (("HOME", 0.3), ("HOME HEALTH CARE", 0.25), ("SNF", 0.22), ("REHAB/DISTINCT PART HOSP", 0.12), ("LONG TERM CARE HOSPITAL", 0.04), ("SHORT TERM HOSPITAL", 0.03), ("HOSPICE-HOME", 0.01), ("ICF", 0.01), ("LEFT AGAINST MEDICAL ADVI", 0.01), ("DISC-TRAN CANCER/CHLDRN H", 0.01)),
        "insurance_old": (("Medicare", 0.88), ("Private", 0.08), ("Medicaid", 0.03), ("Government", 0.01)),
        "insurance_young": (("Private", 0.55), ("Medicaid", 0.2), ("Medicare", 0.15), ("Government", 0.05), ("Self Pay", 0.05)),
        "language": (("ENGL", 0.55), (None, 0.35), ("SPAN", 0.05), ("RUSS", 0.02), ("PTUN", 0.01), ("CANT", 0.01), ("PORT", 0.01)),
        "religion": (("CATHOLIC", 0.35), ("NOT SPECIFIED", 0.2), ("UNOBTAINABLE", 0.12), ("PROTESTANT QUAKER", 0.12), ("JEWISH", 0.08), ("OTHER", 0.05), ("EPISCOPALIAN", 0.02), ("CHRISTIAN SCIENTIST", 0.02), ("BUDDHIST", 0.01), ("MUSLIM", 0.01), (None, 0.02)),
        "marital": (("MARRIED", 0.45), ("SINGLE", 0.22), ("WIDOWED", 0.14), ("DIVORCED", 0.06), (None, 0.1), ("SEPARATED", 0.01), ("UNKNOWN (DEFAULT)", 0.02)),
        "race": (("WHITE", 0.7), ("BLACK/AFRICAN AMERICAN", 0.09), ("UNKNOWN/NOT SPECIFIED", 0.08), ("HISPANIC OR LATINO", 0.03), ("ASIAN", 0.03), ("OTHER", 0.03), ("HISPANIC/LATINO - PUERTO RICAN", 0.02), ("UNABLE TO OBTAIN", 0.02)),
    }
    # fmt: on
    died = "DEAD/EXPIRED"
    labitem_columns = ("ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE")
    itemids = np.array([lab.itemid for lab in LABS])
    units = pa.array([lab.unit for lab in LABS], pa.string())
    specimen_types = SPECIMEN_TYPES[0]

    def patients(self) -> Columns:
        c = self.c
        return {
            "ROW_ID": ints(np.arange(1, len(c.subject_id) + 1)),
            "SUBJECT_ID": ints(c.subject_id),
            "GENDER": strings(["F", "M"], c.male.astype(np.int64)),
            "DOB": ts(c.dob),
            "DOD": ts(c.dod, c.dod >= 0),
            "DOD_HOSP": ts(c.dod, c.dod_hosp),
            "DOD_SSN": ts(c.dod, c.dod_ssn),
            "EXPIRE_FLAG": ints((c.dod >= 0).astype(np.int64)),
        }

    def admissions(self, a: Admissions, rng: np.random.Generator) -> Columns:
        c = self.c
        n_adm = len(c.pat)
        admission_type = np.where(a.elective, 2, (rng.random(n_adm) < 0.03).astype(np.int64))
        return {
            "ROW_ID": ints(np.arange(1, n_adm + 1)),
            "SUBJECT_ID": a.subject,
            "HADM_ID": a.hadm,
            "ADMITTIME": a.admit,
            "DISCHTIME": a.disch,
            "DEATHTIME": a.death,
            "ADMISSION_TYPE": strings(["EMERGENCY", "URGENT", "ELECTIVE"], admission_type),
            "ADMISSION_LOCATION": a.location,
            "DISCHARGE_LOCATION": a.discharge,
            "INSURANCE": a.insurance,
            "LANGUAGE": a.language,
            "RELIGION": self.category(rng, "religion", len(c.subject_id)).take(pa.array(c.pat)),
            "MARITAL_STATUS": a.marital,
            "ETHNICITY": a.race,
            "EDREGTIME": a.ed_reg,
            "EDOUTTIME": a.ed_out,
            "DIAGNOSIS": strings([r.diagnosis for r in REASONS], c.reason),
            "HOSPITAL_EXPIRE_FLAG": a.expired,
            "HAS_CHARTEVENTS_DATA": ints((rng.random(n_adm) < 0.98).astype(np.int64)),
        }

    def diagnoses(self, dx: Diagnoses) -> tuple[Columns, Columns]:
        used = sorted(set(dx.codes), key=lambda k: ICD9_TITLES[k][0])
        table = {
            "ROW_ID": ints(np.arange(1, len(dx.codes) + 1)),
            "SUBJECT_ID": dx.subject,
            "HADM_ID": dx.hadm,
            "SEQ_NUM": dx.seq,
            "ICD9_CODE": dx.code,
        }
        dictionary = {
            "ROW_ID": ints(np.array([ICD9_TITLES[k][0] for k in used])),
            "ICD9_CODE": pa.array(used, pa.string()),
            "SHORT_TITLE": pa.array([ICD9_TITLES[k][1] for k in used], pa.string()),
            "LONG_TITLE": pa.array([ICD9_TITLES[k][2] for k in used], pa.string()),
        }
        return table, dictionary

    def lab_columns(self, r: LabResults, rng: np.random.Generator) -> Columns:
        return {
            "ROW_ID": r.row_id,
            "SUBJECT_ID": r.subject,
            "HADM_ID": r.hadm,
            "ITEMID": r.item,
            "CHARTTIME": r.charttime,
            "VALUE": r.value,
            "VALUENUM": r.valuenum,
            "VALUEUOM": r.unit,
            "FLAG": r.flag,
        }

    def note_columns(self, rows: NoteRows, first_row: int) -> Columns:
        """Discharge summaries are dated by CHARTDATE only (empty CHARTTIME and STORETIME)."""
        notes, c = rows.notes, self.c
        chart = np.array([c.disch[n.adm] if n.chart is None else n.chart for n in notes], np.int64)
        return {
            "ROW_ID": ints(first_row + 1 + np.arange(len(notes))),
            "SUBJECT_ID": rows.subject,
            "HADM_ID": rows.hadm,
            "CHARTDATE": date(chart, np.ones(len(notes), bool)),
            "CHARTTIME": pa.array([n.chart for n in notes], pa.int64()).cast(pa.timestamp("s")),
            "STORETIME": rows.store,
            "CATEGORY": pa.array([n.category for n in notes], pa.string()),
            "DESCRIPTION": pa.array([n.description for n in notes], pa.string()),
            "CGID": pa.array([n.cgid for n in notes], pa.int64()),
            "ISERROR": pa.array([n.error for n in notes], pa.int64()),
            "TEXT": rows.text,
        }
