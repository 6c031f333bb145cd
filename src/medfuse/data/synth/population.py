"""The population: patients and their admissions, with diseases, reasons, timeline and outcomes.

Drawn up front in one pass (a few MB): one row per patient and per admission. Labs and notes are drawn
later, per chunk of patients (:meth:`Cohort.chunks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medfuse.data.synth.conditions import (
    AFIB,
    AKI,
    AN_ACUTE,
    AN_CKD,
    ANEMIA,
    CAD,
    CHRONIC,
    CKD,
    CKD_STAGES,
    COPD,
    DM,
    HF,
    HLD,
    HTN,
    INTERCEPT,
    ONSET,
    REASON_BOOST,
    REASON_INDEX,
    REASONS,
)

Format = Literal["mimic3", "mimic4"]

DAY = 86_400
YEAR = 365.2425 * DAY
_CHUNK_PATIENTS = 1000


@dataclass
class Cohort:
    """Patients (arrays of length P) and their admissions (length A, contiguous and in time order per patient)."""

    subject_id: np.ndarray
    male: np.ndarray
    age0: np.ndarray  # age in years at the first admission
    dob: np.ndarray  # seconds (MIMIC-III: shifted by 300 years for the over-89s)
    dod: np.ndarray  # seconds, -1 when alive
    dod_hosp: np.ndarray
    dod_ssn: np.ndarray
    year_group: np.ndarray  # MIMIC-IV anchor_year_group index
    ckd_stage: np.ndarray
    warfarin: np.ndarray
    statin: np.ndarray
    smoker: np.ndarray
    first: np.ndarray  # index of each patient's first admission
    pat: np.ndarray  # patient of each admission
    hadm_id: np.ndarray
    admit: np.ndarray  # seconds
    disch: np.ndarray
    ed_reg: np.ndarray  # seconds, -1 when not admitted through the ED
    died: np.ndarray
    reason: np.ndarray
    severity: np.ndarray
    ventilated: np.ndarray
    dis: np.ndarray  # bool [A, 10]
    anemia_type: np.ndarray
    icd10: np.ndarray
    has_note: np.ndarray

    @property
    def age(self) -> np.ndarray:
        """Age in years at each admission."""
        return self.age0[self.pat] + (self.admit - self.admit[self.first][self.pat]) / YEAR

    def chunks(self) -> list[tuple[int, int, int, int]]:
        """(first patient, end patient, first admission, end admission) of each chunk of patients."""
        n_pat, n_adm = len(self.subject_id), len(self.pat)
        bounds = list(range(0, n_pat, _CHUNK_PATIENTS)) + [n_pat]
        adm_bounds = [int(self.first[p]) if p < n_pat else n_adm for p in bounds]
        return [(bounds[i], bounds[i + 1], adm_bounds[i], adm_bounds[i + 1]) for i in range(len(bounds) - 1)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def pick(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    """n indices drawn with the given (unnormalised) weights."""
    p = np.asarray(weights, float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _unique_ids(rng: np.random.Generator, low: int, span: int, n: int) -> np.ndarray:
    """n distinct random integers in [low, low + span), in random order."""
    return low + rng.choice(max(span, n * 5 // 4), size=n, replace=False)


def draw_cohort(rng: np.random.Generator, n_adm: int, fmt: Format, note_fraction: float) -> Cohort:
    """Draw every patient and admission: demographics, diseases, reasons, times, outcomes."""
    # Admissions per patient: 1 + geometric, mean about 1.4, cut so the total is exactly n_adm.
    counts = np.minimum(rng.geometric(0.72, size=n_adm), 8)
    n_pat = int(np.searchsorted(np.cumsum(counts), n_adm)) + 1
    counts = counts[:n_pat]
    counts[-1] -= counts.sum() - n_adm
    pat = np.repeat(np.arange(n_pat), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    later = np.ones(n_adm, bool)
    later[first] = False

    if fmt == "mimic3":
        subject_id = 1 + np.cumsum(rng.integers(1, 4, size=n_pat))
        hadm_id = _unique_ids(rng, 100_000, 100_000, n_adm)
    else:
        subject_id = np.sort(_unique_ids(rng, 10_000_000, 10_000_000, n_pat))
        hadm_id = _unique_ids(rng, 20_000_000, 10_000_000, n_adm)

    male = rng.random(n_pat) < 0.56
    age0 = np.clip(rng.normal(64, 16, n_pat), 18, 99)
    age_z = (age0 - 65) / 16
    risk = 0.55 * age_z + 0.85 * rng.standard_normal(n_pat)  # latent cardiometabolic risk
    smoker = rng.random(n_pat) < _sigmoid(-0.6 + 0.3 * risk)

    # Chronic diseases at the first admission, each depending on risk, age and the ones drawn before.
    base = np.zeros((n_pat, 10), bool)
    drivers = {
        HTN: lambda b: 1.3 * risk,
        DM: lambda b: 1.0 * risk,
        HLD: lambda b: 0.8 * risk + 0.7 * b[:, DM],
        CAD: lambda b: 0.9 * risk + 0.8 * b[:, HTN] + 0.6 * b[:, HLD] + 0.5 * b[:, DM] + 0.4 * male,
        CKD: lambda b: 0.5 * risk + 0.9 * b[:, HTN] + 1.0 * b[:, DM],
        AFIB: lambda b: 1.1 * age_z + 0.4 * b[:, HTN],
        HF: lambda b: 0.5 * risk + 0.9 * b[:, CAD] + 1.1 * b[:, AFIB] + 0.5 * b[:, HTN] + 0.5 * b[:, CKD],
        COPD: lambda b: 0.5 * age_z + 1.8 * smoker,
    }
    for d in CHRONIC:
        base[:, d] = rng.random(n_pat) < _sigmoid(INTERCEPT[d] + drivers[d](base))
    # Chronic conditions persist; an absent one may appear by a later admission.
    onset = (rng.random((n_adm, 10)) < ONSET) & later[:, None]
    onset_cum = np.cumsum(onset, axis=0)
    dis = base[pat] | (onset_cum - onset_cum[first][pat] > 0)
    dis[:, [AKI, ANEMIA]] = False

    ckd_stage = pick(rng, [s[2] for s in CKD_STAGES], n_pat)
    warfarin = rng.random(n_pat) < 0.4  # effective only with atrial fibrillation
    statin = rng.random(n_pat) < 0.7  # effective only with hyperlipidemia or CAD
    chronic_anemia = rng.random(n_pat) < _sigmoid(-2.0 + 1.2 * base[:, CKD] + 0.3 * ~male)

    # Reason for admission: Gumbel-max over log weights that depend on the diseases.
    logw = np.tile(np.log([r.weight for r in REASONS]), (n_adm, 1))
    for j, r in enumerate(REASONS):
        if r.needs is not None:
            logw[~dis[:, r.needs], j] = -np.inf
    for (name, d), boost in REASON_BOOST.items():
        logw[:, REASON_INDEX[name]] += boost * dis[:, d]
    reason = np.argmax(logw + rng.gumbel(size=logw.shape), axis=1)
    severity = np.array([r.severity for r in REASONS])[reason] * rng.lognormal(0, 0.4, n_adm)
    is_reason = {name: reason == i for name, i in REASON_INDEX.items()}

    # Acute, admission-level diseases.
    age_a = age0[pat]
    infection = is_reason["sepsis"] | is_reason["pneumonia"] | is_reason["ams"]
    aki_logit = (
        INTERCEPT[AKI]
        + 1.3 * dis[:, CKD]
        + 0.6 * dis[:, HF]
        + 1.2 * is_reason["sepsis"]
        + 0.4 * infection
        + 0.6 * (is_reason["dka"] | is_reason["pancreatitis"] | is_reason["gi_bleed"])
        + 0.4 * (age_a - 65) / 16
        + 0.5 * np.log(severity)
    )
    dis[:, AKI] = rng.random(n_adm) < _sigmoid(aki_logit)
    anemia_logit = (
        INTERCEPT[ANEMIA]
        + 2.2 * chronic_anemia[pat]
        + 1.0 * dis[:, CKD]
        + 2.0 * is_reason["gi_bleed"]
        + 0.5 * is_reason["sepsis"]
        + 0.3 * ~male[pat]
        + 0.2 * (age_a - 65) / 16
    )
    dis[:, ANEMIA] = rng.random(n_adm) < _sigmoid(anemia_logit)
    anemia_type = pick(rng, (0.55, 0.0, 0.0, 0.33, 0.12), n_adm)
    anemia_type[dis[:, CKD] & (rng.random(n_adm) < 0.5)] = AN_CKD
    anemia_type[is_reason["gi_bleed"]] = AN_ACUTE

    # Timeline: first admission in a shifted year, then gaps; length of stay grows with severity.
    los = np.clip(rng.lognormal(np.log(6.0 * severity**0.6), 0.8), 0.25, 120) * DAY
    gap = rng.lognormal(np.log(200), 1.0, n_adm) * DAY + 2 * DAY
    start_year = rng.uniform(2105, 2195, n_pat) if fmt == "mimic3" else rng.integers(2110, 2200, n_pat) + 0.0
    step = np.where(later, np.roll(los, 1) + gap, 0.0)
    cum = np.cumsum(step)
    admit = ((start_year - 1970) * YEAR)[pat] + rng.uniform(0, 0.9 * YEAR, n_pat)[pat] + cum - cum[first][pat]
    admit = (admit // 60 * 60).astype(np.int64)
    disch = admit + (los // 60 * 60).astype(np.int64)
    via_ed = ~is_reason["cabg"] & (rng.random(n_adm) < 0.8)
    ed_reg = np.where(via_ed, admit - (rng.uniform(1, 9, n_adm) * 3600 // 60 * 60).astype(np.int64), -1)

    # Death only at a patient's last admission; out-of-hospital deaths afterwards.
    last = np.append(first[1:] - 1, n_adm - 1)
    is_last = np.zeros(n_adm, bool)
    is_last[last] = True
    died = is_last & (
        rng.random(n_adm)
        < _sigmoid(
            -2.2 + 1.2 * np.log(severity) + 0.035 * (age_a - 65) + 0.4 * dis[:, HF] + 0.3 * dis[:, CKD]
        )
    )
    later_death = ~died[last] & (rng.random(n_pat) < _sigmoid(-1.4 + 0.04 * (age0 - 65)))
    dod = np.where(died[last], disch[last], -1)
    dod = np.where(later_death, disch[last] + (rng.uniform(5, 1500, n_pat) * DAY).astype(np.int64), dod)
    dod = np.where(dod >= 0, dod // DAY * DAY, -1)
    dod_hosp = died[last]
    dod_ssn = (dod >= 0) & (later_death | (rng.random(n_pat) < 0.7))

    birth = admit[first] - (age0 * YEAR).astype(np.int64)
    if fmt == "mimic3":  # MIMIC-III hides ages over 89 by moving the date of birth 300 years back
        birth = np.where(age0 > 89, admit[first] - ((300 + rng.random(n_pat)) * YEAR).astype(np.int64), birth)
    dob = birth // DAY * DAY

    # MIMIC-IV: real year group of the anchor year; ICD-10 from October 2015 on.
    year_group = pick(rng, (0.15, 0.2, 0.25, 0.25, 0.15), n_pat)
    real_year = (2008 + 3 * year_group + rng.uniform(0, 3, n_pat))[pat] + (admit - admit[first][pat]) / YEAR
    icd10 = (real_year >= 2015.75) if fmt == "mimic4" else np.zeros(n_adm, bool)

    ventilated = rng.random(n_adm) < _sigmoid(
        -2.2
        + 2.0 * np.log(severity)
        + 2.5 * is_reason["resp_failure"]
        + 0.3 * dis[:, COPD]
        + 1.0 * is_reason["cabg"]
    )
    return Cohort(
        subject_id=subject_id,
        male=male,
        age0=age0,
        dob=dob,
        dod=dod,
        dod_hosp=dod_hosp,
        dod_ssn=dod_ssn,
        year_group=year_group,
        ckd_stage=ckd_stage,
        warfarin=warfarin,
        statin=statin,
        smoker=smoker,
        first=first,
        pat=pat,
        hadm_id=hadm_id,
        admit=admit,
        disch=disch,
        ed_reg=ed_reg,
        died=died,
        reason=reason,
        severity=severity,
        ventilated=ventilated,
        dis=dis,
        anemia_type=anemia_type,
        icd10=icd10,
        has_note=rng.random(n_adm) < note_fraction,
    )
