"""The note-header census: which section headers the discharge summaries had and what was done with each.

``prepare`` counts every header it sees while cutting notes into sections (``medfuse.data.sections``)
and stores the census in ``manifest.json`` under ``notes_census``: the ``CENSUS_LIMIT`` most frequent
(header, action) pairs, the rest as one count, so a huge corpus cannot blow up the manifest.
``medfuse audit-notes COHORT`` prints it; :func:`census_html` renders it for ``report.html``.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CENSUS_LIMIT = 500


def census_manifest(census: Counter, notes_sectioned: int, without_allowed: int,
                    limit: int = CENSUS_LIMIT) -> dict:
    """The manifest's ``notes_census`` from ``{(HEADER, action): count}``: the ``limit`` most frequent
    pairs (count, then header, order) and the number and total count of the others."""
    ranked = sorted(census.items(), key=lambda kv: (-kv[1], kv[0]))
    rest = ranked[limit:]
    return {
        "notes_sectioned": notes_sectioned,
        "notes_without_allowed_section": without_allowed,
        "distinct_headers": len(ranked),
        "kept": sum(n for (_, action), n in census.items() if action != "dropped"),
        "dropped": sum(n for (_, action), n in census.items() if action == "dropped"),
        "headers": [{"header": h, "count": n, "action": a} for (h, a), n in ranked[:limit]],
        "other_headers": {"distinct": len(rest), "count": sum(n for _, n in rest)},
    }


def census_rows(manifest: dict) -> list[tuple[str, int, str]]:
    """``(header, count, action)`` of the census in ``manifest``, most frequent first; empty without notes."""
    census = manifest.get("notes_census") or {}
    return [(r["header"], r["count"], r["action"]) for r in census.get("headers", [])]


def census_html(manifest: dict, limit: int = 50) -> str:
    """The census as an HTML section: totals and a table of the ``limit`` most frequent headers."""
    census = manifest.get("notes_census")
    if not census:
        return "<section><h2>Note headers</h2><p>No discharge summaries were sectioned.</p></section>"
    rows = "".join(
        f"<tr><td>{html.escape(h)}</td><td>{n:,}</td><td>{html.escape(a)}</td></tr>"
        for h, n, a in census_rows(manifest)[:limit])
    more = len(census["headers"]) - min(limit, len(census["headers"])) + census["other_headers"]["distinct"]
    return (
        "<section><h2>Note headers</h2>"
        f"<p>{census['notes_sectioned']:,} discharge summaries sectioned, {census['notes_without_allowed_section']:,} "
        f"without an allowed section; {census['kept']:,} headers kept, {census['dropped']:,} dropped, "
        f"{census['distinct_headers']:,} distinct.</p>"
        "<table><thead><tr><th>header</th><th>count</th><th>action</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        + (f"<p>{more:,} less frequent headers not shown (medfuse audit-notes --all).</p>" if more else "")
        + "</section>"
    )


@dataclass
class NotesAudit:
    """The census of one cohort with the notes table's row account."""

    cohort: Path
    notes_status: str
    notes_read: int
    census: dict | None
    rows: list[tuple[str, int, str]]


def audit_notes(cohort: str | Path) -> NotesAudit:
    """Read the header census of a cohort folder; ``FileNotFoundError`` when it is not a cohort."""
    cohort = Path(cohort)
    path = cohort / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{cohort}: not a cohort folder (no manifest.json); run `medfuse prepare` first")
    manifest = json.loads(path.read_text())
    notes = manifest.get("tables", {}).get("notes", {})
    return NotesAudit(cohort, manifest.get("notes_status", "missing"), notes.get("read", 0),
                      manifest.get("notes_census"), census_rows(manifest))
