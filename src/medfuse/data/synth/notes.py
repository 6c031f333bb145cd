"""Notes: discharge summaries (every layout) and, in MIMIC-III, some nursing and radiology notes,
drawn per chunk of patients and streamed to CSV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from medfuse.data.synth.conditions import AFIB, AKI, CKD, COPD, ESRD, HF, REASON_INDEX, REASONS
from medfuse.data.synth.csv_gz import GzipCsv, ints
from medfuse.data.synth.layout import Layout
from medfuse.data.synth.note_text import (
    AKI_HPI,
    CONDITION,
    COURSE,
    EXAM,
    FAMILY_TRAPS,
    FILLER,
    FILLER_MEDS,
    INSTRUCTIONS,
    IRRELEVANT,
    MEDS,
    MENTIONS,
    NARRATIVE,
    NEGATED,
    OTHER_HISTORY,
    SERVICE,
    SHARED_MEDS,
    TEXT_RATES,
    TITLES,
    UNKNOWN_HISTORY,
)
from medfuse.data.synth.population import YEAR, Cohort
from medfuse.progress import ProgressFn


class Note(NamedTuple):
    """One note of an admission (``adm``), before formatting."""

    adm: int
    chart: int | None  # seconds; None for discharge summaries, which MIMIC-III dates by CHARTDATE only
    store: int | None
    category: str
    description: str
    cgid: int | None
    error: int | None
    text: str


def _admission_notes(c: Cohort, a: int, m3: bool, rng: np.random.Generator) -> list[Note]:
    """The notes of one admission: its discharge summary (if any) and, in MIMIC-III, some other notes."""
    notes = []
    admit, disch = int(c.admit[a]), int(c.disch[a])
    if c.has_note[a]:
        text = _discharge_summary(c, a, m3, rng)
        store = disch + int(rng.uniform(2, 72) * 3600) // 60 * 60
        if m3 and rng.random() < 0.01:  # an erroneous copy (ISERROR = 1), sometimes the only summary
            notes.append(Note(a, None, None, "Discharge summary", "Report", None, 1, text))
            if rng.random() < 0.4:
                return notes
        notes.append(Note(a, None, None if m3 else store, "Discharge summary", "Report", None, None, text))
    if m3:
        if rng.random() < 0.08:
            t = (admit + int(rng.random() * (disch - admit))) // 60 * 60
            cgid = int(rng.integers(14000, 21000))
            error = 1 if rng.random() < 0.01 else None
            store = t + int(rng.uniform(5, 90)) * 60
            notes.append(Note(a, t, store, "Nursing/other", "Report", cgid, error, _nursing_note(c, a, rng)))
        if rng.random() < 0.08:
            t = (admit + int(rng.random() * (disch - admit))) // 60 * 60
            report = _radiology_report(c, a, t, rng)
            notes.append(Note(a, t, None, "Radiology", "CHEST (PORTABLE AP)", None, None, report))
    return notes


@dataclass
class NoteRows:
    """One chunk's notes with the columns both layouts share."""

    notes: list[Note]
    adm: np.ndarray  # admission of each note
    pat: np.ndarray  # patient of each note
    subject: pa.Array
    hadm: pa.Array
    store: pa.Array
    text: pa.Array


def write_notes(layout: Layout, path: Path, report: ProgressFn) -> int:
    """NOTEEVENTS (discharge summaries plus some nursing and radiology notes) or note/discharge; returns rows."""
    c = layout.c
    m3 = layout.name == "mimic3"
    chunks = c.chunks()
    with GzipCsv(path, layout.quote_all) as sink:
        for i, (_, _, a0, a1) in enumerate(chunks):
            rng = np.random.default_rng([layout.seed, 4, i])
            notes = [note for a in range(a0, a1) for note in _admission_notes(c, a, m3, rng)]
            adm = np.array([n.adm for n in notes], np.int64)
            rows = NoteRows(
                notes=notes,
                adm=adm,
                pat=c.pat[adm],
                subject=ints(c.subject_id[c.pat[adm]]),
                hadm=ints(c.hadm_id[adm]),
                store=pa.array([n.store for n in notes], pa.int64()).cast(pa.timestamp("s")),
                text=pa.array([n.text for n in notes], pa.string()),
            )
            sink.write(layout.note_columns(rows, sink.rows))
            report("notes", (i + 1) / len(chunks))
    return sink.rows


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


