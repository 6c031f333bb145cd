"""The ten target diseases and the reasons for admission: what the population model draws from.

Diseases are indexed in the order of the shipped diseases.toml; docs/synthetic.md documents the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

# Data tables below keep one entry per line; the formatter would spread each over several.
# fmt: off
DISEASES = (
    "hypertension",
    "coronary_artery_disease",
    "atrial_fibrillation",
    "heart_failure",
    "diabetes",
    "hyperlipidemia",
    "chronic_kidney_disease",
    "acute_kidney_injury",
    "copd",
    "anemia",
)
HTN, CAD, AFIB, HF, DM, HLD, CKD, AKI, COPD, ANEMIA = range(10)
CHRONIC = (HTN, DM, HLD, CAD, CKD, AFIB, HF, COPD)  # drawn in this order: later ones depend on earlier

# Logistic intercepts calibrated (fixed-point iteration on 200k admissions) so admission-level prevalence
# hits the targets documented in docs/synthetic.md.
INTERCEPT = {
    HTN: -0.28,
    DM: -1.34,
    HLD: -1.49,
    CAD: -2.01,
    CKD: -3.17,
    AFIB: -1.56,
    HF: -2.24,
    COPD: -3.39,
    AKI: -2.55,
    ANEMIA: -2.21,
}
ONSET = 0.04  # chance that an absent chronic disease appears by a later admission

CKD_STAGES = (  # (ICD-9, ICD-10, share of CKD patients, creatinine multiple of the healthy baseline)
    ("5859", "N189", 0.2, 1.4),
    ("5853", "N183", 0.45, 1.6),
    ("5854", "N184", 0.2, 2.2),
    ("5856", "N186", 0.15, 4.0),
)
ESRD = 3
ANEMIA_TYPES = (  # (ICD-9, ICD-10, MCV shift in fL)
    ("2859", "D649", -3.0),  # unspecified
    ("2851", "D62", 0.0),  # acute blood loss
    ("28521", "D631", 0.0),  # anemia of CKD
    ("2800", "D509", -8.0),  # iron deficiency
    ("2811", "D519", 9.0),  # B12 deficiency
)
AN_ACUTE, AN_CKD, AN_IRON, AN_B12 = range(1, 5)


@dataclass(frozen=True)
class Reason:
    """Why a patient is admitted: ADMISSIONS.DIAGNOSIS text, primary codes, complaint, severity."""

    name: str
    diagnosis: str
    codes: tuple[tuple[str, str], ...]  # (ICD-9, ICD-10) primary codes, SEQ_NUM 1..
    complaints: tuple[str, ...]
    title: str  # as written mid-sentence in a note
    weight: float
    severity: float
    needs: int | None = None  # disease the reason implies (its primary code encodes it)


REASONS = (
    Reason("sepsis", "SEPSIS", (("0389", "A419"),), ("fever", "hypotension", "fevers and chills"), "sepsis", 0.16, 1.6),
    Reason("pneumonia", "PNEUMONIA", (("486", "J189"),), ("cough and fever", "shortness of breath", "productive cough"), "community acquired pneumonia", 0.11, 1.1),
    Reason("gi_bleed", "GASTROINTESTINAL BLEED", (("5789", "K922"),), ("melena", "bright red blood per rectum", "hematemesis"), "upper GI bleed", 0.09, 1.0),
    Reason("resp_failure", "RESPIRATORY DISTRESS", (("51881", "J9601"),), ("respiratory distress", "hypoxia", "shortness of breath"), "hypoxic respiratory failure", 0.07, 1.8),
    Reason("chf", "CONGESTIVE HEART FAILURE", (("42833", "I5033"),), ("shortness of breath", "dyspnea on exertion", "leg swelling"), "acute on chronic heart failure exacerbation", 0.45, 1.0, HF),
    Reason("nstemi", "CHEST PAIN", (("41071", "I214"),), ("chest pain", "chest pressure", "substernal chest pain"), "NSTEMI", 0.25, 1.0, CAD),
    Reason("cabg", "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA", (("41401", "I2510"),), ("exertional angina", "chest pressure with exertion"), "coronary artery disease s/p CABG", 0.12, 1.3, CAD),
    Reason("stroke", "STROKE/TIA", (("43491", "I639"),), ("left sided weakness", "slurred speech", "right facial droop"), "acute ischemic stroke", 0.07, 0.8),
    Reason("hip_fracture", "S/P FALL", (("82021", "S72001A"),), ("s/p fall", "hip pain after fall"), "hip fracture s/p fall", 0.07, 0.7),
    Reason("ams", "ALTERED MENTAL STATUS", (("78097", "R4182"), ("5990", "N390")), ("confusion", "altered mental status"), "altered mental status due to urinary tract infection", 0.06, 0.8),
    Reason("copd", "COPD EXACERBATION", (("49121", "J441"),), ("shortness of breath", "wheezing", "increased sputum production"), "COPD exacerbation", 0.5, 1.0, COPD),
    Reason("dka", "DIABETIC KETOACIDOSIS", (("25012", "E1110"),), ("nausea and vomiting", "hyperglycemia"), "diabetic ketoacidosis", 0.06, 1.2, DM),
    Reason("pancreatitis", "PANCREATITIS", (("5770", "K859"),), ("abdominal pain",), "acute pancreatitis", 0.03, 1.1),
    Reason("syncope", "SYNCOPE", (("7802", "R55"),), ("syncope", "lightheadedness"), "syncope", 0.04, 0.5),
    Reason("etoh", "ALCOHOL WITHDRAWAL", (("29181", "F10239"),), ("tremors", "alcohol withdrawal"), "alcohol withdrawal", 0.04, 0.9),
)
REASON_INDEX = {r.name: i for i, r in enumerate(REASONS)}
REASON_BOOST = {  # log-odds added to a reason's weight when the patient has the disease
    ("pneumonia", COPD): 0.7,
    ("resp_failure", COPD): 0.8,
    ("resp_failure", HF): 0.4,
    ("gi_bleed", AFIB): 0.5,
    ("stroke", AFIB): 0.7,
    ("syncope", AFIB): 0.4,
    ("sepsis", DM): 0.3,
    ("sepsis", CKD): 0.3,
}
INFECTION = ("sepsis", "pneumonia", "ams")
# fmt: on
