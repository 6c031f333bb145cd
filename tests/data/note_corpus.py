"""A realistic discharge-summary corpus for the section-extraction leak tests, independent of ``medfuse synth``.

Three layouts: MIMIC-III CareVue-era (ALL CAPS headers, ``[** **]`` de-identification, bodies often
on the header line), MIMIC-III Metavision-era (Title Case headers) and MIMIC-IV-Note (``___``
de-identification, `` \\n`` separators, ``# CHF:`` problem lines, ``Transitional Issues:``). Every
section carries unique marker words (``zq`` + 8 random letters): markers of the four allowed sections
must survive extraction, markers of every other section must never appear in the output.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

STYLES = ("carevue", "metavision", "mimic4")

ALLOWED_SPELLINGS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("CHIEF COMPLAINT", "Chief Complaint", "CC", "REASON FOR ADMISSION"),
    "present_illness": ("HISTORY OF PRESENT ILLNESS", "History of Present Illness", "HISTORY OF THE PRESENT ILLNESS",
                        "HPI"),
    "past_history": ("PAST MEDICAL HISTORY", "Past Medical History", "PAST MEDICAL HISTORY/PAST SURGICAL HISTORY",
                     "PAST MEDICAL HISTORY / PAST SURGICAL HISTORY", "PMH", "PAST HISTORY",
                     "Past Medical/Surgical History"),
    "admission_medications": ("MEDICATIONS ON ADMISSION", "Medications on Admission", "MEDICATIONS PRIOR TO ADMISSION",
                              "Home medications", "ADMISSION MEDICATIONS", "Medications at home"),
}

# Headers that must end a kept section: answer-bearing ones first (many without the word "discharge"),
# then others; some are in no vocabulary and are found by the header grammar alone.
DROPPED_HEADERS = (
    "FINAL DIAGNOSES", "PRINCIPAL DIAGNOSIS", "PRIMARY DIAGNOSIS", "SECONDARY DIAGNOSES", "ASSESSMENT AND PLAN",
    "Assessment/Plan", "IMPRESSION", "HOSPITAL COURSE", "SUMMARY OF HOSPITAL COURSE", "ICU COURSE",
    "Brief Hospital Course", "Transitional Issues", "ACTIVE ISSUES", "CHRONIC ISSUES", "PROCEDURES",
    "Major Surgical or Invasive Procedure", "Pertinent Results", "LABORATORY DATA", "STUDIES",
    "PHYSICAL EXAMINATION", "Physical Exam on Admission", "SOCIAL HISTORY", "FAMILY HISTORY", "REVIEW OF SYSTEMS",
    "ALLERGIES", "CODE STATUS", "CONDITION AT DISCHARGE", "DISPOSITION", "FOLLOW-UP", "Followup Instructions",
    "INSTRUCTIONS", "MEDICATIONS ON DISCHARGE", "New Medications", "Changes to medications", "DICTATED BY",
    "Completed by", "Addendum", "Consults", "RADIOLOGY", "EKG", "Micro", "CXR", "DISCHARGE DIAGNOSES",
    "Discharge Medications", "Discharge Disposition", "Discharge Condition", "Discharge Instructions",
    "Outpatient medications", "Problem List", "ED COURSE",
    # in no vocabulary: the grammar must find them
    "RENAL ISSUES", "Cardiology Recommendations", "HEME/ONC", "Goals of Care", "Medications to stop",
    "___ Diagnosis", "Labs at Discharge", "CARDIAC CATHETERIZATION", "TTE (2D Echo)", "Wound Care",
    "Pending Results", "O2 Requirement",
)
ANSWER_BEARING = DROPPED_HEADERS[:15] + ("MEDICATIONS ON DISCHARGE", "New Medications", "Changes to medications",
                                         "DISCHARGE DIAGNOSES", "Discharge Medications", "___ Diagnosis")

COMPLAINTS = ("shortness of breath", "chest pain", "fever and cough", "abdominal pain", "syncope", "altered mental status",
              "lower extremity swelling", "hip pain after fall")
HISTORY = ("Hypertension", "CAD s/p CABG", "Atrial fibrillation on coumadin", "COPD on home O2", "Diabetes mellitus type 2",
           "Hyperlipidemia", "Chronic kidney disease stage III", "Hypothyroidism", "GERD", "Osteoarthritis",
           "Depression", "BPH", "Gout", "Anemia of chronic disease")
DRUGS = ("Lisinopril 10 mg", "Metoprolol Tartrate 25 mg", "Furosemide 40 mg", "Aspirin 81 mg", "Atorvastatin 40 mg",
         "Warfarin 5 mg", "Metformin 500 mg", "Levothyroxine 50 mcg", "Omeprazole 20 mg", "Tiotropium 18 mcg",
         "Allopurinol 100 mg", "Tamsulosin 0.4 mg", "Sertraline 50 mg", "Insulin glargine 20 units")


@dataclass
class Note:
    """One discharge summary and the marker words of its kept and dropped sections."""

    text: str
    style: str
    kept: dict[str, list[str]] = field(default_factory=dict)  # allowed section -> its markers
    dropped: list[str] = field(default_factory=list)


class _Writer:
    def __init__(self, rng: random.Random, style: str, seen: set[str]):
        self.rng, self.style, self.seen = rng, style, seen
        self.note = Note("", style)

    def marker(self, section: str | None) -> str:
        while True:
            m = "zq" + "".join(self.rng.choices(string.ascii_lowercase, k=8))
            if m not in self.seen:
                break
        self.seen.add(m)
        if section is None:
            self.note.dropped.append(m)
        else:
            self.note.kept.setdefault(section, []).append(m)
        return m

    def deid(self, what: str) -> str:
        return "___" if self.style == "mimic4" else f"[**{what}**]"

    def header(self, spelling: str) -> str:
        return spelling.upper() if self.style == "carevue" else spelling

    # -- the four allowed sections: every line carries a marker, tricky header-like lines included --
    def chief_complaint(self) -> list[str]:
        return [f"{self.rng.choice(COMPLAINTS).capitalize()} {self.marker('chief_complaint')}"]

    def present_illness(self) -> list[str]:
        r, m = self.rng, lambda: self.marker("present_illness")
        name = self.deid(f"Known lastname {r.randint(100, 9999)}")
        lines = [  # templates, so that only the lines used get markers
            lambda: f"Mr. {name} is a {r.randint(40, 89)} yo M with HTN, CAD, afib who presents with "
                    f"{r.choice(COMPLAINTS)} {m()}.  He denies chest pain {m()}.  No fevers {m()}.",
            lambda: f'Patient states: "I feel tired {m()}".',
            lambda: f"In the ED, initial vitals: T 98.6 HR {r.randint(60, 120)} BP 142/78 RR 18 O2 sat 95% RA {m()}.",
            lambda: f"WBC: {r.uniform(4, 20):.1f}  Hgb: {r.uniform(7, 15):.1f} {m()}",
            lambda: f"Na: {r.randint(128, 145)} K: {r.uniform(3, 5.5):.1f} Cr: {r.uniform(0.6, 3):.1f} {m()}",
            lambda: f"Cr 1.2: baseline per outpatient records {m()}",
            lambda: f"BP: {r.randint(90, 180)}/{r.randint(50, 100)} on arrival {m()}",
            lambda: f"10:30 pm: given aspirin 325 mg and nitro SL {m()}",
            lambda: f"At 10:30 he received lasix 40 mg IV x1 {m()}.   Pt reports: breathing better {m()}",
            lambda: f"Of note, the patient was recently discharged from rehab: still weak {m()}.",
        ]
        r.shuffle(lines)
        return [make() for make in lines[: r.randint(4, len(lines))]]

    def past_history(self) -> list[str]:
        r, m = self.rng, lambda: self.marker("past_history")
        items = r.sample(HISTORY, r.randint(3, 7))
        style = r.randrange(6)
        if style == 4:  # the Metavision cardiology template
            return [f"1. CARDIAC RISK FACTORS: +Diabetes, +Dyslipidemia, +Hypertension {m()}",
                    f"2. CARDIAC HISTORY: {m()}", f"-CABG: {r.randint(2090, 2110)} LIMA-LAD {m()}",
                    f"-PERCUTANEOUS CORONARY INTERVENTIONS: stent to RCA {m()}", f"-PACING/ICD: none {m()}",
                    f"3. OTHER PAST MEDICAL HISTORY: {m()}", *(f"{x} {m()}" for x in items)]
        if style == 5:  # MIMIC-IV oncology layout: sub-headers that are allowed spellings themselves
            return [f"PAST ONCOLOGIC HISTORY: {m()}", f"Diagnosed with breast cancer in ___ {m()}",
                    "OTHER PAST MEDICAL HISTORY:", *(f"- {x} {m()}" for x in items)]
        if style == 0:
            lines = [f"{k}. {x} {m()}." for k, x in enumerate(items, 1)]
        elif style == 1:
            lines = [f"{k}) {x}: stable {m()}" for k, x in enumerate(items, 1)]
        elif style == 2:
            lines = [f"- {x}: followed by PCP {m()}" for x in items]
        else:
            lines = [f"# {x}: on home regimen {m()}" if k % 2 else f"{x} {m()}" for k, x in enumerate(items)]
        lines.append(f"s/p appendectomy {r.randint(1990, 2010)} {m()}")
        if r.random() < 0.1:  # a known loss: an unnumbered "CAD:" item reads as a header and ends the section
            lines.insert(r.randint(0, len(lines)), f"CAD: s/p PCI to LAD {m()}")
        return lines

    def admission_medications(self) -> list[str]:
        r, m = self.rng, lambda: self.marker("admission_medications")
        drugs = r.sample(DRUGS, r.randint(3, 8))
        lines = ["The Preadmission Medication list is accurate and complete. " + m()] if self.style == "mimic4" else []
        for k, d in enumerate(drugs, 1):
            form = r.randrange(4)
            if form == 0:
                lines.append(f"{k}. {d} Tablet Sig: One (1) Tablet PO DAILY (Daily). {m()}")
            elif form == 1:
                lines += [f"{k}. {d} Tablet {m()}", f"Sig: One (1) Tablet PO BID (2 times a day). {m()}"]
            elif form == 2:
                lines.append(f"{d}: daily {m()}")
            else:
                lines.append(f"{k}. {d} PO DAILY {m()}")
        return lines

    # -- everything else ---------------------------------------------------------------------
    def other(self, spelling: str) -> list[str]:
        r, m = self.rng, lambda: self.marker(None)
        lines = [f"{r.choice(('Acute on chronic systolic heart failure', 'Community acquired pneumonia', 'NSTEMI'))} {m()}"]
        if "COURSE" in spelling.upper() or "ISSUES" in spelling.upper():
            lines += [f"# CHF: diuresed with IV lasix {m()}", f"# Chief Complaint: resolved {m()}",
                      f"# History of Present Illness: as above {m()}", f"1. Past Medical History: unchanged {m()}"]
        if "MEDICATION" in spelling.upper():
            lines += [f"1. Furosemide 80 mg Tablet Sig: One (1) Tablet PO BID {m()}",
                      f"Disp:*60 Tablet(s)* Refills:*2* {m()}"]
        if "RESULT" in spelling.upper() or "LAB" in spelling.upper():
            lines += [f"{self.deid('2151-7-16')} 07:30AM BLOOD WBC-7.5 RBC-3.9 Hgb-11.2 {m()}", f"WBC: 11.2 {m()}"]
        if r.random() < 0.3:
            lines.append(f"Primary: heart failure {m()}")
        return lines


def _head(w: _Writer) -> list[str]:
    m = lambda: w.marker(None)
    if w.style == "mimic4":
        return [f" \nName:  ___ {m()}                    Unit No:   ___ {m()}",
                f" \nAdmission Date:  ___ {m()}             Discharge Date:   ___ {m()}",
                f" \nDate of Birth:  ___ {m()}            Sex:   M {m()}", f" \nService: MEDICINE {m()}",
                f" \nAllergies: \nPenicillins {m()}", f" \nAttending: ___. {m()}"]
    return [f"Admission Date:  {w.deid('2151-7-16')} {m()}              Discharge Date:   {w.deid('2151-8-4')} {m()}",
            f"\nDate of Birth:  {w.deid('2080-1-2')} {m()}             Sex:   F {m()}",
            f"\nService: {'MEDICINE' if w.rng.random() < 0.5 else 'CARDIOTHORACIC'} {m()}"]


def make_note(rng: random.Random, style: str, seen: set[str]) -> Note:
    """One discharge summary in ``style``; ``seen`` keeps marker words unique across the corpus."""
    w = _Writer(rng, style, seen)
    sep = "\n \n" if style == "mimic4" else rng.choice(("\n\n", "\n"))
    allowed = [s for s in ALLOWED_SPELLINGS if rng.random() < 0.9] or ["present_illness"]
    rng.shuffle(allowed)
    # every allowed section is followed by another section, answer-bearing more often than not
    others = list(DROPPED_HEADERS)
    rng.shuffle(others)
    blocks: list[str] = []
    for section in allowed:
        spelling = w.header(rng.choice(ALLOWED_SPELLINGS[section]))
        body = getattr(w, section)()
        nxt = w.header(rng.choice(ANSWER_BEARING) if rng.random() < 0.6 else others.pop())
        same_line = style == "carevue" and rng.random() < 0.5
        blocks.append(f"{spelling}:  {body[0]}" + "".join(f"\n{x}" for x in body[1:]) if same_line
                      else f"{spelling}:\n" + "\n".join(body))
        next_body = w.other(nxt)
        if rng.random() < 0.15:  # MIMIC-III wrapping: the next header follows on the body's last line
            blocks[-1] += f"   {nxt}:  " + "\n".join(next_body)
        else:
            blocks.append(f"{nxt}:{'  ' if rng.random() < 0.3 else chr(10)}" + "\n".join(next_body))
    for spelling in others[: rng.randint(2, 6)]:
        blocks.insert(rng.randint(0, len(blocks)), f"{w.header(spelling)}:\n" + "\n".join(w.other(spelling)))
    tail = [f"\n\n{w.deid('First Name11 (Name Pattern1) 1234')} MD {w.marker(None)}",
            f"Completed by:{w.deid('2151-8-4')} {w.marker(None)}"] if style != "mimic4" else []
    w.note.text = "\n".join(_head(w)) + sep + sep.join(blocks) + "\n".join(tail) + "\n"
    return w.note


def make_corpus(n: int, seed: int = 0, styles: tuple[str, ...] = STYLES) -> list[Note]:
    """``n`` notes, the styles in turn."""
    rng, seen = random.Random(seed), set()
    return [make_note(rng, styles[i % len(styles)], seen) for i in range(n)]