def _discharge_summary(c: Cohort, a: int, m3: bool, rng: np.random.Generator) -> str:
    """A discharge summary. Chief Complaint, HPI, Past Medical History and Medications on Admission carry
    partial, noisy evidence (missing, false and negated mentions); Brief Hospital Course, Discharge
    Medications and Discharge Diagnosis state the coded diseases outright."""
    p = c.pat[a]
    male = bool(c.male[p])
    he = "He" if male else "She"
    age = c.age0[p] + (c.admit[a] - c.admit[c.first[p]]) / YEAR  # c.age[a] without the whole array: O(1)
    age_text = ("[**Age over 90 **]" if m3 else "___") if age > 89 else str(int(age))
    name = ("Mr. " if male else "Ms. ") + (
        f"[**Known lastname {int(rng.integers(100, 9999))}**]" if m3 else "___"
    )
    reason = REASONS[c.reason[a]]
    dis = c.dis[a]
    positives = [d for d in range(10) if dis[d]]
    unknown = rng.random() < UNKNOWN_HISTORY
    damp = 0.2 if unknown else 1.0

    mentioned, negated, home_meds = [], [], []
    for d, (p_mention, p_med, p_false, p_negated) in TEXT_RATES.items():
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
        if d == CKD and c.ckd_stage[p] == ESRD and dis[CKD]:
            return "ESRD on HD"
        return _choose(rng, MENTIONS[d])

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
    hpi.append(_choose(rng, NARRATIVE[reason.name]).format(P=he))
    if AKI in mentioned:
        if rng.random() < 0.5:
            hpi.append(AKI_HPI.format(cr=rng.uniform(1.8, 4.5), base=rng.uniform(0.7, 1.3)))
        else:
            hpi.append(f"{he} was found to be in {term(AKI)}.")
    for d in negated:
        phrase = _choose(rng, NEGATED[d])
        hpi.append(f"{he} {phrase}." if phrase.startswith("denies") else phrase[0].upper() + phrase[1:] + ".")
    if rng.random() < 0.03:
        hpi.append(_choose(rng, FAMILY_TRAPS))
    for _ in range(int(rng.integers(1, 3))):
        hpi.append(_choose(rng, IRRELEVANT).format(P=he, p=he.lower()))

    if unknown:
        pmh = "Unable to obtain; patient intubated and sedated." + (
            "\n" + "\n".join(history) if history else ""
        )
    else:
        items = history + [
            str(x) for x in rng.choice(OTHER_HISTORY, size=int(rng.integers(0, 4)), replace=False)
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
        options = MEDS[d]
        if d == AFIB:  # warfarin for the patients whose INR shows it
            return options[0] if c.warfarin[p] else _choose(rng, options[1:])
        return _choose(rng, options)

    admission_meds = [med(d) for d in home_meds if MEDS[d]]
    admission_meds += [m for m in SHARED_MEDS if rng.random() < 0.12]
    admission_meds += [str(x) for x in rng.choice(FILLER_MEDS, size=int(rng.integers(0, 6)), replace=False)]
    admission_meds = list(dict.fromkeys(admission_meds))
    rng.shuffle(admission_meds)
    if unknown and not admission_meds:
        meds_text = "Unable to obtain"
    else:
        meds_text = "\n".join(f"{k}. {m}" for k, m in enumerate(admission_meds, 1)) or "None"

    titles = [TITLES[d] for d in positives]
    history_titles = ", ".join(titles) or "no significant history"
    course = [
        f"{age_text} y/o {'M' if male else 'F'} with {history_titles} admitted with {reason.title}.",
        f"# {_capital(reason.title)}: {_choose(rng, NARRATIVE[reason.name]).format(P=he)} Treated and improved.",
    ]
    course += [f"# {TITLES[d]}: {COURSE[d]}" for d in positives if rng.random() < 0.95]
    discharge_meds = list(
        dict.fromkeys([med(d) for d in positives if MEDS[d] and rng.random() < 0.9] + admission_meds)
    )
    secondary = [t for t in titles if rng.random() < 0.97]
    diagnosis = f"Primary:\n{_capital(reason.title)}" + (
        "\n\nSecondary:\n" + "\n".join(secondary) if secondary else ""
    )
    disposition = "Expired" if c.died[a] else _choose(rng, FILLER["disposition"])
    smoking = "Former smoker, quit 10 years ago." if c.smoker[p] else "Never smoker."
    social = f"{_choose(rng, FILLER['living'])} {smoking} {_choose(rng, FILLER['alcohol'])}"
    vitals = {
        "t": rng.uniform(97, 101.5),
        "sbp": rng.integers(95, 175),
        "dbp": rng.integers(50, 95),
        "hr": rng.integers(60, 125),
        "rr": rng.integers(12, 28),
        "sat": rng.integers(88, 100),
    }
    procedure = "CABG x3" if reason.name == "cabg" else _choose(rng, FILLER["procedure"])
    sections = {
        "Chief Complaint": complaint,
        "Major Surgical or Invasive Procedure": procedure,
        "History of Present Illness": " ".join(hpi),
        "Past Medical History": pmh,
        "Social History": social,
        "Family History": _choose(rng, FILLER["family"]),
        "Physical Exam": EXAM.format(**vitals),
        "Pertinent Results": "CXR: " + _choose(rng, FILLER["cxr"]),
        "Brief Hospital Course": "\n\n".join(course),
        "Medications on Admission": meds_text,
        "Discharge Medications": "\n".join(f"{k}. {m}" for k, m in enumerate(discharge_meds, 1)) or "None",
        "Discharge Disposition": disposition,
        "Discharge Diagnosis": diagnosis,
        "Discharge Condition": CONDITION,
        "Discharge Instructions": INSTRUCTIONS.format(reason.title),
        "Followup Instructions": "[**Last Name (LF) **],[**First Name3 (LF) **] in 1 week" if m3 else "___",
    }
    sex = "M" if male else "F"
    service = SERVICE.get(reason.name, "MEDICINE")
    allergies = _choose(rng, FILLER["allergies"])
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


def _radiology_report(c: Cohort, a: int, t: int, rng: np.random.Generator) -> str:
    """A portable chest x-ray report (MIMIC-III NOTEEVENTS, category Radiology)."""
    dis = c.dis[a]
    if c.reason[a] == REASON_INDEX["pneumonia"]:
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
        f" Reason: {REASONS[c.reason[a]].complaints[0]}\n"
        " ______________________________________________________________________________\n"
        "                                 FINAL REPORT\n"
        f" INDICATION: {REASONS[c.reason[a]].diagnosis.lower()}.\n\n COMPARISON: None.\n\n"
        f" IMPRESSION: {impression}\n"
    )


def _nursing_note(c: Cohort, a: int, rng: np.random.Generator) -> str:
    """A short nursing progress note (MIMIC-III NOTEEVENTS, category Nursing/other)."""
    rhythm = "AFib" if c.dis[a, AFIB] and rng.random() < 0.7 else "SR"
    return (
        f"NPN 7a-7p\nNEURO: A+Ox3, MAE.\nCV: HR {int(rng.integers(60, 120))} {rhythm}, BP stable.\n"
        f"RESP: LS clear, sats {int(rng.integers(90, 100))}% on 2L NC.\n"
        "GI/GU: Tolerating diet. Foley draining clear yellow urine.\nPLAN: Continue to monitor, update family.\n"
    )
