"""Discharge-summary phrases: per-disease evidence for the allowed sections (mentions, negations, home
medications) and the answer for the discharge sections (titles, hospital course), plus filler text."""

from medfuse.data.synth.conditions import AFIB, AKI, ANEMIA, CAD, CKD, COPD, DM, HF, HLD, HTN

# fmt: off
# (mentioned when positive, home medication when positive, false mention when negative, negated when negative)
TEXT_RATES = {
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
UNKNOWN_HISTORY = 0.08  # notes whose history could not be obtained: mentions mostly missing
MENTIONS = {
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
NEGATED = {
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
FAMILY_TRAPS = ("Family history significant for CAD in father.", "Mother with diabetes.", "Brother with COPD.")
AKI_HPI = "Labs notable for Cr of {cr:.1f} (baseline {base:.1f})."
MEDS = {
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
SHARED_MEDS = ("Metoprolol Tartrate 25 mg PO BID", "Aspirin 81 mg PO DAILY", "Atorvastatin 20 mg PO QPM")
FILLER_MEDS = (
    "Omeprazole 20 mg PO DAILY", "Docusate Sodium 100 mg PO BID", "Senna 8.6 mg PO BID:PRN constipation",
    "Levothyroxine Sodium 50 mcg PO DAILY", "Sertraline 50 mg PO DAILY", "Acetaminophen 650 mg PO Q6H:PRN pain",
    "Gabapentin 300 mg PO TID", "Tamsulosin 0.4 mg PO QHS", "Multivitamins 1 TAB PO DAILY",
    "Vitamin D 1000 UNIT PO DAILY", "Allopurinol 100 mg PO DAILY", "Trazodone 50 mg PO QHS:PRN insomnia",
)
OTHER_HISTORY = (
    "hypothyroidism", "GERD", "depression", "gout", "OSA on CPAP", "BPH", "osteoarthritis", "s/p cholecystectomy",
    "anxiety", "glaucoma", "s/p appendectomy", "osteoporosis", "h/o DVT", "chronic low back pain", "obesity",
)
TITLES = {
    HTN: "Hypertension", CAD: "Coronary artery disease", AFIB: "Atrial fibrillation", HF: "Congestive heart failure",
    DM: "Diabetes mellitus type 2", HLD: "Hyperlipidemia", CKD: "Chronic kidney disease",
    AKI: "Acute kidney injury", COPD: "COPD", ANEMIA: "Anemia",
}
COURSE = {
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
NARRATIVE = {
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
IRRELEVANT = (
    "In the ED, initial vitals were T 98.4 HR 96 BP 132/78 RR 20 O2 sat 95% RA.",
    "{P} was given 1L NS and ceftriaxone in the ED.",
    "Of note, {p} was recently seen in clinic for a routine visit.",
    "{P} lives at home with family and is independent in ADLs.",
    "ROS otherwise negative in detail.",
    "{P} denies recent travel or sick contacts.",
)

FILLER = {  # sections with no disease evidence
    "procedure": ("None", "None", "Central line placement", "Intubation"),
    "living": ("Lives with wife.", "Lives with husband.", "Lives with daughter.", "Lives alone."),
    "alcohol": ("Occasional EtOH.", "Denies EtOH or illicit drug use.", "Drinks 1-2 beers daily."),
    "family": ("Non-contributory.", "Father with MI at 60.", "Mother with diabetes and HTN.", "No family history of early MI or sudden death."),
    "cxr": ("No acute cardiopulmonary process.", "Low lung volumes, bibasilar atelectasis.", "Small bilateral pleural effusions."),
    "disposition": ("Home", "Home With Service", "Extended Care"),
    "allergies": ("No Known Allergies / Adverse Drug Reactions", "Patient recorded as having No Known Allergies to Drugs", "Penicillins", "Sulfa (Sulfonamide Antibiotics)", "Codeine", "lisinopril"),
}
EXAM = ("VS: T {t:.1f} BP {sbp}/{dbp} HR {hr} RR {rr} O2 sat {sat}% RA\nGEN: NAD, lying in bed\nHEENT: MMM, OP clear\n"
         "CV: RRR, no m/r/g\nLUNGS: CTAB\nABD: soft, NT/ND\nEXT: no c/c/e")
CONDITION = "Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\nActivity Status: Ambulatory - Independent."
INSTRUCTIONS = "You were admitted to the hospital for {}. Please take your medications as prescribed and keep your follow-up appointments."
SERVICE = {"cabg": "CARDIOTHORACIC", "hip_fracture": "ORTHOPAEDICS", "stroke": "NEUROLOGY"}
# fmt: on
