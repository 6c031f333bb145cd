"""Cut a discharge summary into its sections and keep only the four that do not state the answer.

The cut fails closed: text is kept only under a header positively recognised as one of the four
allowed sections (:data:`ALLOWED_SECTIONS`), and a kept section ends at the next header of any kind,
known or not.

Header grammar. A header is a phrase followed by a colon, at the start of a line (after optional
spaces or tabs) or after a run of two or more spaces or a tab inside a line
(``Admission Date:  ___   Discharge Date:  ___``); its body follows on the same line and/or the next
lines. The phrase starts with a letter or ``___`` (a de-identified word), its words are separated by
single spaces, it may contain ``/ - ( ) & '`` and tokens mixing letters and digits (``O2``, ``2D``),
but no purely numeric token (``Cr 1.2:``, ``Lisinopril 10 mg:``, ``10:30``). It is a header when

1. its normal form (below) is a known header (:data:`ALLOWED_SECTIONS`, :data:`KNOWN_HEADERS`), in any case; or
2. it has at most 6 words and 50 characters and has a word beginning with an answer stem
   (:data:`ANSWER_STEMS`: diagnos-, dx, discharg-, course, plan ...; in any case, even with a number:
   ``DISCHARGE DIAGNOSIS #1:``), or is ALL CAPS, or Title Case (every word capitalised but the small
   words of :data:`SMALL_WORDS`), or has a capitalised first word and
   a word of a section name (:data:`SECTION_STEMS`: medication, history, exam, lab ...:
   ``Medications to stop:  aspirin``), or has a capitalised first word, at most 5 words and nothing
   after the colon on its line (``Pt reports the following:``).

Not headers: a phrase with a lower-case first word unless known or with an answer stem
(``pt states:``), a sentence with text after the colon (``Patient states: "I feel tired".``), a lab
or vital label of :data:`VALUE_LABELS` followed by a number (``WBC: 12.3``, ``Na: 135  K: 4.1``,
``BP: 120/80``) and medication-order fields (``Sig:``, ``Disp:``, ``Refills:``). A phrase after a list marker (``#``,
``-``, ``*``, ``1.``, ``2)``) is a problem-list or numbered item (``# CHF:``, ``2) CAD: s/p CABG``,
``3. OTHER PAST MEDICAL HISTORY:``), unless it is a known header of a section that is not kept or has an
answer stem (``3. DISCHARGE MEDICATIONS:``): then it ends the section. It never starts a kept one.

Normal form: lower case, runs of spaces collapsed, no spaces around ``/``, a trailing parenthesised
abbreviation dropped (``Past Medical History (PMH)``). The header census counts headers in this
form, upper-cased, with what was done with each (``kept:<section>`` or ``dropped``).
"""

from __future__ import annotations

import re
from collections import Counter

ALLOWED_SECTIONS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("chief complaint", "chief complaints", "cc", "reason for admission"),
    "present_illness": (
        "history of present illness", "history of the present illness", "history of presenting illness",
        "present illness", "hpi",
    ),
    "past_history": (
        "past medical history", "past history", "pmh", "past medical/surgical history",
        "past medical history/past surgical history", "past medical and surgical history", "pmh/psh",
        "past surgical history", "psh", "past oncologic history", "other past medical history",
    ),
    "admission_medications": (
        "medications on admission", "admission medications", "meds on admission", "medications prior to admission",
        "home medications", "home meds", "medications at home", "preadmission medications",
        "pre-admission medications",
    ),
}
"""Our section name -> header spellings (normal form) that start it. ``Outpatient medications`` is
left out on purpose: some notes use it for the list to take after discharge."""

KNOWN_HEADERS = frozenset("""
admission date|discharge date|date of birth|sex|service|attending|allergies|name|unit no|addendum|dictated by|
completed by|facility|code status|consults|major surgical or invasive procedure|procedures|procedure|
operations|social history|family history|physical exam|physical examination|
physical exam on admission|admission physical exam|discharge physical exam|physical exam on discharge|exam|
review of systems|ros|pertinent results|laboratory data|labs|lab data|admission labs|discharge labs|studies|
imaging|radiology|micro|microbiology|ekg|ecg|cxr|echo|brief hospital course|hospital course|
summary of hospital course|icu course|ed course|assessment and plan|assessment/plan|a/p|assessment|plan|
impression|discharge diagnosis|discharge diagnoses|final diagnosis|final diagnoses|principal diagnosis|
primary diagnosis|primary diagnoses|secondary diagnosis|secondary diagnoses|diagnosis|diagnoses|active issues|
chronic issues|transitional issues|issues|problem list|medications|discharge medications|
medications on discharge|discharge meds|new medications|changes to medications|medication changes|
stopped medications|outpatient medications|discharge disposition|disposition|discharge condition|
condition on discharge|condition at discharge|discharge instructions|instructions|followup instructions|
follow-up instructions|follow-up|followup|follow up
""".replace("\n", "").split("|"))
"""Known headers that end a section and are never kept (the grammar finds unknown ones too)."""

