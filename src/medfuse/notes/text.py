"""The input text of every admission: allowed note sections followed by the abnormal-lab text.

The template is a string with one placeholder per line, e.g. ``Chief complaint: {chief_complaint}``.
Only the four note sections kept by ``prepare`` (docs/data.md) and ``{lab_text}`` may be named, so a
template cannot bring a leaking section (discharge diagnosis, hospital course) back in. A line is
kept only when every placeholder in it has a value (non-null, not blank); the kept lines are joined
with newlines. An admission without a note still gets its lab text; one with neither has an empty
text and ``has_text = False``: it is *missing* for later stages, never embedded as ``""``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from medfuse.config import shipped_defaults
from medfuse.data.cohort import Cohort

NOTE_SECTIONS = ("chief_complaint", "present_illness", "past_history", "admission_medications")
FIELDS = (*NOTE_SECTIONS, "lab_text")

DEFAULT_TEMPLATE: str = shipped_defaults("notes")["template"]  # [notes] template of the shipped default.toml


@dataclass
class NoteTexts:
    """Per-admission input texts in cohort row order."""

    hadm_ids: np.ndarray  # int64 [N]
    texts: list[str]  # "" where has_text is False
    has_text: np.ndarray  # bool [N]: note or lab text present
    has_note: np.ndarray  # bool [N]: at least one allowed note section rendered
    has_lab_text: np.ndarray  # bool [N]
    split: np.ndarray  # str [N]
    values: list[dict[str, str | None]] = field(default_factory=list)  # [N] raw field values (before the template)

    def __len__(self) -> int:
        return len(self.hadm_ids)

    def subset(self, rows: np.ndarray) -> NoteTexts:
        rows = np.asarray(rows)
        return NoteTexts(self.hadm_ids[rows], [self.texts[i] for i in rows], self.has_text[rows],
                         self.has_note[rows], self.has_lab_text[rows], self.split[rows],
                         [self.values[i] for i in rows] if self.values else [])


# a sentence ends at . ! or ? before a capital, a digit or a "[**" de-identification tag; not after Mr./Dr./...
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_SENTENCE_END = re.compile(r"\n|(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bMrs\.)(?<!\bSt\.)(?<=[.!?])\s+(?=[A-Z0-9\[])")


def template_fields(template: str) -> list[str]:
    """The fields a template names, in order of first appearance."""
    out: list[str] = []
    for _, names in _template_lines(template):
        out.extend(n for n in names if n not in out)
    return out


def segments(value: str | None, field_name: str) -> list[str]:
    """A field's text cut into the short pieces ``unit = "lines"`` embeds one by one.

    Note sections are cut at line ends and sentence ends (list markers such as ``-`` or ``1.`` are
    stripped); the lab text is cut into its ``test value unit (flag)`` items.
    """
    if not isinstance(value, str) or not value.strip():
        return []
    if field_name == "lab_text":
        text = value.strip().removeprefix("Abnormal labs:").rstrip(".")
        pieces = text.split(";")
    else:
        pieces = _SENTENCE_END.split(value)
    out = []
    for p in pieces:
        p = _LIST_MARKER.sub("", p).strip()
        if any(ch.isalnum() for ch in p):
            out.append(p)
    return out


@lru_cache(maxsize=16)
def _template_lines(template: str) -> list[tuple[str, list[str]]]:
    """Split a template into ``(line, placeholders)``; reject unknown or positional placeholders."""
    lines = []
    for line in template.split("\n"):
        names = []
        for _, name, spec, conv in string.Formatter().parse(line):
            if name is None:
                continue
            if name not in FIELDS:
                raise ValueError(f"template placeholder {{{name}}} is not allowed; use only {', '.join(FIELDS)}")
            if spec or conv:
                raise ValueError(f"template placeholder {{{name}}}: format specs and conversions are not supported")
            names.append(name)
        lines.append((line, names))
    return lines


def validate_template(template: str) -> None:
    """Raise ``ValueError`` for a template with unknown placeholders or none at all."""
    if not any(names for _, names in _template_lines(template)):
        raise ValueError("template has no placeholder; it would give every admission the same text")


def render(template: str, values: dict[str, str | None]) -> str:
    """Fill ``template`` with one admission's values, dropping lines whose placeholders are empty.

    Lines without any placeholder are kept as they are.
    """
    out = []
    clean = {k: (v.strip() if isinstance(v, str) else "") for k, v in values.items()}
    for line, names in _template_lines(template):
        if names and not all(clean.get(n) for n in names):
            continue
        text = line.format(**{n: clean[n] for n in names}).strip()
        if text:
            out.append(text)
    return "\n".join(out)


def build_texts(cohort: Cohort | str | Path, template: str = DEFAULT_TEMPLATE) -> NoteTexts:
    """The input text of every cohort admission (cohort row order), with presence masks."""
    source = _TextSource(cohort, template)
    return source.texts(0, source.n)


def iter_texts(cohort: Cohort | str | Path, template: str = DEFAULT_TEMPLATE,
               chunk: int = 4096) -> Iterator[tuple[int, NoteTexts]]:
    """:func:`build_texts` ``chunk`` admissions at a time: ``(first cohort row, NoteTexts)`` in cohort row order.

    The note and lab-text tables are held as Arrow columns (about the size of their text); only the chunk's
    values become Python strings (about 6 kB per admission of the chunk).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 admission, got {chunk}")
    source = _TextSource(cohort, template)
    for start in range(0, source.n, chunk):
        yield start, source.texts(start, min(start + chunk, source.n))


