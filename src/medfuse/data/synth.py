"""Synthetic hospital written in the raw file layouts of MIMIC-III and MIMIC-IV (``medfuse synth``).

A seeded generative model: patients with one or more admissions, ten target diseases with comorbidity
(chronic ones persist across admissions), ICD-coded diagnoses among unrelated codes, lab panels with
disease effects and real-world quirks, and discharge summaries whose allowed sections carry noisy,
partial evidence while the discharge sections state the answer. docs/synthetic.md documents the model.

Everything streams: cohort tables are drawn up front (a few MB), lab rows and notes are drawn per chunk
of patients with vectorised numpy, formatted to CSV with pyarrow compute kernels and gzip-compressed on a
background thread. Output bytes depend only on ``(fmt, admissions, seed, note_fraction)``.
"""

from __future__ import annotations

import csv
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medfuse.data.diseases import load_diseases

Format = Literal["mimic3", "mimic4"]
Progress = Callable[[str, float], None]

_DAY = 86_400
_YEAR = 365.2425 * _DAY
_CHUNK_PATIENTS = 1000
_GZIP_LEVEL = 1
_NAN = float("nan")

# ----------------------------------------------------------------------------------------------------
# Diseases, in the order of the shipped diseases.toml, and the ICD codes that encode them.
# ----------------------------------------------------------------------------------------------------
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
_CHRONIC = (HTN, DM, HLD, CAD, CKD, AFIB, HF, COPD)  # drawn in this order: later ones depend on earlier