SMALL_WORDS = frozenset((
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "per", "the", "to", "via",
    "vs", "with", "&", "upon"
))
ANSWER_STEMS = ("diagnos", "dx", "discharg", "course", "impression", "assessment", "plan", "disposition", "procedure",
                "follow", "instruction", "transitional", "issue", "problem", "result", "finding")
SECTION_STEMS = ("medication", "meds", "history", "exam", "lab", "stud", "imaging", "allerg", "complaint", "illness",
                 "condition", "recommend", "summary", "care", "consult", "status", "data")
"""Words of section names: a sentence-case phrase with one of them is a header even with text after the colon."""
VALUE_LABELS = frozenset((
    "WBC", "RBC", "HGB", "HB", "HCT", "PLT", "PLTS", "MCV", "NA", "K", "CL", "CO2", "HCO3", "BUN", "CR",
    "CREAT", "GLU", "GLUC", "GLUCOSE", "CA", "MG", "PHOS", "ALT", "AST", "ALP", "TBILI", "LDH", "CK", "CPK",
    "TROP", "TROPONIN", "TNT", "BNP", "LACTATE", "LAC", "PT", "PTT", "INR", "ALB", "PH", "PCO2", "PO2",
    "FIO2", "BP", "SBP", "HR", "P", "RR", "T", "TEMP", "TMAX", "O2", "SPO2", "O2SAT", "SAT", "SATS", "WT",
    "WEIGHT", "HT", "EF", "LVEF", "A1C", "HBA1C", "LDL", "HDL", "TSH", "UOP", "VS", "GCS", "AG"
))
"""Lab and vital labels (upper case) that are values, not headers, when a number follows the colon."""
MED_FIELDS = frozenset(("sig", "disp", "refills", "dose", "qty", "quantity"))

_SECTION_OF = {h: name for name, headers in ALLOWED_SECTIONS.items() for h in headers}
_KNOWN = frozenset({*_SECTION_OF, *KNOWN_HEADERS})
_MARKER = re.compile(r"(?:#+|\(?\d{1,3}[.)]|[-*\u2022])[ \t]*")  # a list marker before a problem or item
_MARKER_CHARS = frozenset("#(-*\u20220123456789")
_NUMBER_AFTER = re.compile(r"[ \t]*[<>~=]*[ \t]*[-+]?\.?\d")
_PAREN_END = re.compile(r" ?\([^()]*\)$")
_TOKENS = re.compile(r"[ /]+")
_SPACES = re.compile(r"[ \t]{2,}|\t")  # runs of spaces and tabs that are not already one space
_BLANK_LINES = re.compile(r"\n\s*\n+")
_DROPPED = "dropped"


def normalize_header(phrase: str) -> str:
    """The normal form of a header phrase: lower case, single spaces, none around ``/``, no trailing ``(...)``."""
    key = " ".join(phrase.lower().split()).replace(" /", "/").replace("/ ", "/")
    short = _PAREN_END.sub("", key)
    return short or key


def _capitalised(token: str) -> bool:
    if token.startswith("___") or token[0].isdigit():
        return True
    first = next((ch for ch in token if ch.isalpha()), None)
    return first is None or first.isupper()


_NEVER, _ALWAYS, _UNLESS_NUMBER, _IF_BLANK = range(4)  # when a phrase is a header, by what follows its colon


