import re
from collections import Counter

import pytest
from note_corpus import DROPPED_HEADERS, STYLES, make_corpus

from medfuse.data.sections import extract_sections

MARKER = re.compile(r"zq[a-z]{8}")

NOTE = """Admission Date:  [**2151-7-16**]       Discharge Date:  [**2151-8-4**]
Chief Complaint:
Shortness of breath

HISTORY OF PRESENT ILLNESS:  72 yo M with HTN, CAD, afib.
Denies chest pain.
Pt states: "I feel tired".
Past Medical History:
1. CHF  2. DM2
Brief Hospital Course:
Admitted for CHF exacerbation, diuresed.
Medications on Admission:
Lasix 40 mg daily
Discharge Medications:
Lasix 80 mg daily
Discharge Diagnosis:
Acute on chronic systolic heart failure
"""


def test_only_allowed_sections_are_kept():
    s = extract_sections(NOTE)
    assert s == {
        "chief_complaint": "Shortness of breath",
        "present_illness": '72 yo M with HTN, CAD, afib.\nDenies chest pain.\nPt states: "I feel tired".',
        "past_history": "1. CHF 2. DM2",
        "admission_medications": "Lasix 40 mg daily",
    }
    kept = " ".join(s.values())
    for answer in ("diuresed", "80 mg", "systolic heart failure"):
        assert answer not in kept


def test_note_without_known_sections():
    assert extract_sections("free text without any header\nat all") == {}


def headers(text: str) -> list[str]:
    census: Counter = Counter()
    extract_sections(text, census)
    return [h for (h, _), _ in census.items()]


@pytest.mark.parametrize("line", [
    "FINAL DIAGNOSES: CHF", "Transitional Issues:", "Brief Hospital Course:", "ICU COURSE:  intubated",
    "Assessment/Plan: diurese", "PAST MEDICAL HISTORY / PAST SURGICAL HISTORY:", "Major Surgical or Invasive Procedure:",
    "TTE (2D Echo): EF 35%", "HEME/ONC: anemia", "O2 Requirement: 2L", "Changes to medications:",
    "Medications to stop:  lisinopril", "  Cardiology Recommendations: cath", "___ Diagnosis: NSTEMI",
    "Labs at discharge: stable", "3. DISCHARGE MEDICATIONS:", "# Hospital course: uneventful",
    "Pt reports the following:", "WBC: pending",
])
def test_header_like_lines_that_are_headers(line):
    assert len(headers(line)) == 1, line


@pytest.mark.parametrize("line", [
    "1. Hypertension.", "2) CAD: s/p CABG", "# CHF: diuresed", "- COPD: on home O2", "WBC: 12.3", "Na: 135 K: 4.1",
    "Cr 1.2: baseline", "BP: 120/80", "T: 98.6  HR: 88", "10:30 pm: given aspirin", "At 10:30 he was given lasix",
    "Lisinopril 10 mg: daily", 'Patient states: "I feel tired".', "Sig: One (1) Tablet PO DAILY",
    "Disp:*30 Tablet(s)*", "pt states: tired", "Of note, the patient was recently discharged from rehab: weak",
    "3. OTHER PAST MEDICAL HISTORY:", "Per the patient's daughter: he has been confused",
])
def test_header_like_lines_that_are_not_headers(line):
    assert headers(line) == [], line


def test_two_headers_on_one_line_and_deidentified_words():
    m3 = "Admission Date: [**2151-7-16**]   Discharge Date: [**2151-8-4**]\nDate of Birth:  [**2080-1-2**]     Sex:   F"
    assert headers(m3) == ["ADMISSION DATE", "DISCHARGE DATE", "DATE OF BIRTH", "SEX"]
    m4 = " \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___"
    assert headers(m4) == ["NAME", "UNIT NO", "ADMISSION DATE", "DISCHARGE DATE"]
    assert headers("___ Complaint:\nfoo") == ["___ COMPLAINT"]


