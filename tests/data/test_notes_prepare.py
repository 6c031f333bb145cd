"""The realistic note corpus through the real ``prepare`` path, attached to the real demo admissions.

MIMIC-III: a copy of the demo with a NOTEEVENTS.csv.gz of corpus notes (CareVue and Metavision
layouts, addenda, one note marked ISERROR, one nursing note). MIMIC-IV: the demo as it is, with
MIMIC-IV-Note in a folder of its own (``--notes-dir``). Checked in notes.parquet and in the text
that is embedded (``build_texts``): no marker of a dropped section, at least 97% of kept ones.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest
from note_corpus import ALLOWED_SPELLINGS, make_corpus
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.config import load_config
from medfuse.data.audit import census_html, census_manifest, census_rows
from medfuse.data.prepare import prepare_cohort
from medfuse.data.raw import InputError, find_notes
from medfuse.notes.text import build_texts

MARKER = re.compile(r"zq[a-z]{8}")
M3_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION",
              "CGID", "ISERROR", "TEXT"]
M4_COLUMNS = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]


def admissions(path) -> list[tuple[str, str, str]]:
    """``(subject_id, hadm_id, dischtime)`` of every raw admission, in file order."""
    with gzip.open(path, "rt", newline="") as fh:
        return [(r["subject_id"], r["hadm_id"], r["dischtime"])
                for r in ({k.lower(): v for k, v in row.items()} for row in csv.DictReader(fh))]


def write_gz(path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


class Truth:
    """Which marker must be where: kept markers per admission and section, and every forbidden one."""

    def __init__(self):
        self.kept: dict[int, dict[str, set[str]]] = {}
        self.forbidden: set[str] = set()

    def add(self, hadm: str, note, used: bool = True) -> None:
        if not used:  # a note that must be dropped whole
            self.forbidden |= {*note.dropped, *(m for ms in note.kept.values() for m in ms)}
            return
        self.forbidden |= set(note.dropped)
        per = self.kept.setdefault(int(hadm), {})
        for section, markers in note.kept.items():
            per.setdefault(section, set()).update(markers)

    def check(self, cohort) -> tuple[float, Counter]:
        """Share of kept markers found in their admission's section; fails on any forbidden marker."""
        notes = pq.read_table(cohort / "notes.parquet").to_pylist()
        texts = build_texts(cohort, load_config().notes.template)
        everything = " ".join(str(v) for row in notes for v in row.values()) + " " + " ".join(texts.texts)
        leaked = sorted(self.forbidden & set(MARKER.findall(everything)))
        assert not leaked, f"{len(leaked)} markers of dropped sections or notes leaked: {leaked[:30]}"
        by_hadm = {r["hadm_id"]: r for r in notes}
        text_of = dict(zip(texts.hadm_ids.tolist(), texts.texts, strict=True))
        found = Counter()
        for hadm, sections in self.kept.items():
            embedded = set(MARKER.findall(text_of[hadm]))
            for section, markers in sections.items():
                in_table = set(MARKER.findall(by_hadm.get(hadm, {}).get(section) or ""))
                found["total"] += len(markers)
                found["table"] += len(markers & in_table)
                found["embedded"] += len(markers & embedded)
        return found["table"] / found["total"], found