class _TextSource:
    """A cohort's note sections and lab texts as Arrow columns, with each admission's row in them."""

    def __init__(self, cohort: Cohort | str | Path, template: str):
        cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
        validate_template(template)
        self.template = template
        self.hadm = np.asarray(cohort.hadm_ids, dtype=np.int64)
        self.split = np.asarray(cohort.split)
        self.n = len(self.hadm)
        index = {int(h): i for i, h in enumerate(self.hadm)}
        self.columns: list[tuple[dict[str, Any], np.ndarray]] = []  # ({field: Arrow column}, table row per admission)
        for name, fields in (("notes", NOTE_SECTIONS), ("lab_text", ("lab_text",))):
            if not cohort.has_table(name):
                continue
            table = cohort.table(name)
            source = {"lab_text": "text"} if name == "lab_text" else {f: f for f in fields}
            # one contiguous large_string array per field: taking rows from a chunked column joins it first
            cols = {f: table.column(c).cast(pa.large_string()).combine_chunks()
                    for f, c in source.items() if c in table.column_names}
            row = np.full(self.n, -1, dtype=np.int64)
            for j, h in enumerate(table.column("hadm_id").to_pylist()):  # a later row wins, as it always has
                i = index.get(int(h))
                if i is not None:
                    row[i] = j
            self.columns.append((cols, row))

    def texts(self, start: int, stop: int) -> NoteTexts:
        values: list[dict[str, str | None]] = [dict.fromkeys(FIELDS) for _ in range(stop - start)]
        for cols, row in self.columns:
            where = np.flatnonzero(row[start:stop] >= 0)
            take = row[start:stop][where]
            for f, col in cols.items():
                for i, v in zip(where.tolist(), col.take(take).to_pylist(), strict=True):
                    values[i][f] = v
        template = self.template
        # static template lines alone are no text: an admission with nothing rendered stays "" (missing)
        empty = dict.fromkeys(FIELDS)
        blank = render(template, empty)
        texts = [render(template, v) for v in values]
        has_text = np.array([t != blank for t in texts], dtype=bool)
        texts = [t if h else "" for t, h in zip(texts, has_text, strict=True)]
        has_note = np.array([render(template, {**v, "lab_text": None}) != blank for v in values], dtype=bool)
        has_lab = np.array([render(template, {**empty, "lab_text": v["lab_text"]}) != blank for v in values],
                           dtype=bool)
        return NoteTexts(self.hadm[start:stop], texts, has_text, has_note, has_lab, self.split[start:stop], values)