# Logistic intercepts calibrated (fixed-point iteration on 200k admissions) so admission-level prevalence
# hits the targets documented in docs/synthetic.md.
_INTERCEPT = {
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
_ONSET = 0.04  # chance that an absent chronic disease appears by a later admission

# (ICD-9, ICD-10, weight) options per disease. Combination codes (hypertensive CKD, diabetic CKD,
# hypertensive heart disease with HF) are chosen in _diagnosis_codes.
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
_CKD_STAGES = (  # (ICD-9, ICD-10, share of CKD patients, creatinine multiple of the healthy baseline)
    ("5859", "N189", 0.2, 1.4),
    ("5853", "N183", 0.45, 1.6),
    ("5854", "N184", 0.2, 2.2),
    ("5856", "N186", 0.15, 4.0),
)
_ESRD = 3
_ANEMIA_TYPES = (  # (ICD-9, ICD-10, MCV shift in fL)
    ("2859", "D649", -3.0),  # unspecified
    ("2851", "D62", 0.0),  # acute blood loss
    ("28521", "D631", 0.0),  # anemia of CKD
    ("2800", "D509", -8.0),  # iron deficiency
    ("2811", "D519", 9.0),  # B12 deficiency
)
_AN_ACUTE, _AN_CKD, _AN_IRON, _AN_B12 = range(1, 5)

# Unrelated secondary codes (ICD-9, ICD-10, weight); none matches a disease prefix (checked by the tests).
_OTHER_CODES = (
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

# Real titles from D_ICD_DIAGNOSES (MIMIC-III ROW_ID, SHORT_TITLE, LONG_TITLE) for every code written.
_ICD9_TITLES = {
    "0389": (660, "Septicemia NOS", "Unspecified septicemia"),
    "2449": (1799, "Hypothyroidism NOS", "Unspecified acquired hypothyroidism"),
    "25000": (1591, "DMII wo cmp nt st uncntr", "Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled"),
    "25002": (1593, "DMII wo cmp uncntrld", "Diabetes mellitus without mention of complication, type II or unspecified type, uncontrolled"),
    "25012": (1597, "DMII ketoacd uncontrold", "Diabetes with ketoacidosis, type II or unspecified type, uncontrolled"),
    "25040": (1680, "DMII renl nt st uncntrld", "Diabetes with renal manifestations, type II or unspecified type, not stated as uncontrolled"),
    "25060": (2263, "DMII neuro nt st uncntrl", "Diabetes with neurological manifestations, type II or unspecified type, not stated as uncontrolled"),
    "2720": (2743, "Pure hypercholesterolem", "Pure hypercholesterolemia"),
    "2722": (2745, "Mixed hyperlipidemia", "Mixed hyperlipidemia"),
    "2724": (2747, "Hyperlipidemia NEC/NOS", "Other and unspecified hyperlipidemia"),
    "2749": (2770, "Gout NOS", "Gout, unspecified"),
    "2761": (2786, "Hyposmolality", "Hyposmolality and/or hyponatremia"),
    "2762": (2787, "Acidosis", "Acidosis"),
    "2767": (2159, "Hyperpotassemia", "Hyperpotassemia"),
    "2768": (2160, "Hypopotassemia", "Hypopotassemia"),
    "27800": (2186, "Obesity NOS", "Obesity, unspecified"),
    "2800": (2218, "Chr blood loss anemia", "Iron deficiency anemia secondary to blood loss (chronic)"),
    "2811": (2223, "B12 defic anemia NEC", "Other vitamin B12 deficiency anemia"),
    "2851": (3141, "Ac posthemorrhag anemia", "Acute posthemorrhagic anemia"),
    "28521": (3142, "Anemia in chr kidney dis", "Anemia in chronic kidney disease"),
    "2859": (3147, "Anemia NOS", "Anemia, unspecified"),
    "2875": (3169, "Thrombocytopenia NOS", "Thrombocytopenia, unspecified"),
    "2930": (3248, "Delirium d/t other cond", "Delirium due to conditions classified elsewhere"),
    "29181": (3233, "Alcohol withdrawal", "Alcohol withdrawal"),
    "30000": (2624, "Anxiety state NOS", "Anxiety state, unspecified"),
    "3051": (2899, "Tobacco use disorder", "Tobacco use disorder"),
    "311": (3002, "Depressive disorder NEC", "Depressive disorder, not elsewhere classified"),
    "32723": (3119, "Obstructive sleep apnea", "Obstructive sleep apnea (adult)(pediatric)"),
    "40291": (4310, "Hyp ht dis NOS w ht fail", "Unspecified hypertensive heart disease with heart failure"),
    "40390": (4315, "Hy kid NOS w cr kid I-IV", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified"),
    "40391": (4316, "Hyp kid NOS w cr kid V", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage V or end stage renal disease"),
    "4019": (4304, "Hypertension NOS", "Unspecified essential hypertension"),
    "41071": (4357, "Subendo infarct, initial", "Subendocardial infarction, initial episode of care"),
    "412": (4369, "Old myocardial infarct", "Old myocardial infarction"),
    "41400": (4373, "Cor ath unsp vsl ntv/gft", "Coronary atherosclerosis of unspecified type of vessel, native or graft"),
    "41401": (4374, "Crnry athrscl natve vssl", "Coronary atherosclerosis of native coronary artery"),
    "4240": (4423, "Mitral valve disorder", "Mitral valve disorders"),
    "42731": (4462, "Atrial fibrillation", "Atrial fibrillation"),
    "42732": (4463, "Atrial flutter", "Atrial flutter"),
    "4280": (4473, "CHF NOS", "Congestive heart failure, unspecified"),
    "42822": (4477, "Chr systolic hrt failure", "Chronic systolic heart failure"),
    "42823": (4478, "Ac on chr syst hrt fail", "Acute on chronic systolic heart failure"),
    "42832": (4481, "Chr diastolic hrt fail", "Chronic diastolic heart failure"),
    "42833": (4482, "Ac on chr diast hrt fail", "Acute on chronic diastolic heart failure"),
    "43491": (5053, "Crbl art ocl NOS w infrc", "Cerebral artery occlusion, unspecified with cerebral infarction"),
    "4439": (4244, "Periph vascular dis NOS", "Peripheral vascular disease, unspecified"),
    "486": (5528, "Pneumonia, organism NOS", "Pneumonia, organism unspecified"),
    "49121": (5545, "Obs chr bronc w(ac) exac", "Obstructive chronic bronchitis with (acute) exacerbation"),
    "4928": (5096, "Emphysema NEC", "Other emphysema"),
    "496": (5123, "Chr airway obstruct NEC", "Chronic airway obstruction, not elsewhere classified"),
    "5119": (5150, "Pleural effusion NOS", "Unspecified pleural effusion"),
    "5180": (5269, "Pulmonary collapse", "Pulmonary collapse"),
    "51881": (5279, "Acute respiratry failure", "Acute respiratory failure"),
    "53081": (6013, "Esophageal reflux", "Esophageal reflux"),
    "5770": (5861, "Acute pancreatitis", "Acute pancreatitis"),
    "5789": (5868, "Gastrointest hemorr NOS", "Hemorrhage of gastrointestinal tract, unspecified"),
    "5845": (5904, "Ac kidny fail, tubr necr", "Acute kidney failure with lesion of tubular necrosis"),
    "5849": (5908, "Acute kidney failure NOS", "Acute kidney failure, unspecified"),
    "5853": (5911, "Chr kidney dis stage III", "Chronic kidney disease, Stage III (moderate)"),
    "5854": (5912, "Chr kidney dis stage IV", "Chronic kidney disease, Stage IV (severe)"),
    "5856": (5914, "End stage renal disease", "End stage renal disease"),
    "5859": (5915, "Chronic kidney dis NOS", "Chronic kidney disease, unspecified"),
    "5990": (6376, "Urin tract infection NOS", "Urinary tract infection, site not specified"),
    "70703": (8113, "Pressure ulcer, low back", "Pressure ulcer, lower back"),
    "73300": (9986, "Osteoporosis NOS", "Osteoporosis, unspecified"),
    "7802": (8964, "Syncope and collapse", "Syncope and collapse"),
    "78097": (8997, "Altered mental status", "Altered mental status"),
    "78552": (12991, "Septic shock", "Septic shock"),
    "7907": (10023, "Bacteremia", "Bacteremia"),
    "82021": (6907, "Intertrochanteric fx-cl", "Closed fracture of intertrochanteric section of neck of femur"),
    "99592": (11404, "Severe sepsis", "Severe sepsis"),
    "V1582": (10094, "History of tobacco use", "Personal history of tobacco use"),
    "V4581": (10140, "Aortocoronary bypass", "Aortocoronary bypass status"),
    "V5861": (12792, "Long-term use anticoagul", "Long-term (current) use of anticoagulants"),
    "V5867": (12798, "Long-term use of insulin", "Long-term (current) use of insulin"),
}
_ICD10_TITLES = {
    "A419": "Sepsis, unspecified organism",
    "D509": "Iron deficiency anemia, unspecified",
    "D519": "Vitamin B12 deficiency anemia, unspecified",
    "D62": "Acute posthemorrhagic anemia",
    "D631": "Anemia in chronic kidney disease",
    "D649": "Anemia, unspecified",
    "D696": "Thrombocytopenia, unspecified",
    "E039": "Hypothyroidism, unspecified",
    "E1110": "Type 2 diabetes mellitus with ketoacidosis without coma",
    "E1122": "Type 2 diabetes mellitus with diabetic chronic kidney disease",
    "E1142": "Type 2 diabetes mellitus with diabetic polyneuropathy",
    "E1165": "Type 2 diabetes mellitus with hyperglycemia",
    "E119": "Type 2 diabetes mellitus without complications",
    "E669": "Obesity, unspecified",
    "E7800": "Pure hypercholesterolemia, unspecified",
    "E782": "Mixed hyperlipidemia",
    "E785": "Hyperlipidemia, unspecified",
    "E871": "Hypo-osmolality and hyponatremia",
    "E872": "Acidosis",
    "E875": "Hyperkalemia",
    "E876": "Hypokalemia",
    "F05": "Delirium due to known physiological condition",
    "F10239": "Alcohol dependence with withdrawal, unspecified",
    "F17210": "Nicotine dependence, cigarettes, uncomplicated",
    "F329": "Major depressive disorder, single episode, unspecified",
    "F419": "Anxiety disorder, unspecified",
    "G4733": "Obstructive sleep apnea (adult) (pediatric)",
    "I10": "Essential (primary) hypertension",
    "I110": "Hypertensive heart disease with heart failure",
    "I120": "Hypertensive chronic kidney disease with stage 5 chronic kidney disease or end stage renal disease",
    "I129": "Hypertensive chronic kidney disease with stage 1 through stage 4 chronic kidney disease, or unspecified chronic kidney disease",
    "I214": "Non-ST elevation (NSTEMI) myocardial infarction",
    "I2510": "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    "I252": "Old myocardial infarction",
    "I340": "Nonrheumatic mitral (valve) insufficiency",
    "I480": "Paroxysmal atrial fibrillation",
    "I482": "Chronic atrial fibrillation",
    "I4891": "Unspecified atrial fibrillation",
    "I4892": "Unspecified atrial flutter",
    "I5022": "Chronic systolic (congestive) heart failure",
    "I5023": "Acute on chronic systolic (congestive) heart failure",
    "I5032": "Chronic diastolic (congestive) heart failure",
    "I5033": "Acute on chronic diastolic (congestive) heart failure",
    "I509": "Heart failure, unspecified",
    "I639": "Cerebral infarction, unspecified",
    "I739": "Peripheral vascular disease, unspecified",
    "J189": "Pneumonia, unspecified organism",
    "J439": "Emphysema, unspecified",
    "J441": "Chronic obstructive pulmonary disease with (acute) exacerbation",
    "J449": "Chronic obstructive pulmonary disease, unspecified",
    "J90": "Pleural effusion, not elsewhere classified",
    "J9601": "Acute respiratory failure with hypoxia",
    "J9811": "Atelectasis",
    "K219": "Gastro-esophageal reflux disease without esophagitis",
    "K859": "Acute pancreatitis, unspecified",
    "K922": "Gastrointestinal hemorrhage, unspecified",
    "L89159": "Pressure ulcer of sacral region, unspecified stage",
    "M109": "Gout, unspecified",
    "M810": "Age-related osteoporosis without current pathological fracture",
    "N170": "Acute kidney failure with tubular necrosis",
    "N179": "Acute kidney failure, unspecified",
    "N183": "Chronic kidney disease, stage 3 (moderate)",
    "N184": "Chronic kidney disease, stage 4 (severe)",
    "N186": "End stage renal disease",
    "N189": "Chronic kidney disease, unspecified",
    "N390": "Urinary tract infection, site not specified",
    "R4182": "Altered mental status, unspecified",
    "R55": "Syncope and collapse",
    "R6520": "Severe sepsis without septic shock",
    "R6521": "Severe sepsis with septic shock",
    "R7881": "Bacteremia",
    "S72001A": "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture",
    "Z7901": "Long term (current) use of anticoagulants",
    "Z794": "Long term (current) use of insulin",
    "Z87891": "Personal history of nicotine dependence",
    "Z951": "Presence of aortocoronary bypass graft",
}


@dataclass(frozen=True)
class _Reason:
    """Why a patient is admitted: ADMISSIONS.DIAGNOSIS text, primary codes, complaint, severity."""

    name: str
    diagnosis: str
    codes: tuple[tuple[str, str], ...]  # (ICD-9, ICD-10) primary codes, SEQ_NUM 1..
    complaints: tuple[str, ...]
    title: str  # as written mid-sentence in a note
    weight: float
    severity: float
    needs: int | None = None  # disease the reason implies (its primary code encodes it)


_REASONS = (
    _Reason("sepsis", "SEPSIS", (("0389", "A419"),), ("fever", "hypotension", "fevers and chills"), "sepsis", 0.16, 1.6),
    _Reason("pneumonia", "PNEUMONIA", (("486", "J189"),), ("cough and fever", "shortness of breath", "productive cough"), "community acquired pneumonia", 0.11, 1.1),
    _Reason("gi_bleed", "GASTROINTESTINAL BLEED", (("5789", "K922"),), ("melena", "bright red blood per rectum", "hematemesis"), "upper GI bleed", 0.09, 1.0),
    _Reason("resp_failure", "RESPIRATORY DISTRESS", (("51881", "J9601"),), ("respiratory distress", "hypoxia", "shortness of breath"), "hypoxic respiratory failure", 0.07, 1.8),
    _Reason("chf", "CONGESTIVE HEART FAILURE", (("42833", "I5033"),), ("shortness of breath", "dyspnea on exertion", "leg swelling"), "acute on chronic heart failure exacerbation", 0.45, 1.0, HF),
    _Reason("nstemi", "CHEST PAIN", (("41071", "I214"),), ("chest pain", "chest pressure", "substernal chest pain"), "NSTEMI", 0.25, 1.0, CAD),
    _Reason("cabg", "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA", (("41401", "I2510"),), ("exertional angina", "chest pressure with exertion"), "coronary artery disease s/p CABG", 0.12, 1.3, CAD),
    _Reason("stroke", "STROKE/TIA", (("43491", "I639"),), ("left sided weakness", "slurred speech", "right facial droop"), "acute ischemic stroke", 0.07, 0.8),
    _Reason("hip_fracture", "S/P FALL", (("82021", "S72001A"),), ("s/p fall", "hip pain after fall"), "hip fracture s/p fall", 0.07, 0.7),
    _Reason("ams", "ALTERED MENTAL STATUS", (("78097", "R4182"), ("5990", "N390")), ("confusion", "altered mental status"), "altered mental status due to urinary tract infection", 0.06, 0.8),
    _Reason("copd", "COPD EXACERBATION", (("49121", "J441"),), ("shortness of breath", "wheezing", "increased sputum production"), "COPD exacerbation", 0.5, 1.0, COPD),
    _Reason("dka", "DIABETIC KETOACIDOSIS", (("25012", "E1110"),), ("nausea and vomiting", "hyperglycemia"), "diabetic ketoacidosis", 0.06, 1.2, DM),
    _Reason("pancreatitis", "PANCREATITIS", (("5770", "K859"),), ("abdominal pain",), "acute pancreatitis", 0.03, 1.1),
    _Reason("syncope", "SYNCOPE", (("7802", "R55"),), ("syncope", "lightheadedness"), "syncope", 0.04, 0.5),
    _Reason("etoh", "ALCOHOL WITHDRAWAL", (("29181", "F10239"),), ("tremors", "alcohol withdrawal"), "alcohol withdrawal", 0.04, 0.9),
)
_R = {r.name: i for i, r in enumerate(_REASONS)}
_REASON_BOOST = {  # log-odds added to a reason's weight when the patient has the disease
    ("pneumonia", COPD): 0.7,
    ("resp_failure", COPD): 0.8,
    ("resp_failure", HF): 0.4,
    ("gi_bleed", AFIB): 0.5,
    ("stroke", AFIB): 0.7,
    ("syncope", AFIB): 0.4,
    ("sepsis", DM): 0.3,
    ("sepsis", CKD): 0.3,
}
_INFECTION = ("sepsis", "pneumonia", "ams")


# ----------------------------------------------------------------------------------------------------
# Lab tests: real ITEMIDs and units (MIMIC-III / MIMIC-IV demo), reference ranges, reporting limits.
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Lab:
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


_LABS = (  # in ITEMID order: rows of one draw are written in this order, as in MIMIC-III
    _Lab("specimen_type", 50800, None, 0, itemid4=52033),
    _Lab("base_excess", 50802, "mEq/L", 0),
    _Lab("total_co2", 50804, "mEq/L", 0, (21, 30)),
    _Lab("lactate", 50813, "mmol/L", 1, (0.5, 2.0)),
    _Lab("pco2", 50818, "mm Hg", 0, (35, 45)),
    _Lab("ph", 50820, "units", 2, (7.35, 7.45)),
    _Lab("po2", 50821, "mm Hg", 0, (85, 105)),
    _Lab("hba1c", 50852, "%", 1, (4.0, 6.0)),
    _Lab("alt", 50861, "IU/L", 0, (0, 40)),
    _Lab("albumin", 50862, "g/dL", 1, (3.5, 5.2)),
    _Lab("alk_phos", 50863, "IU/L", 0, (40, 130)),
    _Lab("anion_gap", 50868, "mEq/L", 0, (8, 20)),
    _Lab("ast", 50878, "IU/L", 0, (0, 40)),
    _Lab("bicarbonate", 50882, "mEq/L", 0, (22, 32)),
    _Lab("bilirubin", 50885, "mg/dL", 1, (0, 1.5)),
    _Lab("calcium", 50893, "mg/dL", 1, (8.4, 10.3)),
    _Lab("chloride", 50902, "mEq/L", 0, (96, 108)),
    _Lab("hdl", 50904, "mg/dL", 0, (41, 999)),
    _Lab("ldl", 50905, "mg/dL", 0, (0, 129)),
    _Lab("cholesterol", 50907, "mg/dL", 0, (0, 199)),
    _Lab("ck", 50910, "IU/L", 0, (47, 322)),
    _Lab("ck_mb", 50911, "ng/mL", 0, (0, 10), below=1),
    _Lab("creatinine", 50912, "mg/dL", 1, (0.5, 1.2), female=(0.4, 1.1)),
    _Lab("ferritin", 50924, "ng/mL", 0, (30, 400), female=(13, 150)),
    _Lab("glucose", 50931, "mg/dL", 0, (70, 100)),
    _Lab("iron", 50952, "ug/dL", 0, (45, 160)),
    _Lab("tibc", 50953, "ug/dL", 0, (260, 470)),
    _Lab("ldh", 50954, "IU/L", 0, (94, 250)),
    _Lab("magnesium", 50960, "mg/dL", 1, (1.6, 2.6)),
    _Lab("ntprobnp", 50963, "pg/mL", 0, (0, 852), above=70000),
    _Lab("phosphate", 50970, "mg/dL", 1, (2.7, 4.5)),
    _Lab("potassium", 50971, "mEq/L", 1, (3.3, 5.1)),
    _Lab("sodium", 50983, "mEq/L", 0, (133, 145)),
    _Lab("transferrin", 50998, "mg/dL", 0, (200, 360)),
    _Lab("triglycerides", 51000, "mg/dL", 0, (0, 149)),
    _Lab("troponin_t", 51003, "ng/mL", 2, (0, 0.01), below=0.01),
    _Lab("bun", 51006, "mg/dL", 0, (6, 20)),
    _Lab("vancomycin", 51009, "ug/mL", 1, (10, 20)),
    _Lab("vitamin_b12", 51010, "pg/mL", 0, (243, 894)),
    _Lab("basophils", 51146, "%", 1, (0, 1)),
    _Lab("eosinophils", 51200, "%", 1, (1, 7)),
    _Lab("hematocrit", 51221, "%", 1, (40, 51), female=(36, 48)),
    _Lab("hemoglobin", 51222, "g/dL", 1, (13.7, 17.5), female=(11.2, 15.7)),
    _Lab("inr", 51237, None, 1, (0.9, 1.1)),
    _Lab("lymphocytes", 51244, "%", 1, (19, 53)),
    _Lab("mch", 51248, "pg", 1, (26, 32)),
    _Lab("mchc", 51249, "%", 1, (32, 37), unit4="g/dL"),
    _Lab("mcv", 51250, "fL", 0, (82, 98)),
    _Lab("monocytes", 51254, "%", 1, (5, 13)),
    _Lab("neutrophils", 51256, "%", 1, (34, 71)),
    _Lab("platelets", 51265, "K/uL", 0, (150, 400)),
    _Lab("pt", 51274, "sec", 1, (9.4, 12.5)),
    _Lab("ptt", 51275, "sec", 1, (25, 36.5), above=150),
    _Lab("rdw", 51277, "%", 1, (10.5, 15.5)),
    _Lab("rbc", 51279, "m/uL", 2, (4.6, 6.1), female=(3.9, 5.2)),
    _Lab("wbc", 51301, "K/uL", 1, (4.0, 10.0)),
)
_L = {lab.key: i for i, lab in enumerate(_LABS)}
_SPECIMEN_TYPES = (("ART", "VEN", "MIX"), (0.72, 0.24, 0.04))

# Panels drawn together at one CHARTTIME: tests and chance per draw kind (ED/admission, morning, extra
# ICU draw, outpatient). Panels with None chances are made relevance-dependent in _panel_masks.
_ED, _AM, _STAT, _OUT = range(4)
_PANELS: dict[str, tuple[tuple[str, ...], tuple[float, float, float, float] | None]] = {
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
_ERROR_VALUES = ("ERROR", "HEMOLYZED", "UNABLE TO REPORT", "NotDone")
_MIMIC4_MASKED = {  # MIMIC-IV prints some results as "___" with the number in valuenum and a comment
    "glucose": "IF FASTING, 70-100 NORMAL, >125 PROVISIONAL DIABETES.",
    "troponin_t": "cTropnT > 0.10 ng/mL suggests Acute MI.",
    "ntprobnp": "REFERENCE VALUES VARY WITH AGE, SEX, AND RENAL FUNCTION;AT 35% PREVALENCE, NTPROBNP VALUES;  < 450 HAVE 99% NEG PRED VALUE;  >1000 HAVE 78% POS PRED VALUE;SEE ONLINE LAB MANUAL FOR MORE DETAILED INFORMATION.",
    "hba1c": "___",
}

# Per-test arrays, indexed like _LABS.
_DECIMALS = np.array([lab.decimals for lab in _LABS])
_NORMAL = np.array([[lab.female or lab.normal, lab.normal] for lab in _LABS])  # [test, female/male, low/high]
_BELOW = np.array([lab.below for lab in _LABS])
_ABOVE = np.array([lab.above for lab in _LABS])
_LIMIT_TEXT = [f"{x:g}" for x in np.where(np.isnan(_BELOW), _ABOVE, _BELOW)]
_MASKABLE = np.array([lab.key in _MIMIC4_MASKED for lab in _LABS])
_COMMENT_OF = np.array([list(_MIMIC4_MASKED).index(lab.key) if lab.key in _MIMIC4_MASKED else -1 for lab in _LABS])
_PANEL_OF = np.array([[lab.key in tests for tests, _ in _PANELS.values()].index(True) for lab in _LABS])


# ----------------------------------------------------------------------------------------------------
# Note text: per-disease evidence in the allowed sections and the answer in the discharge sections.
# ----------------------------------------------------------------------------------------------------
# (mentioned when positive, home medication when positive, false mention when negative, negated when negative)
_TEXT_RATES = {
    HTN: (0.60, 0.50, 0.06, 0.03),
    CAD: (0.55, 0.35, 0.05, 0.08),
    AFIB: (0.85, 0.55, 0.03, 0.05),
    HF: (0.60, 0.45, 0.05, 0.05),
    DM: (0.50, 0.40, 0.03, 0.08),
    HLD: (0.65, 0.50, 0.05, 0.02),
    CKD: (0.25, 0.10, 0.03, 0.03),
    AKI: (0.12, 0.00, 0.03, 0.03),
    COPD: (0.85, 0.55, 0.03, 0.05),
    ANEMIA: (0.18, 0.12, 0.04, 0.04),
}
_UNKNOWN_HISTORY = 0.08  # notes whose history could not be obtained: mentions mostly missing
_MENTIONS = {
    HTN: ("HTN", "hypertension", "HTN", "essential hypertension", "high blood pressure"),
    CAD: ("CAD", "coronary artery disease", "CAD s/p PCI to LAD", "CAD s/p CABG", "h/o NSTEMI", "CAD with stable angina"),
    AFIB: ("afib", "atrial fibrillation", "AF", "paroxysmal atrial fibrillation", "a-fib on anticoagulation", "atrial flutter"),
    HF: ("CHF", "congestive heart failure", "systolic CHF (EF 30%)", "diastolic heart failure", "HFpEF", "CHF with EF 35%"),
    DM: ("DM2", "type 2 diabetes", "diabetes mellitus", "DM", "NIDDM", "insulin dependent diabetes", "T2DM"),
    HLD: ("HLD", "hyperlipidemia", "hypercholesterolemia", "dyslipidemia"),
    CKD: ("CKD", "chronic kidney disease", "CKD stage III", "chronic renal insufficiency", "CRI"),
    AKI: ("acute renal failure", "ARF", "acute kidney injury"),
    COPD: ("COPD", "emphysema", "COPD on 2L home O2", "chronic bronchitis", "severe COPD"),
    ANEMIA: ("anemia", "chronic anemia", "iron deficiency anemia", "anemia of chronic disease"),
}
_NEGATED = {
    HTN: ("no history of hypertension", "denies HTN"),
    CAD: ("no known CAD", "denies chest pain", "no history of coronary artery disease"),
    AFIB: ("no history of afib", "denies palpitations", "no known arrhythmia"),
    HF: ("no history of CHF", "denies orthopnea or PND", "no known heart failure"),
    DM: ("no history of diabetes", "not diabetic", "denies polyuria or polydipsia"),
    HLD: ("no history of hyperlipidemia",),
    CKD: ("no known kidney disease", "normal baseline renal function"),
    AKI: ("no prior renal problems", "denies decreased urine output"),
    COPD: ("no history of COPD", "never smoker, no lung disease"),
    ANEMIA: ("no history of anemia", "denies melena or BRBPR"),
}
_FAMILY_TRAPS = ("Family history significant for CAD in father.", "Mother with diabetes.", "Brother with COPD.")
_AKI_HPI = "Labs notable for Cr of {cr:.1f} (baseline {base:.1f})."
_MEDS = {
    HTN: ("Lisinopril 10 mg PO DAILY", "Amlodipine 5 mg PO DAILY", "Hydrochlorothiazide 25 mg PO DAILY", "Losartan 50 mg PO DAILY"),
    CAD: ("Aspirin 81 mg PO DAILY", "Clopidogrel 75 mg PO DAILY", "Nitroglycerin 0.4 mg SL PRN chest pain", "Isosorbide Mononitrate (Extended Release) 30 mg PO DAILY"),
    AFIB: ("Warfarin 5 mg PO DAILY16", "Apixaban 5 mg PO BID", "Diltiazem Extended-Release 180 mg PO DAILY", "Amiodarone 200 mg PO DAILY"),
    HF: ("Furosemide 40 mg PO DAILY", "Carvedilol 12.5 mg PO BID", "Spironolactone 25 mg PO DAILY", "Torsemide 20 mg PO DAILY"),
    DM: ("MetFORMIN (Glucophage) 500 mg PO BID", "Glargine 20 Units Bedtime", "GlipiZIDE 5 mg PO DAILY", "Humalog 4 Units Breakfast, Lunch, Dinner"),
    HLD: ("Atorvastatin 40 mg PO QPM", "Simvastatin 20 mg PO QPM", "Pravastatin 40 mg PO QPM", "Rosuvastatin Calcium 10 mg PO QPM"),
    CKD: ("Sevelamer CARBONATE 800 mg PO TID W/MEALS", "Calcitriol 0.25 mcg PO DAILY", "Nephrocaps 1 CAP PO DAILY"),
    AKI: (),
    COPD: ("Tiotropium Bromide 1 CAP IH DAILY", "Albuterol Inhaler 2 PUFF IH Q4H:PRN wheezing", "Fluticasone-Salmeterol Diskus (250/50) 1 INH IH BID"),
    ANEMIA: ("Ferrous Sulfate 325 mg PO DAILY", "Folic Acid 1 mg PO DAILY", "Cyanocobalamin 1000 mcg PO DAILY"),
}
_SHARED_MEDS = ("Metoprolol Tartrate 25 mg PO BID", "Aspirin 81 mg PO DAILY", "Atorvastatin 20 mg PO QPM")
_FILLER_MEDS = (
    "Omeprazole 20 mg PO DAILY", "Docusate Sodium 100 mg PO BID", "Senna 8.6 mg PO BID:PRN constipation",
    "Levothyroxine Sodium 50 mcg PO DAILY", "Sertraline 50 mg PO DAILY", "Acetaminophen 650 mg PO Q6H:PRN pain",
    "Gabapentin 300 mg PO TID", "Tamsulosin 0.4 mg PO QHS", "Multivitamins 1 TAB PO DAILY",
    "Vitamin D 1000 UNIT PO DAILY", "Allopurinol 100 mg PO DAILY", "Trazodone 50 mg PO QHS:PRN insomnia",
)
_OTHER_HISTORY = (
    "hypothyroidism", "GERD", "depression", "gout", "OSA on CPAP", "BPH", "osteoarthritis", "s/p cholecystectomy",
    "anxiety", "glaucoma", "s/p appendectomy", "osteoporosis", "h/o DVT", "chronic low back pain", "obesity",
)
_TITLES = {
    HTN: "Hypertension", CAD: "Coronary artery disease", AFIB: "Atrial fibrillation", HF: "Congestive heart failure",
    DM: "Diabetes mellitus type 2", HLD: "Hyperlipidemia", CKD: "Chronic kidney disease",
    AKI: "Acute kidney injury", COPD: "COPD", ANEMIA: "Anemia",
}
_COURSE = {
    HTN: "Home antihypertensives were continued and blood pressure remained well controlled.",
    CAD: "Continued aspirin and statin. No evidence of active ischemia during this admission.",
    AFIB: "Rate controlled with metoprolol; anticoagulation was continued.",
    HF: "Diuresed with IV furosemide with improvement in volume status. Discharge weight documented.",
    DM: "Maintained on an insulin sliding scale; home oral agents restarted at discharge.",
    HLD: "Continued home statin.",
    CKD: "Creatinine remained near baseline. Medications were renally dosed.",
    AKI: "Creatinine peaked during the admission and improved with IV fluids and holding nephrotoxins.",
    COPD: "Continued home inhalers with nebulizers as needed.",
    ANEMIA: "Hematocrit was trended and remained stable; iron studies were sent.",
}
_NARRATIVE = {
    "sepsis": ("{P} was found to be febrile to 102.4 and hypotensive to the 80s systolic.", "{P} was brought in from the nursing home with fevers, rigors and lethargy."),
    "pneumonia": ("{P} reports several days of productive cough and subjective fevers.", "CXR in the ED showed a right lower lobe consolidation."),
    "gi_bleed": ("{P} reports several episodes of black tarry stools over the last two days.", "{P} had an episode of coffee-ground emesis at home."),
    "resp_failure": ("{P} was found to be hypoxic to the 70s on room air and was placed on BiPAP.", "{P} was intubated in the field for respiratory distress."),
    "chf": ("{P} reports worsening dyspnea on exertion, orthopnea and 10 lb weight gain.", "{P} notes increasing bilateral leg swelling over the past week."),
    "nstemi": ("{P} developed substernal chest pressure radiating to the left arm.", "{P} had chest pain at rest lasting 30 minutes with diaphoresis."),
    "cabg": ("{P} was referred for surgical revascularization after a catheterization showed three vessel disease.",),
    "stroke": ("{P} was found by family with acute onset left sided weakness.", "{P} developed slurred speech and facial droop at dinner."),
    "hip_fracture": ("{P} had a mechanical fall at home and was unable to bear weight.",),
    "ams": ("Family noted increasing confusion over the past three days.", "{P} was found to be more somnolent than usual."),
    "copd": ("{P} reports increased wheezing and sputum production despite home nebulizers.",),
    "dka": ("{P} reports nausea, vomiting and polyuria for two days; fingerstick glucose read HIGH.",),
    "pancreatitis": ("{P} reports epigastric pain radiating to the back after a large meal.",),
    "syncope": ("{P} had a witnessed syncopal episode while standing in line.",),
    "etoh": ("{P} drinks a pint of vodka daily and last drank two days ago; now tremulous.",),
}
_IRRELEVANT = (
    "In the ED, initial vitals were T 98.4 HR 96 BP 132/78 RR 20 O2 sat 95% RA.",
    "{P} was given 1L NS and ceftriaxone in the ED.",
    "Of note, {p} was recently seen in clinic for a routine visit.",
    "{P} lives at home with family and is independent in ADLs.",
    "ROS otherwise negative in detail.",
    "{P} denies recent travel or sick contacts.",
)


_FILLER = {  # sections with no disease evidence
    "procedure": ("None", "None", "Central line placement", "Intubation"),
    "living": ("Lives with wife.", "Lives with husband.", "Lives with daughter.", "Lives alone."),
    "alcohol": ("Occasional EtOH.", "Denies EtOH or illicit drug use.", "Drinks 1-2 beers daily."),
    "family": ("Non-contributory.", "Father with MI at 60.", "Mother with diabetes and HTN.", "No family history of early MI or sudden death."),
    "cxr": ("No acute cardiopulmonary process.", "Low lung volumes, bibasilar atelectasis.", "Small bilateral pleural effusions."),
    "disposition": ("Home", "Home With Service", "Extended Care"),
    "allergies": ("No Known Allergies / Adverse Drug Reactions", "Patient recorded as having No Known Allergies to Drugs", "Penicillins", "Sulfa (Sulfonamide Antibiotics)", "Codeine", "lisinopril"),
}
_EXAM = ("VS: T {t:.1f} BP {sbp}/{dbp} HR {hr} RR {rr} O2 sat {sat}% RA\nGEN: NAD, lying in bed\nHEENT: MMM, OP clear\n"
         "CV: RRR, no m/r/g\nLUNGS: CTAB\nABD: soft, NT/ND\nEXT: no c/c/e")
_CONDITION = "Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\nActivity Status: Ambulatory - Independent."
_INSTRUCTIONS = "You were admitted to the hospital for {}. Please take your medications as prescribed and keep your follow-up appointments."
_SERVICE = {"cabg": "CARDIOTHORACIC", "hip_fracture": "ORTHOPAEDICS", "stroke": "NEUROLOGY"}
# fmt: on


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------
def generate(
    out_dir: Path,
    fmt: Literal["mimic3", "mimic4"],
    admissions: int,
    seed: int = 0,
    note_fraction: float = 0.95,
    progress: Callable[[str, float], None] | None = None,
) -> dict:
    """Write a synthetic hospital of ``admissions`` admissions in the raw ``fmt`` layout under ``out_dir``.

    mimic3: PATIENTS, ADMISSIONS, DIAGNOSES_ICD, D_ICD_DIAGNOSES, D_LABITEMS, LABEVENTS, NOTEEVENTS
    (``.csv.gz``); mimic4: ``hosp/`` patients, admissions, diagnoses_icd, d_icd_diagnoses, d_labitems,
    labevents and ``note/discharge``. ``note_fraction`` is the share of admissions with a discharge summary.
    ``progress(stage, fraction)`` is called as work completes. Returns counts, the coded prevalence of
    each disease and the elapsed seconds.
    """
    if fmt not in ("mimic3", "mimic4"):
        raise ValueError(f"format must be 'mimic3' or 'mimic4', not {fmt!r}")
    if admissions < 1:
        raise ValueError("admissions must be at least 1")
    if not 0.0 <= note_fraction <= 1.0:
        raise ValueError("note_fraction must be between 0 and 1")
    started = time.perf_counter()
    report = progress or (lambda stage, fraction: None)
    out_dir = Path(out_dir)
    hosp = out_dir if fmt == "mimic3" else out_dir / "hosp"
    hosp.mkdir(parents=True, exist_ok=True)

    report("cohort", 0.0)
    cohort = _draw_cohort(np.random.default_rng([seed, 0]), admissions, fmt, note_fraction)
    report("cohort", 0.5)
    names = _FILE_NAMES[fmt]
    n_diagnoses, coded = _write_tables(cohort, fmt, hosp, names, np.random.default_rng([seed, 1]))
    report("cohort", 1.0)
    lab_rows = _write_labs(cohort, fmt, hosp / names["labevents"], seed, report)
    note_dir = out_dir if fmt == "mimic3" else out_dir / "note"
    note_dir.mkdir(parents=True, exist_ok=True)
    notes = _write_notes(cohort, fmt, note_dir / names["notes"], seed, report)
    return {
        "format": fmt,
        "seed": seed,
        "admissions": admissions,
        "patients": len(cohort.subject_id),
        "lab_rows": lab_rows,
        "notes": notes,
        "diagnoses": n_diagnoses,
        "prevalence": {
            name: round(float(p), 4) for name, p in zip(DISEASES, coded.mean(axis=0), strict=True)
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


_FILE_NAMES = {
    "mimic3": {
        "patients": "PATIENTS.csv.gz",
        "admissions": "ADMISSIONS.csv.gz",
        "diagnoses": "DIAGNOSES_ICD.csv.gz",
        "d_icd": "D_ICD_DIAGNOSES.csv.gz",
        "d_labitems": "D_LABITEMS.csv.gz",
        "labevents": "LABEVENTS.csv.gz",
        "notes": "NOTEEVENTS.csv.gz",
    },
    "mimic4": {
        "patients": "patients.csv.gz",
        "admissions": "admissions.csv.gz",
        "diagnoses": "diagnoses_icd.csv.gz",
        "d_icd": "d_icd_diagnoses.csv.gz",
        "d_labitems": "d_labitems.csv.gz",
        "labevents": "labevents.csv.gz",
        "notes": "discharge.csv.gz",
    },
}


# ----------------------------------------------------------------------------------------------------
# Cohort: patients, admissions, diseases, reasons, timeline (drawn up front, one row per admission)
# ----------------------------------------------------------------------------------------------------
@dataclass
class _Cohort:
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
        return self.age0[self.pat] + (self.admit - self.admit[self.first][self.pat]) / _YEAR


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    """n indices drawn with the given (unnormalised) weights."""
    p = np.asarray(weights, float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _unique_ids(rng: np.random.Generator, low: int, span: int, n: int) -> np.ndarray:
    """n distinct random integers in [low, low + span), in random order."""
    return low + rng.choice(max(span, n * 5 // 4), size=n, replace=False)


def _draw_cohort(rng: np.random.Generator, n_adm: int, fmt: Format, note_fraction: float) -> _Cohort:
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
    for d in _CHRONIC:
        base[:, d] = rng.random(n_pat) < _sigmoid(_INTERCEPT[d] + drivers[d](base))
    # Chronic conditions persist; an absent one may appear by a later admission.
    onset = (rng.random((n_adm, 10)) < _ONSET) & later[:, None]
    onset_cum = np.cumsum(onset, axis=0)
    dis = base[pat] | (onset_cum - onset_cum[first][pat] > 0)
    dis[:, [AKI, ANEMIA]] = False

    ckd_stage = _pick(rng, [s[2] for s in _CKD_STAGES], n_pat)
    warfarin = rng.random(n_pat) < 0.4  # effective only with atrial fibrillation
    statin = rng.random(n_pat) < 0.7  # effective only with hyperlipidemia or CAD
    chronic_anemia = rng.random(n_pat) < _sigmoid(-2.0 + 1.2 * base[:, CKD] + 0.3 * ~male)

    # Reason for admission: Gumbel-max over log weights that depend on the diseases.
    logw = np.tile(np.log([r.weight for r in _REASONS]), (n_adm, 1))
    for j, r in enumerate(_REASONS):
        if r.needs is not None:
            logw[~dis[:, r.needs], j] = -np.inf
    for (name, d), boost in _REASON_BOOST.items():
        logw[:, _R[name]] += boost * dis[:, d]
    reason = np.argmax(logw + rng.gumbel(size=logw.shape), axis=1)
    severity = np.array([r.severity for r in _REASONS])[reason] * rng.lognormal(0, 0.4, n_adm)
    is_reason = {name: reason == i for name, i in _R.items()}

    # Acute, admission-level diseases.
    age_a = age0[pat]
    infection = is_reason["sepsis"] | is_reason["pneumonia"] | is_reason["ams"]
    aki_logit = (
        _INTERCEPT[AKI]
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
        _INTERCEPT[ANEMIA]
        + 2.2 * chronic_anemia[pat]
        + 1.0 * dis[:, CKD]
        + 2.0 * is_reason["gi_bleed"]
        + 0.5 * is_reason["sepsis"]
        + 0.3 * ~male[pat]
        + 0.2 * (age_a - 65) / 16
    )
    dis[:, ANEMIA] = rng.random(n_adm) < _sigmoid(anemia_logit)
    anemia_type = _pick(rng, (0.55, 0.0, 0.0, 0.33, 0.12), n_adm)
    anemia_type[dis[:, CKD] & (rng.random(n_adm) < 0.5)] = _AN_CKD
    anemia_type[is_reason["gi_bleed"]] = _AN_ACUTE

    # Timeline: first admission in a shifted year, then gaps; length of stay grows with severity.
    los = np.clip(rng.lognormal(np.log(6.0 * severity**0.6), 0.8), 0.25, 120) * _DAY
    gap = rng.lognormal(np.log(200), 1.0, n_adm) * _DAY + 2 * _DAY
    start_year = rng.uniform(2105, 2195, n_pat) if fmt == "mimic3" else rng.integers(2110, 2200, n_pat) + 0.0
    step = np.where(later, np.roll(los, 1) + gap, 0.0)
    cum = np.cumsum(step)
    admit = (
        ((start_year - 1970) * _YEAR)[pat] + rng.uniform(0, 0.9 * _YEAR, n_pat)[pat] + cum - cum[first][pat]
    )
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
    dod = np.where(later_death, disch[last] + (rng.uniform(5, 1500, n_pat) * _DAY).astype(np.int64), dod)
    dod = np.where(dod >= 0, dod // _DAY * _DAY, -1)
    dod_hosp = died[last]
    dod_ssn = (dod >= 0) & (later_death | (rng.random(n_pat) < 0.7))

    birth = admit[first] - (age0 * _YEAR).astype(np.int64)
    if fmt == "mimic3":  # MIMIC-III hides ages over 89 by moving the date of birth 300 years back
        birth = np.where(
            age0 > 89, admit[first] - ((300 + rng.random(n_pat)) * _YEAR).astype(np.int64), birth
        )
    dob = birth // _DAY * _DAY

    # MIMIC-IV: real year group of the anchor year; ICD-10 from October 2015 on.
    year_group = _pick(rng, (0.15, 0.2, 0.25, 0.25, 0.15), n_pat)
    real_year = (2008 + 3 * year_group + rng.uniform(0, 3, n_pat))[pat] + (admit - admit[first][pat]) / _YEAR
    icd10 = (real_year >= 2015.75) if fmt == "mimic4" else np.zeros(n_adm, bool)

    ventilated = rng.random(n_adm) < _sigmoid(
        -2.2
        + 2.0 * np.log(severity)
        + 2.5 * is_reason["resp_failure"]
        + 0.3 * dis[:, COPD]
        + 1.0 * is_reason["cabg"]
    )
    return _Cohort(
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


# ----------------------------------------------------------------------------------------------------
# CSV formatting with pyarrow compute kernels, gzip streams
# ----------------------------------------------------------------------------------------------------
def _quoted(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")


def _csv_field(values: pa.Array, quote_all: bool) -> pa.Array:
    """One column as CSV text: numbers and times bare, strings quoted (all, or only where needed), nulls empty."""
    if pa.types.is_string(values.type):
        if quote_all:
            values = _quoted(values)
        else:
            values = pc.if_else(pc.match_substring_regex(values, '[",\r\n]'), _quoted(values), values)
    else:
        values = pc.cast(values, pa.string())
    return pc.fill_null(values, "")


def _csv_lines(columns: Sequence[pa.Array], quote_all: bool) -> pa.Buffer:
    """CSV text of equally long columns, one line per row, as one buffer."""
    if not len(columns[0]):
        return pa.py_buffer(b"")
    lines = pc.binary_join_element_wise(*[_csv_field(c, quote_all) for c in columns], ",")
    lines = pc.binary_join_element_wise(lines, "", "\n")
    offsets = np.frombuffer(lines.buffers()[1], np.int32)
    return lines.buffers()[2][offsets[lines.offset] : offsets[lines.offset + len(lines)]]


def _header(names: Sequence[str], quote_all: bool) -> bytes:
    return (",".join(f'"{n}"' if quote_all else n for n in names) + "\n").encode()


class _GzipCsv:
    """A deterministic gzip stream (no name, mtime 0) compressed on a background thread, in write order."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._zip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future] = []

    def _compress(self, data: bytes | pa.Buffer) -> None:
        self._file.write(self._zip.compress(data))

    def write(self, data: bytes | pa.Buffer) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= 2:  # keep memory bounded: at most two chunks in flight
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._compress, data))

    def close(self) -> None:
        for f in self._pending:
            f.result()
        self._pool.shutdown()
        self._file.write(self._zip.flush())
        self._file.close()


def _write_table(path: Path, columns: dict[str, pa.Array], quote_all: bool) -> None:
    """A whole small table as one gzip CSV: ``columns`` maps header names to equally long columns."""
    sink = _GzipCsv(path)
    sink.write(_header(list(columns), quote_all))
    sink.write(_csv_lines(list(columns.values()), quote_all))
    sink.close()


def _ts(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Seconds since 1970 as a timestamp column (null where not valid)."""
    return pa.array(seconds, pa.int64(), mask=None if valid is None else ~valid).cast(pa.timestamp("s"))


def _date(seconds: np.ndarray, valid: np.ndarray) -> pa.Array:
    return _ts(seconds, valid).cast(pa.date32())


def _strings(options: Sequence[str | None], index: np.ndarray) -> pa.Array:
    return pa.array(options, pa.string()).take(pa.array(index))


def _ints(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    return pa.array(values, pa.int64(), mask=None if valid is None else ~valid)


# ----------------------------------------------------------------------------------------------------
# Small tables: patients, admissions, diagnoses, dictionaries
# ----------------------------------------------------------------------------------------------------
# fmt: off
_CATEGORIES = {  # column: ((value, weight), ...); None is an empty field
    "mimic3": {
        "location_ed": (("EMERGENCY ROOM ADMIT", 1.0),),
        "location": (("TRANSFER FROM HOSP/EXTRAM", 0.55), ("CLINIC REFERRAL/PREMATURE", 0.25), ("PHYS REFERRAL/NORMAL DELI", 0.15), ("TRANSFER FROM SKILLED NUR", 0.05)),
        "discharge": (("HOME", 0.3), ("HOME HEALTH CARE", 0.25), ("SNF", 0.22), ("REHAB/DISTINCT PART HOSP", 0.12), ("LONG TERM CARE HOSPITAL", 0.04), ("SHORT TERM HOSPITAL", 0.03), ("HOSPICE-HOME", 0.01), ("ICF", 0.01), ("LEFT AGAINST MEDICAL ADVI", 0.01), ("DISC-TRAN CANCER/CHLDRN H", 0.01)),
        "insurance_old": (("Medicare", 0.88), ("Private", 0.08), ("Medicaid", 0.03), ("Government", 0.01)),
        "insurance_young": (("Private", 0.55), ("Medicaid", 0.2), ("Medicare", 0.15), ("Government", 0.05), ("Self Pay", 0.05)),
        "language": (("ENGL", 0.55), (None, 0.35), ("SPAN", 0.05), ("RUSS", 0.02), ("PTUN", 0.01), ("CANT", 0.01), ("PORT", 0.01)),
        "religion": (("CATHOLIC", 0.35), ("NOT SPECIFIED", 0.2), ("UNOBTAINABLE", 0.12), ("PROTESTANT QUAKER", 0.12), ("JEWISH", 0.08), ("OTHER", 0.05), ("EPISCOPALIAN", 0.02), ("CHRISTIAN SCIENTIST", 0.02), ("BUDDHIST", 0.01), ("MUSLIM", 0.01), (None, 0.02)),
        "marital": (("MARRIED", 0.45), ("SINGLE", 0.22), ("WIDOWED", 0.14), ("DIVORCED", 0.06), (None, 0.1), ("SEPARATED", 0.01), ("UNKNOWN (DEFAULT)", 0.02)),
        "race": (("WHITE", 0.7), ("BLACK/AFRICAN AMERICAN", 0.09), ("UNKNOWN/NOT SPECIFIED", 0.08), ("HISPANIC OR LATINO", 0.03), ("ASIAN", 0.03), ("OTHER", 0.03), ("HISPANIC/LATINO - PUERTO RICAN", 0.02), ("UNABLE TO OBTAIN", 0.02)),
    },
    "mimic4": {
        "type": (("EW EMER.", 0.45), ("OBSERVATION ADMIT", 0.12), ("URGENT", 0.16), ("EU OBSERVATION", 0.1), ("DIRECT EMER.", 0.07), ("ELECTIVE", 0.04), ("DIRECT OBSERVATION", 0.04), ("AMBULATORY OBSERVATION", 0.02)),
        "location_ed": (("EMERGENCY ROOM", 1.0),),
        "location": (("PHYSICIAN REFERRAL", 0.45), ("TRANSFER FROM HOSPITAL", 0.3), ("CLINIC REFERRAL", 0.08), ("WALK-IN/SELF REFERRAL", 0.06), ("PROCEDURE SITE", 0.05), ("TRANSFER FROM SKILLED NURSING FACILITY", 0.03), ("PACU", 0.03)),
        "discharge": (("HOME", 0.3), ("HOME HEALTH CARE", 0.3), ("SKILLED NURSING FACILITY", 0.15), (None, 0.1), ("REHAB", 0.06), ("CHRONIC/LONG TERM ACUTE CARE", 0.03), ("HOSPICE", 0.02), ("AGAINST ADVICE", 0.01), ("ACUTE HOSPITAL", 0.01), ("PSYCH FACILITY", 0.01)),
        "insurance_old": (("Medicare", 0.85), ("Other", 0.12), ("Medicaid", 0.03)),
        "insurance_young": (("Other", 0.65), ("Medicaid", 0.25), ("Medicare", 0.1)),
        "language": (("ENGLISH", 0.92), ("?", 0.08)),
        "marital": (("MARRIED", 0.42), ("SINGLE", 0.3), ("WIDOWED", 0.15), ("DIVORCED", 0.08), (None, 0.05)),
        "race": (("WHITE", 0.66), ("BLACK/AFRICAN AMERICAN", 0.14), ("UNKNOWN", 0.05), ("OTHER", 0.03), ("HISPANIC/LATINO - PUERTO RICAN", 0.03), ("ASIAN", 0.03), ("WHITE - OTHER EUROPEAN", 0.02), ("HISPANIC OR LATINO", 0.02), ("UNABLE TO OBTAIN", 0.01), ("ASIAN - CHINESE", 0.01)),
    },
}
_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
# fmt: on


def _category(rng: np.random.Generator, fmt: Format, column: str, n: int) -> pa.Array:
    options = _CATEGORIES[fmt][column]
    return _strings([o for o, _ in options], _pick(rng, [w for _, w in options], n))


def _write_tables(
    c: _Cohort, fmt: Format, hosp: Path, names: dict[str, str], rng: np.random.Generator
) -> tuple[int, np.ndarray]:
    """PATIENTS, ADMISSIONS, DIAGNOSES_ICD and the two dictionaries; returns diagnosis rows and coded labels."""
    m3 = fmt == "mimic3"
    n_pat, n_adm = len(c.subject_id), len(c.pat)
    gender = _strings(["F", "M"], c.male.astype(np.int64))
    dead = c.dod >= 0
    if m3:
        patients = {
            "ROW_ID": _ints(np.arange(1, n_pat + 1)),
            "SUBJECT_ID": _ints(c.subject_id),
            "GENDER": gender,
            "DOB": _ts(c.dob),
            "DOD": _ts(c.dod, dead),
            "DOD_HOSP": _ts(c.dod, c.dod_hosp),
            "DOD_SSN": _ts(c.dod, c.dod_ssn),
            "EXPIRE_FLAG": _ints(dead.astype(np.int64)),
        }
    else:
        patients = {
            "subject_id": _ints(c.subject_id),
            "gender": gender,
            "anchor_age": _ints(
                np.where(c.age0 > 89, 91, c.age0.astype(np.int64))
            ),  # MIMIC-IV caps ages at 91
            "anchor_year": _ints(1970 + (c.admit[c.first] // _YEAR).astype(np.int64)),
            "anchor_year_group": _strings(_YEAR_GROUPS, c.year_group),
            "dod": _date(c.dod, dead),
        }
    _write_table(hosp / names["patients"], patients, m3)

    ed = c.ed_reg >= 0
    ed_out = c.admit + (rng.uniform(-0.5, 2.0, n_adm) * 3600 // 60 * 60).astype(np.int64)
    elective = c.reason == _R["cabg"]
    ed_location = _category(rng, fmt, "location_ed", n_adm)
    location = pc.if_else(pa.array(ed), ed_location, _category(rng, fmt, "location", n_adm))
    old, young = _category(rng, fmt, "insurance_old", n_adm), _category(rng, fmt, "insurance_young", n_adm)
    insurance = pc.if_else(pa.array(c.age >= 65), old, young)
    discharge = _category(rng, fmt, "discharge", n_adm)
    language, marital, race = (
        _category(rng, fmt, col, n_pat).take(pa.array(c.pat)) for col in ("language", "marital", "race")
    )
    subject, hadm = _ints(c.subject_id[c.pat]), _ints(c.hadm_id)
    admit, disch, death = _ts(c.admit), _ts(c.disch), _ts(c.disch, c.died)
    ed_reg, ed_out, expired = _ts(c.ed_reg, ed), _ts(ed_out, ed), _ints(c.died.astype(np.int64))
    if m3:
        admission_type = np.where(elective, 2, (rng.random(n_adm) < 0.03).astype(np.int64))
        admissions = {
            "ROW_ID": _ints(np.arange(1, n_adm + 1)),
            "SUBJECT_ID": subject,
            "HADM_ID": hadm,
            "ADMITTIME": admit,
            "DISCHTIME": disch,
            "DEATHTIME": death,
            "ADMISSION_TYPE": _strings(["EMERGENCY", "URGENT", "ELECTIVE"], admission_type),
            "ADMISSION_LOCATION": location,
            "DISCHARGE_LOCATION": pc.if_else(pa.array(c.died), "DEAD/EXPIRED", discharge),
            "INSURANCE": insurance,
            "LANGUAGE": language,
            "RELIGION": _category(rng, fmt, "religion", n_pat).take(pa.array(c.pat)),
            "MARITAL_STATUS": marital,
            "ETHNICITY": race,
            "EDREGTIME": ed_reg,
            "EDOUTTIME": ed_out,
            "DIAGNOSIS": _strings([r.diagnosis for r in _REASONS], c.reason),
            "HOSPITAL_EXPIRE_FLAG": expired,
            "HAS_CHARTEVENTS_DATA": _ints((rng.random(n_adm) < 0.98).astype(np.int64)),
        }
    else:
        providers = _provider_ids(rng, 3000)
        admission_type = _category(rng, fmt, "type", n_adm)
        admissions = {
            "subject_id": subject,
            "hadm_id": hadm,
            "admittime": admit,
            "dischtime": disch,
            "deathtime": death,
            "admission_type": pc.if_else(pa.array(elective), "SURGICAL SAME DAY ADMISSION", admission_type),
            "admit_provider_id": _strings(providers, rng.integers(0, len(providers), n_adm)),
            "admission_location": location,
            "discharge_location": pc.if_else(pa.array(c.died), "DIED", discharge),
            "insurance": insurance,
            "language": language,
            "marital_status": marital,
            "race": race,
            "edregtime": ed_reg,
            "edouttime": ed_out,
            "hospital_expire_flag": expired,
        }
    _write_table(hosp / names["admissions"], admissions, m3)

    rows = _diagnosis_codes(c, rng)
    adm_of = np.array([a for a, _ in rows], np.int64)
    codes = pa.array([code for _, code in rows], pa.string())
    seq = np.arange(len(rows)) - np.searchsorted(adm_of, adm_of) + 1
    subject, hadm = _ints(c.subject_id[c.pat[adm_of]]), _ints(c.hadm_id[adm_of])
    if m3:
        diagnoses = {
            "ROW_ID": _ints(np.arange(1, len(rows) + 1)),
            "SUBJECT_ID": subject,
            "HADM_ID": hadm,
            "SEQ_NUM": _ints(seq),
            "ICD9_CODE": codes,
        }
        used = sorted({code for _, code in rows}, key=lambda k: _ICD9_TITLES[k][0])
        dictionary = {
            "ROW_ID": _ints(np.array([_ICD9_TITLES[k][0] for k in used])),
            "ICD9_CODE": pa.array(used, pa.string()),
            "SHORT_TITLE": pa.array([_ICD9_TITLES[k][1] for k in used], pa.string()),
            "LONG_TITLE": pa.array([_ICD9_TITLES[k][2] for k in used], pa.string()),
        }
    else:
        version = np.where(c.icd10[adm_of], 10, 9)
        diagnoses = {
            "subject_id": subject,
            "hadm_id": hadm,
            "seq_num": _ints(seq),
            "icd_code": codes,
            "icd_version": _ints(version),
        }
        used_pairs = sorted({(code, int(v)) for (_, code), v in zip(rows, version, strict=True)})
        dictionary = {
            "icd_code": pa.array([k for k, _ in used_pairs], pa.string()),
            "icd_version": _ints(np.array([v for _, v in used_pairs])),
            "long_title": pa.array(
                [_ICD9_TITLES[k][2] if v == 9 else _ICD10_TITLES[k] for k, v in used_pairs], pa.string()
            ),
        }
    _write_table(hosp / names["diagnoses"], diagnoses, m3)
    _write_table(hosp / names["d_icd"], dictionary, m3)
    _write_labitems(hosp / names["d_labitems"], fmt)
    return len(rows), _coded_labels([code for _, code in rows], adm_of, c.icd10, n_adm)


def _provider_ids(rng: np.random.Generator, n: int) -> list[str]:
    """MIMIC-IV style provider ids: 'P' and five upper-case letters or digits."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    return ["P" + "".join(row) for row in alphabet[rng.integers(0, len(alphabet), (n, 5))]]


def _diagnosis_codes(c: _Cohort, rng: np.random.Generator) -> list[tuple[int, str]]:
    """(admission, code) rows in SEQ_NUM order: reason codes first, then diseases and unrelated codes, shuffled."""
    version = c.icd10.astype(np.int64)  # 0 = ICD-9, 1 = ICD-10
    other_weights = np.array([w for *_, w in _OTHER_CODES], float)
    n_other = rng.poisson(7.0, len(c.pat))
    draws = rng.random((len(c.pat), 16))
    rows: list[tuple[int, str]] = []
    for a in range(len(c.pat)):
        v = version[a]
        u = iter(draws[a])
        reason = _REASONS[c.reason[a]]
        head = [pair[v] for pair in reason.codes]
        if reason.name == "sepsis":
            head += [code[v] for code in _SEPSIS_EXTRA if next(u) < code[2]]
        dis = c.dis[a]
        covered = {reason.needs}
        tail: list[str] = []
        stage = c.ckd_stage[c.pat[a]]
        if dis[HTN] and dis[CKD]:
            tail.append((("40390", "I129"), ("40391", "I120"))[int(stage == _ESRD)][v])
        elif dis[HTN] and dis[HF] and next(u) < 0.2:
            tail.append(("40291", "I110")[v])
        elif dis[HTN]:
            tail.append(_CODES[HTN][0][v])
        if dis[CKD]:
            tail.append(_CKD_STAGES[stage][v])
        if dis[DM] and dis[CKD] and reason.needs != DM and next(u) < 0.5:
            tail.append(("25040", "E1122")[v])
            covered.add(DM)
        if dis[ANEMIA]:
            tail.append(_ANEMIA_TYPES[c.anemia_type[a]][v])
        covered.update((HTN, CKD, ANEMIA))
        for d, options in _CODES.items():
            if dis[d] and d not in covered:
                weights = np.array([w for *_, w in options])
                tail.append(options[int(np.searchsorted(np.cumsum(weights) / weights.sum(), next(u)))][v])
        for d, icd9, icd10, chance in _LINKED_CODES:
            if dis[d] and next(u) < chance:
                tail.append((icd9, icd10)[v])
        picks = rng.choice(
            len(_OTHER_CODES), size=min(n_other[a], 12), replace=False, p=other_weights / other_weights.sum()
        )
        tail += [_OTHER_CODES[i][v] for i in picks]
        tail = [code for code in dict.fromkeys(tail) if code not in head]
        rng.shuffle(tail)
        rows += [(a, code) for code in head + tail]
    return rows


def _coded_labels(codes: list[str], adm_of: np.ndarray, icd10: np.ndarray, n_adm: int) -> np.ndarray:
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


def _write_labitems(path: Path, fmt: Format) -> None:
    """D_LABITEMS: the full real item list of the MIMIC demo, shipped as resources/synth_labitems.csv."""
    text = resources.files("medfuse.resources").joinpath("synth_labitems.csv").read_text()
    rows = [r for r in csv.DictReader(text.splitlines()) if r["source"] == fmt]
    m3 = fmt == "mimic3"
    names = (
        ("row_id", "itemid", "label", "fluid", "category", "loinc_code")
        if m3
        else ("itemid", "label", "fluid", "category")
    )

    def column(name: str) -> pa.Array:
        if name in ("row_id", "itemid"):
            return _ints(np.array([int(r[name]) for r in rows]))
        return pa.array([r[name] or None for r in rows], pa.string())

    _write_table(path, {(name.upper() if m3 else name): column(name) for name in names}, m3)


# ----------------------------------------------------------------------------------------------------
# Lab events (streamed per chunk of patients)
# ----------------------------------------------------------------------------------------------------
def _chunks(c: _Cohort) -> list[tuple[int, int, int, int]]:
    """(first patient, end patient, first admission, end admission) per chunk of _CHUNK_PATIENTS patients."""
    n_pat, n_adm = len(c.subject_id), len(c.pat)
    bounds = list(range(0, n_pat, _CHUNK_PATIENTS)) + [n_pat]
    adm_bounds = [int(c.first[p]) if p < n_pat else n_adm for p in bounds]
    return [(bounds[i], bounds[i + 1], adm_bounds[i], adm_bounds[i + 1]) for i in range(len(bounds) - 1)]


@dataclass
class _Draws:
    """Blood draws of one chunk, sorted by patient and time; one CHARTTIME each."""

    adm: np.ndarray  # admission (global index) the draw belongs to or is nearest to
    time: np.ndarray  # seconds
    kind: np.ndarray  # _ED, _AM, _STAT, _OUT
    in_hadm: np.ndarray  # written with the admission's HADM_ID
    frac: np.ndarray  # position within the stay, 0..1 (0 for outpatient draws)


def _draw_times(c: _Cohort, a0: int, a1: int, rng: np.random.Generator) -> _Draws:
    """ED/admission draw, one early-morning draw per hospital day, extra ICU draws, outpatient visits."""
    adm = np.arange(a0, a1)
    admit, disch = c.admit[adm], c.disch[adm]
    los = disch - admit
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []

    ed = c.ed_reg[adm] >= 0
    first_time = np.where(
        ed,
        c.ed_reg[adm] + rng.uniform(0.2, 0.9, len(adm)) * (admit - c.ed_reg[adm]),
        admit + rng.uniform(0.02, 0.2, len(adm)) * los,
    )
    parts.append((adm, first_time, _ED))

    first_am = (admit - 5 * 3600) // _DAY * _DAY + _DAY + 5 * 3600
    n_am = np.maximum((disch - first_am) // _DAY + 1, 0)
    am_adm = np.repeat(adm, n_am)
    k = np.arange(len(am_adm)) - np.repeat(np.cumsum(n_am) - n_am, n_am)
    parts.append((am_adm, first_am[am_adm - a0] + k * _DAY + rng.uniform(-75, 90, len(am_adm)) * 60, _AM))

    icu_span = np.minimum(los, 4 * _DAY)
    n_stat = rng.poisson(1.1 * c.severity[adm] * (1 + 2 * c.ventilated[adm]) * icu_span / _DAY)
    stat_adm = np.repeat(adm, n_stat)
    parts.append(
        (stat_adm, admit[stat_adm - a0] + rng.random(len(stat_adm)) ** 1.5 * icu_span[stat_adm - a0], _STAT)
    )

    # Outpatient visits before or after the stay, never inside another stay of the patient nor after death.
    n_out = rng.poisson(4.4, len(adm))
    out_adm = np.repeat(adm, n_out)
    after = rng.random(len(out_adm)) < 0.5
    offset = rng.uniform(2, 400, len(out_adm)) * _DAY
    out_time = np.where(after, c.disch[out_adm] + offset, c.admit[out_adm] - offset)
    same_next = np.append(c.pat[1:] == c.pat[:-1], False)
    same_prev = np.insert(c.pat[1:] == c.pat[:-1], 0, False)
    death = np.where(c.dod >= 0, c.dod, np.iinfo(np.int64).max)[c.pat]
    next_admit = np.where(same_next, np.roll(c.admit, -1), death)[out_adm]
    prev_disch = np.where(same_prev, np.roll(c.disch, 1), np.iinfo(np.int64).min)[out_adm]
    keep = (out_time > prev_disch + _DAY) & (out_time < next_admit - _DAY)
    parts.append((out_adm[keep], out_time[keep], _OUT))

    adm_d = np.concatenate([p[0] for p in parts])
    t = (np.concatenate([p[1] for p in parts]) // 60 * 60).astype(np.int64)
    kind = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    order = np.lexsort((kind, t, c.pat[adm_d]))
    adm_d, t, kind = adm_d[order], t[order], kind[order]
    in_hadm = (kind != _OUT) & ~((kind == _ED) & (t < c.admit[adm_d]) & (rng.random(len(t)) < 0.3))
    frac = np.where(
        kind == _OUT,
        0.0,
        np.clip((t - c.admit[adm_d]) / np.maximum(c.disch[adm_d] - c.admit[adm_d], 1), 0, 1),
    )
    return _Draws(adm=adm_d, time=t, kind=kind, in_hadm=in_hadm, frac=frac)


def _lab_values(
    c: _Cohort, d: _Draws, p0: int, p1: int, a0: int, a1: int, rng: np.random.Generator
) -> np.ndarray:
    """True values of every lab test at every draw, [draws, tests]: healthy baseline, patient effect,
    disease effects, acute illness (in hospital only) and measurement noise."""
    n = len(d.adm)
    stay = d.adm - a0  # admission within the chunk
    patient_effect = rng.standard_normal((p1 - p0, len(_LABS)))[c.pat[d.adm] - p0]

    def z(key: str) -> np.ndarray:  # stable per-patient deviation of a test
        return patient_effect[:, _L[key]]

    def e() -> np.ndarray:  # measurement and day-to-day noise
        return rng.standard_normal(n)

    dis = c.dis[d.adm].astype(float)
    has = {k: dis[:, k] for k in range(10)}
    acute = (d.kind != _OUT).astype(float)
    male = c.male[c.pat[d.adm]]
    age = c.age[d.adm]
    sev = acute * np.log1p(c.severity[d.adm])
    reason = {name: acute * (c.reason[d.adm] == i) for name, i in _R.items()}
    infection = reason["sepsis"] + reason["pneumonia"] + reason["ams"]
    f = d.frac
    stage = c.ckd_stage[c.pat[d.adm]]
    ckd_mult = 1 + has[CKD] * (np.array([s[3] for s in _CKD_STAGES])[stage] - 1)
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
    anemia_mcv = has[ANEMIA] * np.array([t[2] for t in _ANEMIA_TYPES])[c.anemia_type[d.adm]]
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
    v["specimen_type"] = _pick(rng, _SPECIMEN_TYPES[1], n).astype(float)

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
    iron_def = has[ANEMIA] * (c.anemia_type[d.adm] == _AN_IRON)
    inflamed = np.maximum(has[CKD], acute * np.minimum(sev, 1))
    v["ferritin"] = 120 * np.exp(
        -2.0 * iron_def + 0.9 * inflamed * (1 - iron_def) + 0.5 * z("ferritin") + 0.2 * e()
    )
    v["iron"] = 75 * np.exp(-1.0 * iron_def - 0.4 * inflamed + 0.25 * z("iron") + 0.2 * e())
    v["tibc"] = 300 * np.exp(0.35 * iron_def - 0.15 * inflamed + 0.1 * z("tibc") + 0.08 * e())
    v["transferrin"] = 0.75 * v["tibc"] + 6 * e()
    b12_def = has[ANEMIA] * (c.anemia_type[d.adm] == _AN_B12)
    v["vitamin_b12"] = 480 * np.exp(-1.3 * b12_def + 0.3 * z("vitamin_b12") + 0.1 * e())
    v["vancomycin"] = 15 * np.exp(0.35 * has[CKD] + 0.35 * e())
    return np.column_stack([v[lab.key] for lab in _LABS])


def _panel_masks(c: _Cohort, d: _Draws, rng: np.random.Generator) -> np.ndarray:
    """Which tests each draw measured, [draws, tests]: routine panels almost always, special tests rarely
    and more often when relevant (HbA1c with diabetes, BNP with heart failure, troponin with CAD...)."""
    n = len(d.adm)
    has = c.dis[d.adm].astype(float)
    reason = c.reason[d.adm]
    kind = d.kind
    ed, am, stat, out = (kind == _ED), (kind == _AM), (kind == _STAT), (kind == _OUT)
    vent = c.ventilated[d.adm]
    chest = (reason == _R["nstemi"]) | (reason == _R["cabg"]) | (reason == _R["syncope"])
    infection = np.isin(reason, [_R[r] for r in _INFECTION])
    warfarin = has[:, AFIB] * c.warfarin[c.pat[d.adm]]
    # Tests drawn once per stay go on the stay's first in-hospital draw.
    inside = np.flatnonzero(~out)
    first_of_stay = np.zeros(n, bool)
    first_of_stay[inside[np.unique(d.adm[inside], return_index=True)[1]]] = True

    chance = {
        "coag": np.select([ed, am, stat], [0.7, 0.45, 0.3], 0.12) + 0.25 * warfarin,
        "blood_gas": np.select(
            [ed, am, stat], [0.12 + 0.5 * vent, 0.04 + 0.75 * vent, 0.08 + 0.85 * vent], 0.0
        ),
        "cardiac": np.select(
            [ed, am, stat],
            [
                0.15 + 0.15 * has[:, CAD] + 0.5 * chest,
                0.02 + 0.04 * has[:, CAD] + 0.3 * chest,
                0.03 + 0.4 * chest,
            ],
            0.01 + 0.02 * has[:, CAD],
        ),
        "bnp": np.select(
            [ed, am, stat],
            [0.05 + 0.15 * has[:, HF], 0.005 + 0.02 * has[:, HF], 0.0],
            0.01 + 0.05 * has[:, HF],
        ),
        "vanco": np.where(am | stat, 0.35 * infection, 0.0),
        "hba1c": np.where(out, 0.03 + 0.2 * has[:, DM], first_of_stay * (0.05 + 0.2 * has[:, DM])),
        "lipids": np.where(
            out, 0.05 + 0.25 * has[:, HLD], first_of_stay * (0.04 + 0.15 * has[:, HLD] + 0.12 * has[:, CAD])
        ),
        "iron": np.where(out, 0.01 + 0.04 * has[:, ANEMIA], first_of_stay * (0.05 + 0.15 * has[:, ANEMIA])),
        "b12": np.where(out, 0.005 + 0.02 * has[:, ANEMIA], first_of_stay * (0.03 + 0.07 * has[:, ANEMIA])),
    }
    measured = np.zeros((n, len(_LABS)), bool)
    for name, (tests, by_kind) in _PANELS.items():
        p = chance[name] if by_kind is None else np.array(by_kind)[kind]
        drawn = rng.random(n) < p
        for t in tests:
            measured[:, _L[t]] = drawn
    return measured


def _fixed(x: np.ndarray, decimals: np.ndarray) -> pa.Array:
    """Numbers as text with a per-row count of decimals, as the lab system prints them ("0.20", "7", "-3")."""
    scale = 10**decimals
    units = np.rint(np.abs(x) * scale).astype(np.int64)
    whole = pc.cast(pa.array(units // scale), pa.string())
    frac = pc.utf8_slice_codeunits(pc.cast(pa.array(units % scale + scale), pa.string()), 1)
    dot = pc.if_else(pa.array(decimals > 0), ".", "")
    sign = pc.if_else(pa.array((x < 0) & (units > 0)), "-", "")
    return pc.binary_join_element_wise(sign, whole, dot, frac, "")


def _write_labs(c: _Cohort, fmt: Format, path: Path, seed: int, report: Progress) -> int:
    """LABEVENTS / labevents, streamed per chunk of patients; returns the number of rows written."""
    m3 = fmt == "mimic3"
    itemids = np.array([lab.itemid if m3 else lab.itemid4 or lab.itemid for lab in _LABS])
    units = pa.array([lab.unit if m3 else lab.unit4 or lab.unit for lab in _LABS], pa.string())
    specimen_text = [s if m3 else s + "." for s in _SPECIMEN_TYPES[0]]
    providers = _provider_ids(np.random.default_rng([seed, 2]), 800)
    sink = _GzipCsv(path)
    chunks = _chunks(c)
    lines = next_id = specimens = 0
    for i, (p0, p1, a0, a1) in enumerate(chunks):
        rng = np.random.default_rng([seed, 3, i])
        draws = _draw_times(c, a0, a1, rng)
        values = _lab_values(c, draws, p0, p1, a0, a1, rng)
        r_draw, r_test = np.nonzero(_panel_masks(c, draws, rng))
        n = len(r_draw)

        # What the lab system prints: fixed decimals, "<0.01"/">150" beyond the reporting limits,
        # specimen types as text, and a few failed results ("HEMOLYZED", ...) without a number.
        x = values[r_draw, r_test]
        dec = _DECIMALS[r_test]
        shown = np.rint(x * 10.0**dec) / 10.0**dec + 0.0  # + 0.0 turns -0.0 into 0.0
        under, over = shown < _BELOW[r_test], shown > _ABOVE[r_test]
        text = r_test == _L["specimen_type"]
        error = (rng.random(n) < np.where(r_test == _L["potassium"], 0.006, 0.0012)) & ~text
        numeric = ~(under | over | text | error)
        censored = pc.binary_join_element_wise(
            _strings(["<", ">"], over.astype(np.int64)), _strings(_LIMIT_TEXT, r_test), ""
        )
        value = pc.if_else(pa.array(under | over), censored, _fixed(x, dec))
        value = pc.if_else(
            pa.array(text), _strings(specimen_text, np.where(text, x, 0).astype(np.int64)), value
        )
        failed = _strings(_ERROR_VALUES, rng.integers(0, len(_ERROR_VALUES), n))
        value = pc.if_else(pa.array(error), failed, value)
        male = c.male[c.pat[draws.adm[r_draw]]].astype(np.int64)
        low, high = _NORMAL[r_test, male, 0], _NORMAL[r_test, male, 1]
        reported = np.where(under, _BELOW[r_test], np.where(over, _ABOVE[r_test], shown))
        abnormal = ~text & ~error & ((reported < low) | (reported > high) | over)

        adm = draws.adm[r_draw]
        row_id = _ints(next_id + 1 + np.arange(n))
        subject = _ints(c.subject_id[c.pat[adm]])
        hadm = _ints(c.hadm_id[adm], draws.in_hadm[r_draw])
        item = _ints(itemids[r_test])
        charttime = _ts(draws.time).take(pa.array(r_draw))
        valuenum = pa.array(shown, pa.float64(), mask=~numeric)
        unit = units.take(pa.array(r_test))
        flag = _strings([None, "abnormal"], abnormal.astype(np.int64))
        if m3:
            columns = {
                "ROW_ID": row_id,
                "SUBJECT_ID": subject,
                "HADM_ID": hadm,
                "ITEMID": item,
                "CHARTTIME": charttime,
                "VALUE": value,
                "VALUENUM": valuenum,
                "VALUEUOM": unit,
                "FLAG": flag,
            }
        else:
            # one specimen per draw and panel; ids unique but scrambled like the real ones
            specimen = np.unique(r_draw * len(_PANELS) + _PANEL_OF[r_test], return_inverse=True)[1]
            specimen_id = (specimens + specimen + 1) * 2_654_435_761 % 90_000_000 + 10_000_000
            specimens += int(specimen.max()) + 1 if n else 0
            hidden = _MASKABLE[r_test] & numeric & (rng.random(n) < 0.3)  # "___" with valuenum and a comment
            has_range = ~np.isnan(low) & ~text
            n_draws = len(draws.time)
            store = draws.time + rng.lognormal(np.log(70), 0.6, n_draws).astype(np.int64) * 60
            provider = np.where(
                rng.random(n_draws) < 0.16, rng.integers(0, len(providers), n_draws), len(providers)
            )
            kind = draws.kind[r_draw]
            columns = {
                "labevent_id": row_id,
                "subject_id": subject,
                "hadm_id": hadm,
                "specimen_id": _ints(specimen_id),
                "itemid": item,
                "order_provider_id": _strings([*providers, None], provider[r_draw]),
                "charttime": charttime,
                "storetime": _ts(store).take(pa.array(r_draw)),
                "value": pc.if_else(pa.array(hidden), "___", value),
                "valuenum": valuenum,
                "valueuom": unit,
                "ref_range_lower": pa.array(low, pa.float64(), mask=~has_range),
                "ref_range_upper": pa.array(high, pa.float64(), mask=~has_range),
                "flag": flag,
                "priority": _strings(
                    ["STAT", "ROUTINE", None], np.select([kind == _AM, kind == _OUT], [1, 2], 0)
                ),
                "comments": _strings(
                    [*_MIMIC4_MASKED.values(), None],
                    np.where(hidden, _COMMENT_OF[r_test], len(_MIMIC4_MASKED)),
                ),
            }
        if i == 0:
            sink.write(_header(list(columns), m3))
        duplicate = rng.random(n) < 0.002  # exact duplicate rows, as a repeated export leaves them
        rows = pa.array(np.repeat(np.arange(n), 1 + duplicate))
        sink.write(_csv_lines([col.take(rows) for col in columns.values()], m3))
        next_id += n
        lines += len(rows)
        report("labevents", (i + 1) / len(chunks))
    sink.close()
    return lines


# ----------------------------------------------------------------------------------------------------
# Notes
# ----------------------------------------------------------------------------------------------------
class _Note(NamedTuple):
    adm: int
    chart: int | None  # seconds; None for discharge summaries, which MIMIC-III dates by CHARTDATE only
    store: int | None
    category: str
    description: str
    cgid: int | None
    error: int | None
    text: str


def _admission_notes(c: _Cohort, a: int, m3: bool, rng: np.random.Generator) -> list[_Note]:
    """The notes of one admission: its discharge summary (if any) and, in MIMIC-III, some other notes."""
    notes = []
    admit, disch = int(c.admit[a]), int(c.disch[a])
    if c.has_note[a]:
        text = _discharge_summary(c, a, m3, rng)
        store = disch + int(rng.uniform(2, 72) * 3600) // 60 * 60
        if m3 and rng.random() < 0.01:  # an erroneous copy (ISERROR = 1), sometimes the only summary
            notes.append(_Note(a, None, None, "Discharge summary", "Report", None, 1, text))
            if rng.random() < 0.4:
                return notes
        notes.append(_Note(a, None, None if m3 else store, "Discharge summary", "Report", None, None, text))
    if m3:
        if rng.random() < 0.08:
            t = (admit + int(rng.random() * (disch - admit))) // 60 * 60
            cgid = int(rng.integers(14000, 21000))
            error = 1 if rng.random() < 0.01 else None
            store = t + int(rng.uniform(5, 90)) * 60
            notes.append(_Note(a, t, store, "Nursing/other", "Report", cgid, error, _nursing_note(c, a, rng)))
        if rng.random() < 0.08:
            t = (admit + int(rng.random() * (disch - admit))) // 60 * 60
            report = _radiology_report(c, a, t, rng)
            notes.append(_Note(a, t, None, "Radiology", "CHEST (PORTABLE AP)", None, None, report))
    return notes


def _write_notes(c: _Cohort, fmt: Format, path: Path, seed: int, report: Progress) -> int:
    """NOTEEVENTS (discharge summaries plus some nursing and radiology notes) or note/discharge; returns rows."""
    m3 = fmt == "mimic3"
    note_seq = np.random.default_rng([seed, 5]).integers(1, 30, len(c.subject_id))  # MIMIC-IV: per patient
    sink = _GzipCsv(path)
    chunks = _chunks(c)
    written = 0
    for i, (_, _, a0, a1) in enumerate(chunks):
        rng = np.random.default_rng([seed, 4, i])
        notes = [note for a in range(a0, a1) for note in _admission_notes(c, a, m3, rng)]
        adm = np.array([n.adm for n in notes], np.int64)
        pat = c.pat[adm]
        text = pa.array([n.text for n in notes], pa.string())
        store = pa.array([n.store for n in notes], pa.int64()).cast(pa.timestamp("s"))
        if m3:
            chart = np.array([c.disch[n.adm] if n.chart is None else n.chart for n in notes], np.int64)
            columns = {
                "ROW_ID": _ints(written + 1 + np.arange(len(notes))),
                "SUBJECT_ID": _ints(c.subject_id[pat]),
                "HADM_ID": _ints(c.hadm_id[adm]),
                "CHARTDATE": _date(chart, np.ones(len(notes), bool)),
                "CHARTTIME": pa.array([n.chart for n in notes], pa.int64()).cast(pa.timestamp("s")),
                "STORETIME": store,
                "CATEGORY": pa.array([n.category for n in notes], pa.string()),
                "DESCRIPTION": pa.array([n.description for n in notes], pa.string()),
                "CGID": pa.array([n.cgid for n in notes], pa.int64()),
                "ISERROR": pa.array([n.error for n in notes], pa.int64()),
                "TEXT": text,
            }
        else:
            seq = note_seq[pat] + np.arange(len(notes)) - np.searchsorted(pat, pat)
            columns = {
                "note_id": pa.array(
                    [f"{s}-DS-{q}" for s, q in zip(c.subject_id[pat], seq, strict=True)], pa.string()
                ),
                "subject_id": _ints(c.subject_id[pat]),
                "hadm_id": _ints(c.hadm_id[adm]),
                "note_type": pa.array(["DS"] * len(notes), pa.string()),
                "note_seq": _ints(seq),
                "charttime": _ts(c.disch[adm] // _DAY * _DAY),
                "storetime": store,
                "text": text,
            }
        if i == 0:
            sink.write(_header(list(columns), m3))
        sink.write(_csv_lines(list(columns.values()), m3))
        written += len(notes)
        report("notes", (i + 1) / len(chunks))
    sink.close()
    return written


def _date_tag(seconds: int, m3: bool) -> str:
    """A de-identified date as the note text shows it: "[**2151-7-16**]" (MIMIC-III) or "___" (MIMIC-IV)."""
    if not m3:
        return "___"
    day = np.datetime64(int(seconds), "s").astype(object)
    return f"[**{day.year}-{day.month}-{day.day}**]"


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _choose(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _discharge_summary(c: _Cohort, a: int, m3: bool, rng: np.random.Generator) -> str:
    """A discharge summary. Chief Complaint, HPI, Past Medical History and Medications on Admission carry
    partial, noisy evidence (missing, false and negated mentions); Brief Hospital Course, Discharge
    Medications and Discharge Diagnosis state the coded diseases outright."""
    p = c.pat[a]
    male = bool(c.male[p])
    he = "He" if male else "She"
    age = c.age0[p] + (c.admit[a] - c.admit[c.first[p]]) / _YEAR  # c.age[a] without the whole array: O(1)
    age_text = ("[**Age over 90 **]" if m3 else "___") if age > 89 else str(int(age))
    name = ("Mr. " if male else "Ms. ") + (
        f"[**Known lastname {int(rng.integers(100, 9999))}**]" if m3 else "___"
    )
    reason = _REASONS[c.reason[a]]
    dis = c.dis[a]
    positives = [d for d in range(10) if dis[d]]
    unknown = rng.random() < _UNKNOWN_HISTORY
    damp = 0.2 if unknown else 1.0

    mentioned, negated, home_meds = [], [], []
    for d, (p_mention, p_med, p_false, p_negated) in _TEXT_RATES.items():
        if dis[d]:
            if rng.random() < p_mention * damp:
                mentioned.append(d)
            if rng.random() < p_med * damp:
                home_meds.append(d)
            if rng.random() < 0.05:  # positives deny a symptom too
                negated.append(d)
        else:
            if rng.random() < p_false * damp:
                mentioned.append(d)
            if rng.random() < p_negated:
                negated.append(d)

    def term(d: int) -> str:
        if d == CKD and c.ckd_stage[p] == _ESRD and dis[CKD]:
            return "ESRD on HD"
        return _choose(rng, _MENTIONS[d])

    history = [term(d) for d in mentioned if d != AKI]
    if unknown:
        summary = "unknown past medical history"
    elif history:
        summary = ", ".join(history[:-1]) + (" and " if len(history) > 1 else "") + history[-1]
    else:
        summary = "no significant past medical history"
    complaint = _choose(rng, reason.complaints)
    article = "an" if age_text.startswith("8") or age_text in ("11", "18") else "a"
    hpi = [
        f"{name} is {article} {age_text} y/o {'man' if male else 'woman'} with {summary} who presents with {complaint}."
    ]
    hpi.append(_choose(rng, _NARRATIVE[reason.name]).format(P=he))
    if AKI in mentioned:
        if rng.random() < 0.5:
            hpi.append(_AKI_HPI.format(cr=rng.uniform(1.8, 4.5), base=rng.uniform(0.7, 1.3)))
        else:
            hpi.append(f"{he} was found to be in {term(AKI)}.")
    for d in negated:
        phrase = _choose(rng, _NEGATED[d])
        hpi.append(f"{he} {phrase}." if phrase.startswith("denies") else phrase[0].upper() + phrase[1:] + ".")
    if rng.random() < 0.03:
        hpi.append(_choose(rng, _FAMILY_TRAPS))
    for _ in range(int(rng.integers(1, 3))):
        hpi.append(_choose(rng, _IRRELEVANT).format(P=he, p=he.lower()))

    if unknown:
        pmh = "Unable to obtain; patient intubated and sedated." + (
            "\n" + "\n".join(history) if history else ""
        )
    else:
        items = history + [
            str(x) for x in rng.choice(_OTHER_HISTORY, size=int(rng.integers(0, 4)), replace=False)
        ]
        rng.shuffle(items)
        style = int(rng.integers(3))
        if not items:
            pmh = "None"
        elif style == 0:
            pmh = "\n".join(f"- {x}" for x in items)
        elif style == 1:
            pmh = "\n".join(f"{k}. {x}" for k, x in enumerate(items, 1))
        else:
            pmh = ", ".join(items)

    def med(d: int) -> str:
        options = _MEDS[d]
        if d == AFIB:  # warfarin for the patients whose INR shows it
            return options[0] if c.warfarin[p] else _choose(rng, options[1:])
        return _choose(rng, options)

    admission_meds = [med(d) for d in home_meds if _MEDS[d]]
    admission_meds += [m for m in _SHARED_MEDS if rng.random() < 0.12]
    admission_meds += [str(x) for x in rng.choice(_FILLER_MEDS, size=int(rng.integers(0, 6)), replace=False)]
    admission_meds = list(dict.fromkeys(admission_meds))
    rng.shuffle(admission_meds)
    if unknown and not admission_meds:
        meds_text = "Unable to obtain"
    else:
        meds_text = "\n".join(f"{k}. {m}" for k, m in enumerate(admission_meds, 1)) or "None"

    titles = [_TITLES[d] for d in positives]
    history_titles = ", ".join(titles) or "no significant history"
    course = [
        f"{age_text} y/o {'M' if male else 'F'} with {history_titles} admitted with {reason.title}.",
        f"# {_capital(reason.title)}: {_choose(rng, _NARRATIVE[reason.name]).format(P=he)} Treated and improved.",
    ]
    course += [f"# {_TITLES[d]}: {_COURSE[d]}" for d in positives if rng.random() < 0.95]
    discharge_meds = list(
        dict.fromkeys([med(d) for d in positives if _MEDS[d] and rng.random() < 0.9] + admission_meds)
    )
    secondary = [t for t in titles if rng.random() < 0.97]
    diagnosis = f"Primary:\n{_capital(reason.title)}" + (
        "\n\nSecondary:\n" + "\n".join(secondary) if secondary else ""
    )
    disposition = "Expired" if c.died[a] else _choose(rng, _FILLER["disposition"])
    smoking = "Former smoker, quit 10 years ago." if c.smoker[p] else "Never smoker."
    social = f"{_choose(rng, _FILLER['living'])} {smoking} {_choose(rng, _FILLER['alcohol'])}"
    vitals = {
        "t": rng.uniform(97, 101.5),
        "sbp": rng.integers(95, 175),
        "dbp": rng.integers(50, 95),
        "hr": rng.integers(60, 125),
        "rr": rng.integers(12, 28),
        "sat": rng.integers(88, 100),
    }
    procedure = "CABG x3" if reason.name == "cabg" else _choose(rng, _FILLER["procedure"])
    sections = {
        "Chief Complaint": complaint,
        "Major Surgical or Invasive Procedure": procedure,
        "History of Present Illness": " ".join(hpi),
        "Past Medical History": pmh,
        "Social History": social,
        "Family History": _choose(rng, _FILLER["family"]),
        "Physical Exam": _EXAM.format(**vitals),
        "Pertinent Results": "CXR: " + _choose(rng, _FILLER["cxr"]),
        "Brief Hospital Course": "\n\n".join(course),
        "Medications on Admission": meds_text,
        "Discharge Medications": "\n".join(f"{k}. {m}" for k, m in enumerate(discharge_meds, 1)) or "None",
        "Discharge Disposition": disposition,
        "Discharge Diagnosis": diagnosis,
        "Discharge Condition": _CONDITION,
        "Discharge Instructions": _INSTRUCTIONS.format(reason.title),
        "Followup Instructions": "[**Last Name (LF) **],[**First Name3 (LF) **] in 1 week" if m3 else "___",
    }
    sex = "M" if male else "F"
    service = _SERVICE.get(reason.name, "MEDICINE")
    allergies = _choose(rng, _FILLER["allergies"])
    if m3:
        admit_tag, disch_tag = _date_tag(c.admit[a], m3), _date_tag(c.disch[a], m3)
        head = (
            f"Admission Date:  {admit_tag}              Discharge Date:   {disch_tag}\n\n"
            f"Date of Birth:  {_date_tag(c.dob[p], m3)}             Sex:   {sex}\n\n"
            f"Service: {service}\n\nAllergies:\n{allergies}\n\n"
            f"Attending:[**First Name3 (LF) {int(rng.integers(100, 9999))}**]\n"
        )
        body = "\n\n".join(f"{title}:\n{content}" for title, content in sections.items())
        return head + body + f"\n\n\n\nCompleted by:{disch_tag}"
    head = (
        " \nName:  ___                     Unit No:   ___\n"
        " \nAdmission Date:  ___              Discharge Date:   ___\n"
        f" \nDate of Birth:  ___             Sex:   {sex}\n \nService: {service}\n"
        f" \nAllergies: \n{allergies}\n \nAttending: ___.\n \n"
    )
    return head + "\n \n".join(f"{title}:\n{content}" for title, content in sections.items()) + "\n"


def _radiology_report(c: _Cohort, a: int, t: int, rng: np.random.Generator) -> str:
    """A portable chest x-ray report (MIMIC-III NOTEEVENTS, category Radiology)."""
    dis = c.dis[a]
    if c.reason[a] == _R["pneumonia"]:
        impression = "Right lower lobe opacity concerning for pneumonia."
    elif dis[HF] and rng.random() < 0.6:
        impression = "Cardiomegaly with mild pulmonary vascular congestion."
    elif dis[COPD] and rng.random() < 0.5:
        impression = "Hyperinflated lungs without focal consolidation."
    else:
        impression = "No acute cardiopulmonary process."
    when = np.datetime64(t, "s").astype(object)
    return (
        f"{_date_tag(t, True)} {when:%I:%M %p}\n CHEST (PORTABLE AP)"
        f"                                             Clip # [**Clip Number (Radiology) {int(rng.integers(10000, 99999))}**]\n"
        f" Reason: {_REASONS[c.reason[a]].complaints[0]}\n"
        " ______________________________________________________________________________\n"
        "                                 FINAL REPORT\n"
        f" INDICATION: {_REASONS[c.reason[a]].diagnosis.lower()}.\n\n COMPARISON: None.\n\n"
        f" IMPRESSION: {impression}\n"
    )


def _nursing_note(c: _Cohort, a: int, rng: np.random.Generator) -> str:
    """A short nursing progress note (MIMIC-III NOTEEVENTS, category Nursing/other)."""
    rhythm = "AFib" if c.dis[a, AFIB] and rng.random() < 0.7 else "SR"
    return (
        f"NPN 7a-7p\nNEURO: A+Ox3, MAE.\nCV: HR {int(rng.integers(60, 120))} {rhythm}, BP stable.\n"
        f"RESP: LS clear, sats {int(rng.integers(90, 100))}% on 2L NC.\n"
        "GI/GU: Tolerating diet. Foley draining clear yellow urine.\nPLAN: Continue to monitor, update family.\n"
    )
