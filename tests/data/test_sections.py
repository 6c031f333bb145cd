from medfuse.data.sections import extract_sections

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
