"""The true value of every lab test at every draw: physiology, disease effects, acute illness and noise."""

from __future__ import annotations

import numpy as np

from medfuse.data.synth.conditions import (
    AFIB,
    AKI,
    AN_B12,
    AN_IRON,
    ANEMIA,
    ANEMIA_TYPES,
    CAD,
    CKD,
    CKD_STAGES,
    COPD,
    DM,
    HF,
    HLD,
    HTN,
    REASON_INDEX,
)
from medfuse.data.synth.lab_draws import Draws
from medfuse.data.synth.lab_tests import LAB_INDEX, LABS, OUT, SPECIMEN_TYPES
from medfuse.data.synth.population import Cohort, pick


def lab_values(
    c: Cohort, d: Draws, p0: int, p1: int, a0: int, a1: int, rng: np.random.Generator
) -> np.ndarray:
    """True values of every lab test at every draw, [draws, tests]: healthy baseline, patient effect,
    disease effects, acute illness (in hospital only) and measurement noise."""
    n = len(d.adm)
    stay = d.adm - a0  # admission within the chunk
    patient_effect = rng.standard_normal((p1 - p0, len(LABS)))[c.pat[d.adm] - p0]

    def z(key: str) -> np.ndarray:  # stable per-patient deviation of a test
        return patient_effect[:, LAB_INDEX[key]]

    def e() -> np.ndarray:  # measurement and day-to-day noise
        return rng.standard_normal(n)

    dis = c.dis[d.adm].astype(float)
    has = {k: dis[:, k] for k in range(10)}
    acute = (d.kind != OUT).astype(float)
    male = c.male[c.pat[d.adm]]
    age = c.age[d.adm]
    sev = acute * np.log1p(c.severity[d.adm])
    reason = {name: acute * (c.reason[d.adm] == i) for name, i in REASON_INDEX.items()}
    infection = reason["sepsis"] + reason["pneumonia"] + reason["ams"]
    f = d.frac
    stage = c.ckd_stage[c.pat[d.adm]]
    ckd_mult = 1 + has[CKD] * (np.array([s[3] for s in CKD_STAGES])[stage] - 1)
    # Uncoded conditions blur the lab signal: impaired renal function without a CKD code, prediabetes,
    # anticoagulation for other reasons; per-stay effects add overlap between positives and negatives.
    person = c.pat[d.adm] - p0
    hidden_renal = (1 - has[CKD]) * np.where(rng.random(p1 - p0) < 0.2, rng.uniform(0.3, 1.0, p1 - p0), 0)[
        person
    ]
    prediabetes = (1 - has[DM]) * (rng.random(p1 - p0) < 0.12)[person]
    warfarin = np.maximum(has[AFIB] * c.warfarin[c.pat[d.adm]], (rng.random(p1 - p0) < 0.04)[person])
    thiazide = has[HTN] * (rng.random(p1 - p0) < 0.4)[person]  # lowers potassium and sodium
    stay_stress = acute * rng.normal(0, 0.12, a1 - a0)[stay]
    stay_blood_loss = acute * np.abs(rng.normal(0, 1.0, a1 - a0))[stay]
    statin = np.maximum(has[HLD], has[CAD]) * c.statin[c.pat[d.adm]]
    anemia_mcv = has[ANEMIA] * np.array([t[2] for t in ANEMIA_TYPES])[c.anemia_type[d.adm]]
    # AKI: creatinine rises to a peak at a random point of the stay and recovers; some non-AKI stays
    # get a mild pre-renal bump so that the creatinine curve alone does not give the label away.
    peak_at = rng.uniform(0.15, 0.6, a1 - a0)[stay]
    aki_size = rng.lognormal(np.log(0.6), 0.5, a1 - a0)[stay] * has[AKI]
    prerenal = (1 - has[AKI]) * np.where(rng.random(a1 - a0) < 0.25, rng.uniform(0.15, 0.6, a1 - a0), 0)[stay]
    bump = acute * np.exp(-(((f - peak_at) / 0.28) ** 2))

    retainer = has[COPD] * c.smoker[c.pat[d.adm]]  # chronic CO2 retention
    v: dict[str, np.ndarray] = {}
    base_cr = np.where(male, 1.0, 0.78) * (1 + 0.004 * (age - 60)) * (1 + 0.12 * has[HTN])
    v["creatinine"] = (
        base_cr
        * (ckd_mult + hidden_renal)
        * np.exp(0.28 * z("creatinine") + 0.09 * e())
        * (1 + (aki_size + prerenal) * bump)
    )
    kidney = np.log(v["creatinine"] / base_cr)
    v["bun"] = 14 * np.exp(
        0.7 * kidney + 0.12 * has[HF] + 0.5 * reason["gi_bleed"] + 0.25 * z("bun") + 0.15 * e()
    )
    v["potassium"] = 4.1 + 0.45 * kidney - 0.4 * thiazide + 0.2 * z("potassium") + 0.4 * e()
    v["sodium"] = 139 - 1.5 * has[HF] - 1.5 * thiazide - 1.2 * sev + 1.8 * z("sodium") + 2.8 * e()
    v["chloride"] = v["sodium"] - 37 + 1.0 * z("chloride") + 1.5 * e()
    v["bicarbonate"] = (
        25
        - 1.2 * kidney
        - 2.5 * (reason["sepsis"] + reason["dka"] * 4) * (1 - 0.6 * f)
        + 1.2 * retainer
        + 1.5 * z("bicarbonate")
        + 1.8 * e()
    )
    v["anion_gap"] = v["sodium"] - v["chloride"] - v["bicarbonate"]
    glycemia = has[DM] * (0.3 + 0.2 * z("hba1c")) + 0.12 * prediabetes
    v["glucose"] = 100 * np.exp(
        glycemia + 0.08 * sev + stay_stress + 1.1 * reason["dka"] * (1 - f) + 0.08 * z("glucose") + 0.16 * e()
    )
    v["calcium"] = 9.0 - 0.35 * sev - 0.15 * kidney + 0.25 * z("calcium") + 0.3 * e()
    v["magnesium"] = 2.0 + 0.08 * kidney + 0.12 * z("magnesium") + 0.18 * e()
    v["phosphate"] = 3.4 * np.exp(0.2 * kidney + 0.15 * z("phosphate") + 0.15 * e())

    v["hemoglobin"] = np.clip(
        np.where(male, 14.4, 12.9)
        - has[ANEMIA] * 1.3
        - 0.4 * np.minimum(kidney, 1.5)
        - acute * (0.8 + 1.0 * f + 0.5 * sev)
        - stay_blood_loss
        - 1.2 * reason["gi_bleed"] * (1 - 0.5 * f)
        + 1.2 * z("hemoglobin")
        + 0.35 * e(),
        3.5,
        21,
    )
    v["hematocrit"] = 3.0 * v["hemoglobin"] + 0.8 * e()
    v["mcv"] = 90 + anemia_mcv + 3.5 * z("mcv") + 1.0 * e()
    v["rbc"] = v["hematocrit"] / v["mcv"] * 10
    v["mch"] = v["hemoglobin"] / v["rbc"] * 10
    v["mchc"] = v["hemoglobin"] / v["hematocrit"] * 100
    v["rdw"] = 13.6 + 0.7 * has[ANEMIA] + 0.3 * kidney + 0.5 * acute + 0.8 * np.abs(z("rdw")) + 0.3 * e()
    v["wbc"] = 8.0 * np.exp(0.55 * infection * sev + 0.1 * sev + 0.25 * z("wbc") + 0.2 * e())
    v["platelets"] = 230 * np.exp(-0.35 * reason["sepsis"] * sev + 0.28 * z("platelets") + 0.1 * e())
    v["inr"] = 1.1 * np.exp(
        warfarin * np.log(2.3) + 0.08 * sev + 0.06 * z("inr") + 0.1 * e() * (1 + warfarin)
    )
    v["pt"] = 11.3 * v["inr"] + 0.3 * e()
    heparin = acute * (rng.random(a1 - a0) < 0.15)[stay]
    v["ptt"] = 30 * np.exp(0.13 * z("ptt") + 0.08 * e() + heparin * rng.uniform(0.3, 1.7, n))
    v["alt"] = 24 * np.exp(0.45 * z("alt") + 0.25 * e() + 0.5 * reason["sepsis"] * sev)
    v["ast"] = 28 * np.exp(0.45 * z("ast") + 0.25 * e() + 0.5 * reason["sepsis"] * sev)
    v["alk_phos"] = 85 * np.exp(0.3 * z("alk_phos") + 0.1 * e())
    v["bilirubin"] = 0.6 * np.exp(0.45 * z("bilirubin") + 0.2 * e() + 0.3 * sev)
    v["albumin"] = 3.8 - 0.45 * sev - 0.15 * kidney + 0.25 * z("albumin") + 0.15 * e()
    v["ldh"] = 210 * np.exp(0.3 * z("ldh") + 0.15 * e() + 0.3 * sev)
    v["neutrophils"] = np.clip(64 + 14 * infection + 5 * z("neutrophils") + 4 * e(), 20, 97)
    v["lymphocytes"] = np.clip((100 - v["neutrophils"]) * 0.7 + 2 * e(), 1, 70)
    v["monocytes"] = np.clip(6 + 1.5 * z("monocytes") + 1.5 * e(), 0.5, 20)
    v["eosinophils"] = np.clip(1.5 + 0.8 * z("eosinophils") + 0.6 * e(), 0, 12)
    v["basophils"] = np.clip(0.3 + 0.15 * z("basophils") + 0.15 * e(), 0, 2)

    v["pco2"] = 40 + 4 * retainer + 4 * reason["copd"] + 5 * reason["resp_failure"] + 3 * z("pco2") + 5 * e()
    v["ph"] = (
        7.40
        - 0.045 * sev
        - 0.1 * reason["dka"] * (1 - f)
        - 0.008 * (v["pco2"] - 40) * (1 - 0.6 * has[COPD])
        + 0.03 * e()
    )
    v["po2"] = 95 * np.exp(0.35 * e() - 0.2 * reason["resp_failure"])
    v["base_excess"] = v["bicarbonate"] - 24 + 1.5 * e()
    v["total_co2"] = v["bicarbonate"] + 1.5 + 0.8 * e()
    v["lactate"] = 1.3 * np.exp(0.8 * reason["sepsis"] * sev * (1 - 0.7 * f) + 0.15 * sev + 0.35 * e())
    v["specimen_type"] = pick(rng, SPECIMEN_TYPES[1], n).astype(float)

    mi = reason["nstemi"] * np.exp(-f / 0.25)
    v["troponin_t"] = 0.004 * np.exp(
        1.4 * has[CAD] * np.abs(z("troponin_t")) + 4.2 * mi + 1.0 * has[CKD] + 0.6 * has[HF] + 0.8 * e()
    )
    v["ck"] = 110 * np.exp(1.3 * mi + 0.5 * z("ck") + 0.3 * e())
    v["ck_mb"] = 2.5 * np.exp(2.0 * mi + 0.4 * e())
    v["ntprobnp"] = 250 * np.exp(
        0.03 * (age - 65)
        + 1.6 * has[HF]
        + 0.8 * kidney
        + 0.5 * has[AFIB]
        + 0.5 * sev
        + 0.8 * z("ntprobnp")
        + 0.6 * e()
    )
    v["hba1c"] = np.clip(5.5 + has[DM] * (1.3 + 1.1 * z("hba1c")) + 0.5 * prediabetes + 0.3 * e(), 4.0, 16.0)
    v["cholesterol"] = (
        175
        + has[HLD] * 60 * (1 - 0.7 * statin)
        - 25 * statin * (1 - has[HLD])
        + 25 * z("cholesterol")
        + 8 * e()
    )
    v["hdl"] = np.clip(50 - 5 * has[DM] - 5 * male + 10 * z("hdl") + 3 * e(), 15, 110)
    v["triglycerides"] = 115 * np.exp(0.35 * has[DM] + 0.3 * has[HLD] + 0.4 * z("triglycerides") + 0.2 * e())
    v["ldl"] = np.maximum(v["cholesterol"] - v["hdl"] - v["triglycerides"] / 5, 15)
    iron_def = has[ANEMIA] * (c.anemia_type[d.adm] == AN_IRON)
    inflamed = np.maximum(has[CKD], acute * np.minimum(sev, 1))
    v["ferritin"] = 120 * np.exp(
        -2.0 * iron_def + 0.9 * inflamed * (1 - iron_def) + 0.5 * z("ferritin") + 0.2 * e()
    )
    v["iron"] = 75 * np.exp(-1.0 * iron_def - 0.4 * inflamed + 0.25 * z("iron") + 0.2 * e())
    v["tibc"] = 300 * np.exp(0.35 * iron_def - 0.15 * inflamed + 0.1 * z("tibc") + 0.08 * e())
    v["transferrin"] = 0.75 * v["tibc"] + 6 * e()
    b12_def = has[ANEMIA] * (c.anemia_type[d.adm] == AN_B12)
    v["vitamin_b12"] = 480 * np.exp(-1.3 * b12_def + 0.3 * z("vitamin_b12") + 0.1 * e())
    v["vancomycin"] = 15 * np.exp(0.35 * has[CKD] + 0.35 * e())
    return np.column_stack([v[lab.key] for lab in LABS])
