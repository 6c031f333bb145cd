"""What an output layout is (:class:`Layout`) and the small tables every layout writes the same way:
patients, admissions, diagnoses, the ICD dictionary and D_LABITEMS."""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medfuse.data.synth.conditions import REASON_INDEX
from medfuse.data.synth.csv_gz import ints, strings, ts, write_table
from medfuse.data.synth.diagnoses import coded_labels, diagnosis_codes
from medfuse.data.synth.population import Cohort, Format, pick

if TYPE_CHECKING:
    from medfuse.data.synth.labevents import LabResults
    from medfuse.data.synth.notes import NoteRows

Columns = dict[str, pa.Array]
"""A table or a chunk of one: header name -> column, all equally long."""
Categories = dict[str, tuple[tuple[str | None, float], ...]]
"""Column -> ((value, weight), ...); a None value is an empty field."""


@dataclass
class Admissions:
    """The ADMISSIONS columns that both layouts draw alike, from their own category values."""

    subject: pa.Array
    hadm: pa.Array
    admit: pa.Array
    disch: pa.Array
    death: pa.Array
    location: pa.Array
    discharge: pa.Array
    insurance: pa.Array
    language: pa.Array
    marital: pa.Array
    race: pa.Array
    ed_reg: pa.Array
    ed_out: pa.Array
    expired: pa.Array
    elective: np.ndarray


@dataclass
class Diagnoses:
    """DIAGNOSES_ICD rows in SEQ_NUM order: the admission and code of each, and their common columns."""

    adm: np.ndarray
    codes: list[str]
    subject: pa.Array
    hadm: pa.Array
    seq: pa.Array
    code: pa.Array


class Layout(ABC):
    """The files of one raw layout for one cohort and seed: where each table goes (``files``, paths under
    the output folder) and how its columns look. Subclasses fill the columns; :meth:`write_tables`,
    :func:`~medfuse.data.synth.labevents.write_labevents` and :func:`~medfuse.data.synth.notes.write_notes`
    draw the rows and write them."""

    name: Format
    files: ClassVar[dict[str, str]]  # patients, admissions, diagnoses, d_icd, d_labitems, labevents, notes
    quote_all: bool  # every string quoted (MIMIC-III) or only where needed (MIMIC-IV)
    categories: ClassVar[Categories]
    died: str  # DISCHARGE_LOCATION of a death in hospital
    labitem_columns: tuple[str, ...]  # D_LABITEMS header; lower-cased, the columns of synth_labitems.csv
    itemids: np.ndarray  # per test of LABS
    units: pa.Array  # per test of LABS
    specimen_types: tuple[str, ...]  # blood gas specimen types as printed, in SPECIMEN_TYPES order

    def __init__(self, c: Cohort, seed: int):
        self.c = c
        self.seed = seed

    def write_tables(self, out: Path, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """PATIENTS, ADMISSIONS, DIAGNOSES_ICD and the two dictionaries; returns the number of diagnosis
        rows and the labels they encode, [admissions, diseases]."""
        c = self.c
        write_table(out / self.files["patients"], self.patients(), self.quote_all)
        write_table(
            out / self.files["admissions"], self.admissions(self._admissions(rng), rng), self.quote_all
        )
        rows = diagnosis_codes(c, rng)
        adm = np.array([a for a, _ in rows], np.int64)
        codes = [code for _, code in rows]
        dx = Diagnoses(
            adm=adm,
            codes=codes,
            subject=ints(c.subject_id[c.pat[adm]]),
            hadm=ints(c.hadm_id[adm]),
            seq=ints(np.arange(len(rows)) - np.searchsorted(adm, adm) + 1),
            code=pa.array(codes, pa.string()),
        )
        diagnoses, dictionary = self.diagnoses(dx)
        write_table(out / self.files["diagnoses"], diagnoses, self.quote_all)
        write_table(out / self.files["d_icd"], dictionary, self.quote_all)
        write_table(out / self.files["d_labitems"], self._labitems(), self.quote_all)
        return len(rows), coded_labels(codes, adm, c.icd10, len(c.pat))

    def category(self, rng: np.random.Generator, column: str, n: int) -> pa.Array:
        """n values of a categorical column drawn with the layout's weights."""
        options = self.categories[column]
        return strings([o for o, _ in options], pick(rng, [w for _, w in options], n))

    def _admissions(self, rng: np.random.Generator) -> Admissions:
        """The common ADMISSIONS columns, drawn in a fixed order: the output bytes depend on it."""
        c = self.c
        n_pat, n_adm = len(c.subject_id), len(c.pat)
        ed = c.ed_reg >= 0
        ed_out = c.admit + (rng.uniform(-0.5, 2.0, n_adm) * 3600 // 60 * 60).astype(np.int64)
        ed_location = self.category(rng, "location_ed", n_adm)
        location = pc.if_else(pa.array(ed), ed_location, self.category(rng, "location", n_adm))
        old, young = self.category(rng, "insurance_old", n_adm), self.category(rng, "insurance_young", n_adm)
        discharge = self.category(rng, "discharge", n_adm)
        language, marital, race = (
            self.category(rng, col, n_pat).take(pa.array(c.pat)) for col in ("language", "marital", "race")
        )
        return Admissions(
            subject=ints(c.subject_id[c.pat]),
            hadm=ints(c.hadm_id),
            admit=ts(c.admit),
            disch=ts(c.disch),
            death=ts(c.disch, c.died),
            location=location,
            discharge=pc.if_else(pa.array(c.died), self.died, discharge),
            insurance=pc.if_else(pa.array(c.age >= 65), old, young),
            language=language,
            marital=marital,
            race=race,
            ed_reg=ts(c.ed_reg, ed),
            ed_out=ts(ed_out, ed),
            expired=ints(c.died.astype(np.int64)),
            elective=c.reason == REASON_INDEX["cabg"],
        )

    def _labitems(self) -> Columns:
        """D_LABITEMS: the full real item list of the MIMIC demo, shipped as resources/synth_labitems.csv."""
        text = resources.files("medfuse.resources").joinpath("synth_labitems.csv").read_text()
        rows = [r for r in csv.DictReader(text.splitlines()) if r["source"] == self.name]

        def column(name: str) -> pa.Array:
            if name in ("row_id", "itemid"):
                return ints(np.array([int(r[name]) for r in rows]))
            return pa.array([r[name] or None for r in rows], pa.string())

        return {name: column(name.lower()) for name in self.labitem_columns}

    @abstractmethod
    def patients(self) -> Columns:
        """PATIENTS / patients."""

    @abstractmethod
    def admissions(self, a: Admissions, rng: np.random.Generator) -> Columns:
        """ADMISSIONS / admissions from the common columns ``a`` and the layout's own."""

    @abstractmethod
    def diagnoses(self, dx: Diagnoses) -> tuple[Columns, Columns]:
        """DIAGNOSES_ICD and D_ICD_DIAGNOSES (every code used, with its real title)."""

    @abstractmethod
    def lab_columns(self, r: LabResults, rng: np.random.Generator) -> Columns:
        """One chunk of LABEVENTS / labevents."""

    @abstractmethod
    def note_columns(self, rows: NoteRows, first_row: int) -> Columns:
        """One chunk of NOTEEVENTS / note/discharge; ``first_row`` notes were written before."""
