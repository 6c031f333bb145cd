"""ICD coding of admissions: the DIAGNOSES_ICD rows of each admission and the labels they encode."""

from __future__ import annotations

import numpy as np

from medfuse.data.diseases import load_diseases
from medfuse.data.synth.conditions import (
    AFIB,
    AKI,
    ANEMIA,
    ANEMIA_TYPES,
    CAD,
    CKD,
    CKD_STAGES,
    COPD,
    DISEASES,
    DM,
    ESRD,
    HF,
    HLD,
    HTN,
    REASONS,
)
from medfuse.data.synth.population import Cohort

# fmt: off
# (ICD-9, ICD-10, weight) options per disease. Combination codes (hypertensive CKD, diabetic CKD,
# hypertensive heart disease with HF) are chosen in diagnosis_codes.
_CODES: dict[int, tuple[tuple[str, str, float], ...]] = {
    HTN: (("4019", "I10", 1.0),),
    CAD: (("41401", "I2510", 0.8), ("41400", "I2510", 0.1), ("412", "I252", 0.1)),
    AFIB: (("42731", "I4891", 0.55), ("42731", "I480", 0.3), ("42731", "I482", 0.08), ("42732", "I4892", 0.07)),
    HF: (
        ("4280", "I509", 0.4),
        ("42832", "I5032", 0.2),
        ("42822", "I5022", 0.15),
        ("42833", "I5033", 0.15),
        ("42823", "I5023", 0.1),
    ),
    DM: (("25000", "E119", 0.7), ("25002", "E1165", 0.15), ("25060", "E1142", 0.15)),
    HLD: (("2724", "E785", 0.8), ("2720", "E7800", 0.15), ("2722", "E782", 0.05)),
    AKI: (("5849", "N179", 0.85), ("5845", "N170", 0.15)),
    COPD: (("496", "J449", 0.6), ("4928", "J439", 0.2), ("49121", "J441", 0.2)),
}

# Unrelated secondary codes (ICD-9, ICD-10, weight); none matches a disease prefix (checked by the tests).
OTHER_CODES = (
    ("2449", "E039", 8),
    ("53081", "K219", 8),
    ("311", "F329", 6),
    ("2761", "E871", 6),
    ("2762", "E872", 6),
    ("2768", "E876", 5),
    ("2767", "E875", 4),
    ("2875", "D696", 5),
    ("5119", "J90", 4),
    ("32723", "G4733", 4),
    ("V1582", "Z87891", 5),
    ("2749", "M109", 3),
    ("4240", "I340", 3),
    ("3051", "F17210", 3),
    ("30000", "F419", 4),
    ("7907", "R7881", 2),
    ("5180", "J9811", 3),
    ("27800", "E669", 4),
    ("2930", "F05", 3),
    ("4439", "I739", 3),
    ("73300", "M810", 3),
    ("70703", "L89159", 2),
    ("5990", "N390", 4),
)
_LINKED_CODES = (  # (disease, ICD-9, ICD-10, chance): status codes that accompany a disease
    (AFIB, "V5861", "Z7901", 0.35),
    (DM, "V5867", "Z794", 0.3),
    (CAD, "V4581", "Z951", 0.15),
)
_SEPSIS_EXTRA = (("99592", "R6520", 0.4), ("78552", "R6521", 0.25))
# fmt: on


def diagnosis_codes(c: Cohort, rng: np.random.Generator) -> list[tuple[int, str]]:
    """(admission, code) rows in SEQ_NUM order: reason codes first, then diseases and unrelated codes, shuffled."""
    version = c.icd10.astype(np.int64)  # 0 = ICD-9, 1 = ICD-10
    other_weights = np.array([w for *_, w in OTHER_CODES], float)
    n_other = rng.poisson(7.0, len(c.pat))
    draws = rng.random((len(c.pat), 16))
    rows: list[tuple[int, str]] = []
    for a in range(len(c.pat)):
        v = version[a]
        u = iter(draws[a])
        reason = REASONS[c.reason[a]]
        head = [pair[v] for pair in reason.codes]
        if reason.name == "sepsis":
            head += [code[v] for code in _SEPSIS_EXTRA if next(u) < code[2]]
        dis = c.dis[a]
        covered = {reason.needs}
        tail: list[str] = []
        stage = c.ckd_stage[c.pat[a]]
        if dis[HTN] and dis[CKD]:
            tail.append((("40390", "I129"), ("40391", "I120"))[int(stage == ESRD)][v])
        elif dis[HTN] and dis[HF] and next(u) < 0.2:
            tail.append(("40291", "I110")[v])
        elif dis[HTN]:
            tail.append(_CODES[HTN][0][v])
        if dis[CKD]:
            tail.append(CKD_STAGES[stage][v])
        if dis[DM] and dis[CKD] and reason.needs != DM and next(u) < 0.5:
            tail.append(("25040", "E1122")[v])
            covered.add(DM)
        if dis[ANEMIA]:
            tail.append(ANEMIA_TYPES[c.anemia_type[a]][v])
        covered.update((HTN, CKD, ANEMIA))
        for d, options in _CODES.items():
            if dis[d] and d not in covered:
                weights = np.array([w for *_, w in options])
                tail.append(options[int(np.searchsorted(np.cumsum(weights) / weights.sum(), next(u)))][v])
        for d, icd9, icd10, chance in _LINKED_CODES:
            if dis[d] and next(u) < chance:
                tail.append((icd9, icd10)[v])
        picks = rng.choice(
            len(OTHER_CODES), size=min(n_other[a], 12), replace=False, p=other_weights / other_weights.sum()
        )
        tail += [OTHER_CODES[i][v] for i in picks]
        tail = [code for code in dict.fromkeys(tail) if code not in head]
        rng.shuffle(tail)
        rows += [(a, code) for code in head + tail]
    return rows


def coded_labels(codes: list[str], adm_of: np.ndarray, icd10: np.ndarray, n_adm: int) -> np.ndarray:
    """Per-admission disease labels from the written codes, matched against the shipped diseases.toml."""
    diseases = load_diseases()
    if tuple(d.name for d in diseases) != DISEASES:
        raise RuntimeError("the shipped diseases.toml no longer matches medfuse.data.synth.DISEASES")
    pairs: dict[tuple[str, bool], int] = {}
    index = np.array(
        [pairs.setdefault((code, bool(icd10[a])), len(pairs)) for a, code in zip(adm_of, codes, strict=True)]
    )
    match = np.array([[code.startswith(d.icd10 if v10 else d.icd9) for d in diseases] for code, v10 in pairs])
    labels = np.zeros((n_adm, len(DISEASES)), bool)
    np.logical_or.at(labels, adm_of, match[index])
    return labels
