"""Cut a discharge summary into its sections and keep only the four that do not state the answer."""

from __future__ import annotations

import re

ALLOWED_SECTIONS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("chief complaint", "cc"),
    "present_illness": ("history of present illness", "history of the present illness", "hpi"),
    "past_history": ("past medical history", "past medical/surgical history", "pmh"),
    "admission_medications": (
        "medications on admission", "admission medications", "meds on admission",
        "medications prior to admission", "home medications",
    ),
}
"""Our section name -> header spellings (case-insensitive) that start it."""

# Headers that end a section. The answer-bearing ones (discharge diagnosis, hospital course,
# discharge medications) are here so they are cut off, never copied.
OTHER_HEADERS = (
    "admission date", "discharge date", "date of birth", "sex", "service", "attending", "allergies",
    "major surgical or invasive procedure", "past surgical history", "social history", "family history",
    "physical exam", "physical examination", "review of systems", "pertinent results", "labs", "imaging",
    "brief hospital course", "hospital course", "discharge diagnosis", "discharge diagnoses",
    "primary diagnosis", "secondary diagnosis", "secondary diagnoses", "discharge medications",
    "discharge disposition", "discharge condition", "condition at discharge", "discharge instructions",
    "followup instructions", "follow-up instructions", "facility", "impression", "addendum",
)

_SECTION_OF = {h: name for name, headers in ALLOWED_SECTIONS.items() for h in headers}
_ALL = sorted({*_SECTION_OF, *OTHER_HEADERS}, key=len, reverse=True)
_HEADER = re.compile(r"^[ \t]*(" + "|".join(re.escape(h) for h in _ALL) + r")[ \t]*:", re.IGNORECASE | re.MULTILINE)
_SPACE = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def extract_sections(text: str) -> dict[str, str]:
    """The allowed sections found in ``text`` (our name -> cleaned body); others are dropped.

    A section runs from its header line to the next known header. A section header that occurs
    twice has its bodies joined.
    """
    found: dict[str, list[str]] = {}
    matches = list(_HEADER.finditer(text))
    for m, nxt in zip(matches, [*matches[1:], None]):
        name = _SECTION_OF.get(m.group(1).lower())
        if name is None:
            continue
        body = text[m.end() : nxt.start() if nxt else len(text)]
        body = _BLANK_LINES.sub("\n", _SPACE.sub(" ", body)).strip()
        if body:
            found.setdefault(name, []).append(body)
    return {k: "\n".join(v) for k, v in found.items()}