@pytest.fixture(scope="module")
def mimic3_notes(mimic3_demo, tmp_path_factory):
    raw = tmp_path_factory.mktemp("m3notes") / "raw"
    raw.mkdir()
    for stem in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD", "LABEVENTS", "D_LABITEMS"):
        shutil.copy(mimic3_demo / f"{stem}.csv.gz", raw / f"{stem}.csv.gz")
    adm = admissions(raw / "ADMISSIONS.csv.gz")
    corpus = iter(make_corpus(len(adm) + 20, seed=11, styles=("carevue", "metavision")))
    truth, rows = Truth(), []

    def add(subject, hadm, disch, note, *, category="Discharge summary", description="Report", iserror=""):
        rows.append([len(rows) + 1, subject, hadm, disch[:10], "", "", category, description, "", iserror, note.text])

    for k, (subject, hadm, disch) in enumerate(adm):
        note = next(corpus)
        add(subject, hadm, disch, note)
        truth.add(hadm, note)
        if k < 12:  # an addendum: a second summary of the same admission
            note = next(corpus)
            add(subject, hadm, disch, note, description="Addendum")
            truth.add(hadm, note)
    subject, hadm, disch = adm[0]
    bad, nursing = next(corpus), next(corpus)
    add(subject, hadm, disch, bad, iserror="1")
    add(subject, hadm, disch, nursing, category="Nursing/other", description="Generic Note")
    truth.add(hadm, bad, used=False)
    truth.add(hadm, nursing, used=False)
    write_gz(raw / "NOTEEVENTS.csv.gz", M3_COLUMNS, rows)
    out = raw.parent / "cohort"
    prepare_cohort(raw, out, load_config(overrides={"prepare": {"source": "mimic3"}}).prepare)
    return out, truth, len(adm)