def test_unknown_headers_end_a_kept_section():
    note = ("HISTORY OF PRESENT ILLNESS:  72 yo M with CHF.  Denies chest pain.\n"
            "WBC: 12.3  Na: 135\nSUMMARY OF HOSPITAL COURSE:  diuresed\nRENAL ISSUES: AKI resolved\n"
            "Past Medical History: HTN\n   FINAL DIAGNOSES:  CHF\nHome medications:\n1. Lasix 40 mg\n"
            "Sig: One (1) Tablet PO DAILY\nChanges to medications:\nLasix increased\n")
    census: Counter = Counter()
    assert extract_sections(note, census) == {
        "present_illness": "72 yo M with CHF. Denies chest pain.\nWBC: 12.3 Na: 135",
        "past_history": "HTN",
        "admission_medications": "1. Lasix 40 mg\nSig: One (1) Tablet PO DAILY",
    }
    assert census == Counter({
        ("HISTORY OF PRESENT ILLNESS", "kept:present_illness"): 1, ("SUMMARY OF HOSPITAL COURSE", "dropped"): 1,
        ("RENAL ISSUES", "dropped"): 1, ("PAST MEDICAL HISTORY", "kept:past_history"): 1,
        ("FINAL DIAGNOSES", "dropped"): 1, ("HOME MEDICATIONS", "kept:admission_medications"): 1,
        ("CHANGES TO MEDICATIONS", "dropped"): 1})


def test_allowed_spellings_are_normalised_and_listed_ones_never_start_a_section():
    assert extract_sections("past medical history/ past surgical history:\nHTN")["past_history"] == "HTN"
    assert extract_sections("Past Medical History (PMH):\nDM2\nCC: SOB")["past_history"] == "DM2"
    assert extract_sections("Hospital Course:\n# Chief Complaint: resolved\n1. HPI: as above") == {}


def test_crlf_notes():
    assert extract_sections("Chief Complaint:\r\nSOB\r\nDischarge Diagnosis:\r\nCHF\r\n") == {"chief_complaint": "SOB"}


@pytest.mark.parametrize("style", STYLES)
def test_corpus_no_leak_and_kept_markers(style):
    notes = make_corpus(300, seed=7, styles=(style,))
    leaked, kept, total = [], 0, 0
    for note in notes:
        found = extract_sections(note.text)
        words = set(MARKER.findall(" ".join(found.values())))
        leaked += [m for m in note.dropped if m in words]
        for section, markers in note.kept.items():
            in_section = set(MARKER.findall(found.get(section, "")))
            kept += sum(m in in_section for m in markers)
            total += len(markers)
    assert not leaked, f"{len(leaked)} markers of dropped sections leaked: {leaked[:20]}"
    print(f"{style}: {kept}/{total} = {kept / total:.2%} of allowed-section markers kept")
    assert total > 3000 and kept / total >= 0.97


def test_every_corpus_header_ends_a_kept_section():
    leaks = []
    for header in DROPPED_HEADERS:
        for spelling in (header, header.upper()):
            for note in (f"History of Present Illness:\nSOB\n{spelling}:\nleaked", f"HPI: SOB\n {spelling}:  leaked",
                         f"HPI: SOB\nfevers   {spelling}:  leaked"):
                if "leaked" in extract_sections(note).get("present_illness", ""):
                    leaks.append(note)
    assert not leaks and len(DROPPED_HEADERS) >= 40, leaks


def test_indented_and_flattened_lists():
    assert headers("   1. DISCHARGE MEDICATIONS:\nfoo") == ["DISCHARGE MEDICATIONS"]
    assert headers("   2) CAD: s/p CABG\n1. HTN  2. CAD: s/p CABG") == []
    assert extract_sections("PMH:\n  1. HTN\n  2. DM: on insulin\n   3. Discharge diagnoses: CHF") == {
        "past_history": "1. HTN\n 2. DM: on insulin"}


def test_answer_words_make_a_header_in_any_case_and_with_numbers():
    assert headers("DISCHARGE DIAGNOSIS #1: CHF\nfinal dx: CHF\n2. Discharge diagnoses 2: AKI") == [
        "DISCHARGE DIAGNOSIS #1", "FINAL DX", "DISCHARGE DIAGNOSES 2"]