def _header_rule(phrase: str, listed: bool) -> tuple[str, int]:
    """The normal form of ``phrase`` and when it is a header (module docstring): never, always, unless
    a number follows the colon, or only when nothing follows it. ``listed``: it follows a list marker."""
    key = normalize_header(phrase)
    if key in _SECTION_OF and listed:  # an item of a list, e.g. ``3. OTHER PAST MEDICAL HISTORY:``
        return key, _NEVER
    if key in _KNOWN:
        return key, _ALWAYS
    if not (phrase[0].isalpha() or phrase.startswith("___")) or key in MED_FIELDS:
        return key, _NEVER
    words = key.split(" ")
    if len(words) > 6 or len(key) > 50:
        return key, _NEVER
    if any(w.startswith(ANSWER_STEMS) for w in words):  # even with a number: ``DISCHARGE DIAGNOSIS #1:``
        return key, _ALWAYS
    tokens = [t for t in _TOKENS.split(phrase) if t]
    if listed or any(not any(c.isalpha() for c in t) and any(c.isdigit() for c in t) for t in tokens):
        return key, _NEVER
    value = _UNLESS_NUMBER if all(p in VALUE_LABELS for p in key.upper().split("/")) else _ALWAYS
    if phrase.isupper():
        return key, value
    if not _capitalised(tokens[0]):
        return key, _NEVER
    if all(t.lower() in SMALL_WORDS or _capitalised(t) for t in tokens[1:]):
        return key, value
    if any(w.startswith(SECTION_STEMS) for w in words):
        return key, value
    return key, _IF_BLANK if len(words) <= 5 else _NEVER


def _phrase_rule(seg: str, first: bool) -> tuple[int, str, bool, int] | None:
    """The header candidate in ``seg``, the text before a colon back to the line start (``first``: the
    line's first colon) or to the previous colon: ``(offset in seg of the phrase or its list marker,
    normal form, after a list marker, rule)``, or ``None`` when there is none or it is never a header."""
    seg = seg.rstrip(" \t")
    cut = max(seg.rfind("  "), seg.rfind("\t"))
    if cut < 0 and not first:
        return None
    item = seg[cut + 1 :].lstrip(" \t")  # the phrase with its list marker, if any
    phrase, listed = item, False
    if item[:1] in _MARKER_CHARS and (m := _MARKER.match(item)):
        phrase, listed = item[m.end() :], True
    if not phrase or len(phrase) > 60:
        return None
    key, rule = _header_rule(phrase, listed)
    return None if rule == _NEVER else (len(seg) - len(item), key, listed, rule)


_CACHE_SIZE = 1 << 16
_seen: tuple[dict, dict] = ({}, {})  # _phrase_rule results for mid-line and line-start segments


def _headers(text: str) -> list[tuple[int, str, bool, int]]:
    """``(header start, normal form, may start a kept section, offset after the colon)`` of every header.

    A scan from colon to colon with string methods and a cache of the text before each colon (regular
    expressions were two to five times slower).
    """
    out = []
    prev = 0  # just after the previous colon
    colon = text.find(":")
    while colon >= 0:
        line_start = text.rfind("\n", 0, colon) + 1
        first = prev <= line_start
        lo = line_start if first else prev
        seg = text[lo:colon]
        cache = _seen[first]
        r = cache.get(seg, False)
        if r is False:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            r = cache[seg] = _phrase_rule(seg, first)
        if r is not None:
            offset, key, listed, rule = r
            if rule == _UNLESS_NUMBER:
                ok = not _NUMBER_AFTER.match(text, colon + 1)
            elif rule == _IF_BLANK:
                end = text.find("\n", colon)
                ok = not text[colon + 1 : end if end >= 0 else len(text)].strip()
            else:
                ok = True
            if ok:
                out.append((lo + offset, key, not listed, colon + 1))
        prev = colon + 1
        colon = text.find(":", prev)
    return out


def extract_sections(text: str, census: Counter | None = None) -> dict[str, str]:
    """The allowed sections found in ``text`` (our name -> cleaned body); everything else is dropped.

    A kept section runs from its header to the next header of any kind; a section that occurs twice has
    its bodies joined. With ``census``, each header seen is counted there as
    ``(HEADER IN NORMAL FORM UPPER-CASED, "kept:<section>" | "dropped")``.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    found: dict[str, list[str]] = {}
    heads = _headers(text)
    for i, (_, key, may_start, end) in enumerate(heads):
        name = _SECTION_OF.get(key) if may_start else None
        if census is not None:
            census[key.upper(), _DROPPED if name is None else f"kept:{name}"] += 1
        if name is None:
            continue
        body = text[end : heads[i + 1][0] if i + 1 < len(heads) else len(text)]
        if "  " in body or "\t" in body:  # most bodies have nothing to collapse: skip the regex
            body = _SPACES.sub(" ", body)
        body = _BLANK_LINES.sub("\n", body).strip()
        if body:
            found.setdefault(name, []).append(body)
    return {k: "\n".join(v) for k, v in found.items()}