@pytest.fixture(scope="module")
def mimic4_notes(mimic4_demo, tmp_path_factory):
    """The unchanged MIMIC-IV demo with MIMIC-IV-Note in its own folder, as PhysioNet ships them."""
    root = tmp_path_factory.mktemp("m4notes")
    adm = admissions(mimic4_demo / "hosp" / "admissions.csv.gz")
    corpus = make_corpus(len(adm), seed=12, styles=("mimic4",))
    truth, rows = Truth(), []
    for k, ((subject, hadm, disch), note) in enumerate(zip(adm, corpus, strict=True)):
        rows.append([f"{subject}-DS-{k + 1}", subject, hadm, "DS", k + 1, disch, disch, note.text])
        truth.add(hadm, note)
    notes_dir = root / "mimic-iv-note" / "2.2"
    write_gz(notes_dir / "note" / "discharge.csv.gz", M4_COLUMNS, rows)
    out = root / "cohort"
    result = CliRunner().invoke(app, ["prepare", str(mimic4_demo), "--source", "mimic4", "--notes-dir",
                                      str(notes_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, truth, len(adm)


@pytest.mark.parametrize("which", ["mimic3", "mimic4"])
def test_corpus_through_prepare_no_leak_and_kept(which, mimic3_notes, mimic4_notes):
    cohort, truth, n_adm = mimic3_notes if which == "mimic3" else mimic4_notes
    kept, found = truth.check(cohort)
    print(f"{which}: {found['table']}/{found['total']} = {kept:.2%} of allowed-section markers in notes.parquet, "
          f"{found['embedded']} in the embedded text")
    assert found["total"] > 3000 and kept >= 0.97
    assert found["embedded"] == found["table"]  # the template embeds every kept section whole
    manifest = json.loads((cohort / "manifest.json").read_text())
    assert manifest["notes_status"] == "present"
    assert pq.read_table(cohort / "notes.parquet").num_rows == n_adm  # every demo admission is in the cohort


def test_iserror_and_other_categories_are_dropped_and_counted(mimic3_notes):
    cohort, _, n_adm = mimic3_notes
    notes = json.loads((cohort / "manifest.json").read_text())["tables"]["notes"]
    assert notes == {"read": n_adm + 14, "used": n_adm + 12, "repaired": {},
                     "dropped": {"marked_error": 1, "not_discharge_summary": 1}}
    n_notes = dict(zip(*pq.read_table(cohort / "notes.parquet", columns=["hadm_id", "n_notes"]).to_pydict().values(),
                       strict=True))
    assert sorted(Counter(n_notes.values()).items()) == [(1, n_adm - 12), (2, 12)]


def test_census_in_manifest_and_report_html(mimic4_notes):
    cohort, truth, n_adm = mimic4_notes
    manifest = json.loads((cohort / "manifest.json").read_text())
    census = manifest["notes_census"]
    assert census["notes_sectioned"] == n_adm and census["notes_without_allowed_section"] == 0
    actions = Counter()
    for header, count, action in census_rows(manifest):
        actions[action] += count
    # one header per note for these three sections (past history has sub-headers in some layouts)
    for section in ("chief_complaint", "present_illness", "admission_medications"):
        assert actions[f"kept:{section}"] == sum(section in s for s in truth.kept.values())
    rows = {(h, a) for h, _, a in census_rows(manifest)}
    for header in ("FINAL DIAGNOSES", "TRANSITIONAL ISSUES", "BRIEF HOSPITAL COURSE", "___ DIAGNOSIS", "UNIT NO"):
        assert (header, "dropped") in rows
    assert census["kept"] == sum(v for k, v in actions.items() if k != "dropped")
    assert census["dropped"] == actions["dropped"] > census["kept"]
    page = census_html(manifest)
    assert "<td>FINAL DIAGNOSES</td>" in page and f"{n_adm:,} discharge summaries sectioned" in page
    assert manifest["prediction_window"]["hours"] is None


def test_census_is_bounded_and_escaped():
    census = Counter({("A", "dropped"): 5, ("B", "kept:past_history"): 3, ("<C & D>", "dropped"): 2,
                      ("E", "dropped"): 1})
    m = census_manifest(census, notes_sectioned=4, without_allowed=1, limit=3)
    assert [r["header"] for r in m["headers"]] == ["A", "B", "<C & D>"]
    assert m["other_headers"] == {"distinct": 1, "count": 1} and m["kept"] == 3 and m["dropped"] == 8
    page = census_html({"notes_census": m})
    assert "<td>&lt;C &amp; D&gt;</td>" in page and "1 less frequent headers not shown" in page
    assert "No discharge summaries" in census_html({"notes_census": None})


def test_audit_notes_command(mimic4_notes, tmp_path):
    cohort = mimic4_notes[0]
    runner = CliRunner()
    result = runner.invoke(app, ["audit-notes", str(cohort)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "HISTORY OF PRESENT ILLNESS" in result.output and "kept:present_illness" in result.output
    assert "without an allowed section 0" in result.output
    everything = runner.invoke(app, ["audit-notes", str(cohort), "--all"], env={"COLUMNS": "200"})
    shown = len(json.loads((cohort / "manifest.json").read_text())["notes_census"]["headers"])
    table_rows = [line for line in everything.output.splitlines() if re.search(r"\s(dropped|kept:\w+)\s+\W$", line)]
    assert shown > 40 and len(table_rows) == shown
    assert len([line for line in result.output.splitlines() if re.search(r"\s(dropped|kept:\w+)\s+\W$", line)]) == 40
    missing = runner.invoke(app, ["audit-notes", str(tmp_path)])
    assert missing.exit_code == 2 and "not a cohort folder" in missing.output


def test_notes_dir_layouts(tmp_path):
    for folder in ("a/note", "b", "c"):
        (tmp_path / folder).mkdir(parents=True)
    for path in ("a/note/discharge.csv.gz", "b/discharge.csv", "c/other.csv.gz", "b/NOTEEVENTS.csv.gz"):
        (tmp_path / path).write_bytes(b"")
    assert find_notes(tmp_path / "a", "note/discharge") == tmp_path / "a/note/discharge.csv.gz"  # mimic-iv-note/2.2
    assert find_notes(tmp_path / "a/note", "note/discharge") == tmp_path / "a/note/discharge.csv.gz"
    assert find_notes(tmp_path / "b", "note/discharge") == tmp_path / "b/discharge.csv"
    assert find_notes(tmp_path / "b", "NOTEEVENTS") == tmp_path / "b/NOTEEVENTS.csv.gz"  # mimic3 works the same
    with pytest.raises(InputError, match=r"c: no note/discharge.csv.gz or discharge.csv.gz"):
        find_notes(tmp_path / "c", "note/discharge")
    with pytest.raises(InputError, match="notes folder not found"):
        find_notes(tmp_path / "nowhere", "note/discharge")


def test_allowed_spellings_of_the_corpus_are_known():
    from medfuse.data.sections import ALLOWED_SECTIONS, normalize_header

    for section, spellings in ALLOWED_SPELLINGS.items():
        assert {normalize_header(s) for s in spellings} <= set(ALLOWED_SECTIONS[section])
