"""``medfuse prepare``: raw MIMIC-III / MIMIC-IV files or a MEDS dataset -> a leakage-safe cohort folder.

An out-of-core DuckDB pipeline over the canonical relations of the source's adapter, with the rules of
:mod:`medfuse.data.rules`. Every raw row is either used or dropped for a named reason, and
``read == used + sum(dropped)`` is checked per table before anything is written. The cohort is
built in a temporary sibling folder and renamed into place only when complete. docs/data.md
describes the output.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse import __version__
from medfuse.atomic import atomic_folder
from medfuse.config import PrepareConfig, config_hash
from medfuse.data import rules, transform
from medfuse.data.diseases import Disease, load_diseases
from medfuse.data.prepare_notes import section_notes
from medfuse.data.raw import InputError
from medfuse.data.sections import ALLOWED_SECTIONS
from medfuse.data.splits import SPLIT_NAMES, stratified_split
from medfuse.progress import ProgressFn, no_progress

SCHEMA_VERSION = 1
LAB_CLIP = 5.0

__all__ = ["InputError", "prepare_cohort"]


def _beside(main, side):
    """Run ``side()`` in a thread while ``main()`` runs here; both results once both are done (either's
    error is raised). DuckDB, numpy and pyarrow release the GIL, so the two share the cores."""
    with ThreadPoolExecutor(1) as pool:
        side_done = pool.submit(side)
        result = main()
        return result, side_done.result()


@dataclass
class RowAccount:
    """Where the rows of one raw table went."""

    read: int = 0
    used: int = 0
    dropped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)

    def drop(self, reasons: dict[str | None, int]) -> None:
        """Add ``{reason: rows}`` counts; the ``None`` reason is not a drop and is ignored."""
        for reason, n in reasons.items():
            if reason is not None and n:
                self.dropped[reason] += int(n)

    def check(self, table: str) -> None:
        if self.read != self.used + sum(self.dropped.values()):
            raise AssertionError(
                f"row accounting broken for {table}: read {self.read} != used {self.used} + dropped {dict(self.dropped)}"
            )

    def as_dict(self) -> dict:
        return {"read": self.read, "used": self.used, "dropped": dict(sorted(self.dropped.items())),
                "repaired": dict(sorted(self.repaired.items()))}


class _Pipeline:
    """One run of ``prepare``: a DuckDB connection, the source's adapter and the row accounts."""

    def __init__(self, raw: Path, work: Path, cfg: PrepareConfig, progress: ProgressFn):
        import duckdb

        self.raw, self.work, self.cfg, self.progress = raw, work, cfg, progress
        self.spill = Path(cfg.temp_directory) / work.name if cfg.temp_directory else work / ".spill"
        self.spill.mkdir(parents=True, exist_ok=True)
        settings = {"memory_limit": cfg.memory_limit, "temp_directory": str(self.spill),
                    "preserve_insertion_order": False}
        if cfg.threads:
            settings["threads"] = cfg.threads
        self.duckdb = duckdb
        self.con = duckdb.connect(config=settings)
        self.con.execute("ATTACH ':memory:' AS work (COMPRESS); USE work")  # compressed tables: half the memory
        self.con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")  # polled only
        self.accounts: dict[str, RowAccount] = {}
        self.timings: dict[str, float] = {}
        self.split_source = "stratified"
        self.source = rules.open_adapter(raw, cfg.source, self.con, cfg.notes_dir, cfg.meds)
        for name in rules.RELATIONS:  # every file located and checked before any work
            self.source.file(name)

    # -- helpers -----------------------------------------------------------------------------
    def fork(self) -> _Pipeline:
        """The same run on a second DuckDB connection, for a stage that runs beside another one."""
        twin = copy.copy(self)
        twin.con = self.con.cursor()
        twin.con.execute("USE work")
        return twin

    def sql(self, query: str, stage: str | None = None):
        """Run a statement; with ``stage``, report DuckDB's progress on it while it runs."""
        if stage is None:
            return self.con.execute(query)
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.5):
                p = self.con.query_progress()
                if p >= 0:
                    self.progress(stage, p / 100.0)

        thread = threading.Thread(target=poll, daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            return self.con.execute(query)
        finally:
            done.set()
            thread.join()
            self.timings[stage] = round(time.perf_counter() - t0, 3)

    def account(self, name: str) -> RowAccount:
        """The row account of raw table ``name``, created empty on first use."""
        return self.accounts.setdefault(name, RowAccount())

    def scalar(self, query: str):
        return self.con.execute(query).fetchall()[0][0]

    def counts(self, query: str) -> dict:
        return dict(self.con.execute(query).fetchall())

    def relation(self, name: str) -> str | None:
        """The source's canonical relation ``name`` (:data:`~medfuse.data.rules.RELATIONS`) as a subquery;
        rows its parser rejects land in ``rej_<name>``."""
        return self.source.relation(name)

    def start_account(self, name: str, table: str) -> RowAccount:
        """Account for ``table`` (one row per row of relation ``name``): its rows plus rows the parser rejected."""
        acc = self.account(name)
        acc.read = self.scalar(f"SELECT count(*) FROM {table}")
        rejects = self.counts(
            f"SELECT CASE WHEN error_type = 'INVALID ENCODING' THEN 'invalid_utf8' ELSE 'malformed_csv_row' END, "
            f"count(DISTINCT line) FROM rej_{name} GROUP BY ALL"
        )
        acc.read += sum(rejects.values())
        acc.drop(rejects)
        return acc

    def stage(self, name: str, fn):
        """Run ``fn()`` as a timed stage with progress; its result."""
        t0 = time.perf_counter()
        self.progress(name, 0.0)
        try:
            result = fn()
        except (self.duckdb.IOException, self.duckdb.InvalidInputException) as e:
            raise InputError(self._describe_duckdb_error(e)) from None
        self.progress(name, 1.0)
        self.timings[name] = round(time.perf_counter() - t0, 3)
        return result

    def _describe_duckdb_error(self, e: Exception) -> str:
        first = str(e).strip().splitlines()[0]
        for f in self.source.files.values():
            if f is not None and str(f.path) in str(e):
                return f"{f.path}: {first}"
        return first

    # -- stages --------------------------------------------------------------------------------
    def admissions(self) -> None:
        rules.create_patient_rows(self.con, self.relation("patients"))
        acc = self.start_account("patients", "patients_rows")
        acc.drop(self.counts("SELECT reason, count(*) FROM patients_rows GROUP BY reason"))
        acc.used = self.scalar("SELECT count(*) FROM patients")
        rules.create_admission_rows(self.con, self.relation("admissions"))
        self.start_account("admissions", "admissions_rows")

    def diagnoses_and_labels(self, diseases: list[Disease]) -> None:
        rules.create_diagnosis_rows(self.con, self.relation("diagnoses"),
                                    "admissions_rows WHERE reason IS NULL")
        acc = self.start_account("diagnoses", "diagnoses_rows")
        acc.drop(self.counts("SELECT reason, count(*) FROM diagnoses_rows GROUP BY reason"))
        acc.used = self.scalar("SELECT count(*) FROM diagnoses_rows WHERE reason IS NULL")
        acc.repaired["normalized_icd_code"] = self.scalar(
            "SELECT count(*) FROM diagnoses_rows WHERE reason IS NULL AND code <> code_raw")
        rules.create_labels(self.con, diseases, drop_unlabelled=True)
        adm = self.accounts["admissions"]
        adm.drop(self.counts("SELECT reason, count(*) FROM admissions_rows GROUP BY reason"))
        rules.create_cohort(self.con, rules.admitted_sql(self.source.has_race), self.cfg.lab_hours_before_admission,
                            self.cfg.window_hours)
        adm.used = self.scalar("SELECT count(*) FROM cohort")
        adm.repaired["age_capped_at_90"] = self.scalar(f"""SELECT count(*) FROM admissions_rows a
            JOIN patients p USING (subject_id) WHERE a.reason IS NULL AND {rules.AGE} > 90""")
        if adm.used == 0:
            raise InputError(f"{self.source.file('admissions').path}: no usable admission (see dropped reasons: "
                             f"{dict(adm.dropped)})")

    def splits(self, diseases: list[Disease]) -> None:
        source = self.source.create_split_of_patient(self.con)
        if source is not None:  # the source's own split (a MEDS dataset's subject_splits.parquet)
            self.split_source = source
        else:
            names = [d.name for d in diseases]
            patients = self.con.execute(f"""SELECT c.subject_id, {', '.join(f'max(l.{n})' for n in names)}
                FROM cohort c JOIN labels l USING (hadm_id) GROUP BY c.subject_id ORDER BY c.subject_id""").fetchnumpy()
            y = np.stack([patients[k] for k in list(patients)[1:]], axis=1)
            fold = stratified_split(y, self.cfg.split_fractions, self.cfg.seed)
            split_of_patient = pa.table({"subject_id": patients["subject_id"],
                                         "split": pa.array(np.asarray(SPLIT_NAMES)[fold])})
            self.con.register("split_of_patient", split_of_patient)
        self.con.execute("""CREATE TABLE splits AS SELECT c.row, c.subject_id, c.hadm_id, s.split
            FROM cohort c JOIN split_of_patient s USING (subject_id)""")

    def labs(self) -> None:
        c, refs = self.con, transform.has_reference_ranges(self.cfg.source)
        c.execute(f"""CREATE TABLE labitems AS SELECT DISTINCT ON (itemid) TRY_CAST(itemid AS INTEGER) AS itemid,
            label, fluid, category FROM {self.relation('labitems')} WHERE TRY_CAST(itemid AS INTEGER) IS NOT NULL""")
        # One pass reads the rows, types them, attaches those without HADM_ID by time and gives each its
        # drop reason (or none); the shared transforms (medfuse.data.transform) do the rest.
        rules.create_attachment_windows(c)
        transform.create_lab_observations(c, self.relation("labevents"), refs, run=self.sql)
        acc = self.start_account("labevents", "lab_obs")
        transform.reference_units_from_data(c)
        acc.repaired["unit_converted"] = transform.convert_units(c, refs)["converted"]
        acc.drop(transform.drop_counts(c))
        transform.create_lab_aggregates(c, refs, run=self.sql)
        duplicates, from_window = c.execute(
            "SELECT COALESCE(sum(n_rows - count), 0), COALESCE(sum(n_window), 0) FROM lab_agg").fetchall()[0]
        acc.drop({"duplicate": duplicates})
        acc.repaired["hadm_id_from_time_window"] = from_window
        self._select_tests()
        acc.drop({"test_not_selected": self.scalar(
            "SELECT COALESCE(sum(count), 0) FROM lab_agg WHERE itemid NOT IN (SELECT itemid FROM lab_tests)")})
        c.execute("DELETE FROM lab_agg WHERE itemid NOT IN (SELECT itemid FROM lab_tests)")
        acc.used, acc.repaired["censored_value"] = c.execute(
            "SELECT COALESCE(sum(count), 0), COALESCE(sum(n_censored), 0) FROM lab_agg").fetchall()[0]
        twin = self.fork()  # the table in numpy, the text in DuckDB
        self.lab_table, _ = _beside(lambda: transform.lab_wide_table(c), lambda: transform.create_lab_text(twin.con))

    def _select_tests(self) -> None:
        """Lab tests that become columns: frequent enough in *training* admissions, most frequent first."""
        cfg, c = self.cfg, self.con
        n_train = self.scalar("SELECT count(*) FROM splits WHERE split = 'train'")
        c.execute(f"""CREATE TABLE lab_tests AS
            WITH freq AS (
              SELECT g.itemid, count(*) / {n_train} AS train_fraction
              FROM lab_agg g JOIN splits s ON s.hadm_id = g.hadm_id AND s.split = 'train' GROUP BY g.itemid),
            stats AS (
              SELECT o.itemid, quantile_cont(o.num, [0.01, 0.25, 0.5, 0.75, 0.99]) AS q, stddev_samp(o.num) AS sd
              FROM (SELECT hadm_id, itemid, num FROM lab_obs ANTI JOIN lab_dups USING (hadm_id, itemid)
                    WHERE reason IS NULL
                    UNION ALL SELECT hadm_id, itemid, num FROM lab_dups) o
              JOIN splits s ON s.hadm_id = o.hadm_id AND s.split = 'train'
              WHERE o.itemid IN (SELECT itemid FROM freq WHERE train_fraction >= {cfg.lab_min_admission_fraction})
              GROUP BY o.itemid)
            SELECT row_number() OVER (ORDER BY f.train_fraction DESC, f.itemid) - 1 AS rank,
              'lab_' || f.itemid AS key, f.itemid, li.label, li.fluid, li.category, COALESCE(u.unit, '') AS unit,
              f.train_fraction, s.q[3] AS median,
              CASE WHEN s.q[4] > s.q[2] THEN (s.q[4] - s.q[2]) / 1.349 WHEN s.sd > 0 THEN s.sd ELSE 1.0 END AS scale,
              s.q[1] AS q01, s.q[5] AS q99
            FROM freq f JOIN stats s USING (itemid) JOIN labitems li USING (itemid) LEFT JOIN lab_units u USING (itemid)
            ORDER BY rank LIMIT {cfg.lab_max_tests}""")
        if self.scalar("SELECT count(*) FROM lab_tests") == 0:
            raise InputError(f"{self.source.file('labevents').path}: no lab test is measured in at least "
                             f"{cfg.lab_min_admission_fraction:.0%} of training admissions")

    def write(self, out: Path, diseases: list[Disease]) -> dict[str, int]:
        """Write every cohort table as Parquet in cohort row order; returns rows per file."""
        sections = ", ".join(ALLOWED_SECTIONS)
        queries = {
            "admissions": """SELECT c.subject_id, c.hadm_id, c.admittime, c.dischtime, c.age, c.sex, c.race, c.race_raw,
                COALESCE(l.has_labs, false) AS has_labs, n.hadm_id IS NOT NULL AS has_notes
                FROM cohort c LEFT JOIN (SELECT DISTINCT hadm_id, true AS has_labs FROM lab_agg) l USING (hadm_id)
                LEFT JOIN notes n USING (hadm_id) ORDER BY c.row""",
            "lab_tests": "SELECT * EXCLUDE (rank) FROM lab_tests ORDER BY rank",
            "lab_text": "SELECT hadm_id, text, n_abnormal FROM lab_text ORDER BY row",
            "notes": f"SELECT hadm_id, {sections}, n_notes FROM notes ORDER BY row",
            "labels": f"SELECT c.hadm_id, {', '.join(d.name for d in diseases)} FROM cohort c JOIN labels USING (hadm_id) ORDER BY c.row",
            "splits": "SELECT subject_id, hadm_id, split FROM splits ORDER BY row",
        }
        def copy_tables() -> dict[str, int]:
            rows = {}
            for name, q in queries.items():
                path = out / f"{name}.parquet"
                self.con.execute(f"COPY ({q}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
                rows[path.name] = pq.ParquetFile(path).metadata.num_rows
            return rows

        # pyarrow writes the wide lab table beside DuckDB's writes
        rows, _ = _beside(copy_tables, lambda: pq.write_table(self.lab_table, out / "labs.parquet", compression="zstd"))
        return {"labs.parquet": self.lab_table.num_rows, **rows}

    def summary(self, diseases: list[Disease]) -> tuple[dict, dict]:
        """Split sizes and per-split label prevalence."""
        names = [d.name for d in diseases]
        sizes = {}
        prevalence = {}
        for split in (*SPLIT_NAMES, "all"):
            where = "" if split == "all" else f"WHERE s.split = '{split}'"
            r = self.con.execute(f"""SELECT count(*), count(DISTINCT s.subject_id), {', '.join(f'avg(l.{n})' for n in names)}
                FROM splits s JOIN labels l USING (hadm_id) {where}""").fetchall()[0]
            sizes[split] = {"admissions": r[0], "patients": r[1]}
            prevalence[split] = {n: round(float(v or 0.0), 4) for n, v in zip(names, r[2:])}
        return sizes, prevalence


def prepare_cohort(
    raw: str | Path,
    out: str | Path,
    cfg: PrepareConfig,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> dict:
    """Build a cohort folder from raw MIMIC-III/IV files or a MEDS dataset (``cfg.source``) and return its
    manifest (see docs/data.md, docs/meds.md).

    Raises :class:`InputError` (nothing written) for a structural problem with the input.
    """
    raw, out = Path(raw), Path(out)
    progress = progress or no_progress
    if not raw.is_dir():
        raise InputError(f"{raw}: raw data folder not found")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite to replace it)")
    try:
        diseases = load_diseases(cfg.diseases or None)
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg.diseases or 'diseases.toml'}: {e}") from None
    t0 = time.perf_counter()
    with atomic_folder(out) as work:
        p = _Pipeline(raw, work, cfg, progress)
        p.stage("admissions", p.admissions)
        p.stage("diagnoses & labels", lambda: p.diagnoses_and_labels(diseases))
        p.stage("patient-level split", lambda: p.splits(diseases))
        # Notes run beside labs: their sections are cut in Python while DuckDB scans LABEVENTS.
        notes_run = p.fork()
        _, (notes_status, census) = _beside(lambda: p.stage("labs", p.labs),
                                            lambda: notes_run.stage("notes", lambda: section_notes(notes_run)))
        for name, acc in p.accounts.items():
            acc.check(name)
        rows: dict[str, int] = {}
        p.stage("write", lambda: rows.update(p.write(work, diseases)))
        sizes, prevalence = p.summary(diseases)
        p.con.close()
        shutil.rmtree(p.spill, ignore_errors=True)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "source": cfg.source,
            "raw": str(raw.resolve()),
            "medfuse_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": cfg.model_dump(mode="json"),
            "config_hash": config_hash(cfg),
            "labels": [d.name for d in diseases],
            "label_titles": {d.name: d.title for d in diseases},
            "tables": {name: acc.as_dict() for name, acc in sorted(p.accounts.items())},
            "outputs": rows,
            "split_source": p.split_source,
            "split_sizes": sizes,
            "prevalence": prevalence,
            "notes_status": notes_status,
            "notes_census": census,
            "prediction_window": {
                "hours": cfg.window_hours or None,
                "description": (f"labs charted up to {cfg.window_hours:g} h after admission" if cfg.window_hours
                                else "the whole stay") + f" (from {cfg.lab_hours_before_admission:g} h before "
                "admission); notes are not time-cut: their four kept sections describe the state at admission",
            },
            "lab_normalization": {"method": "robust", "center": "median", "scale": "IQR/1.349", "clip": LAB_CLIP,
                                  "fitted_on": "train"},
            "timings": {**p.timings, "total": round(time.perf_counter() - t0, 3)},
        }
        if (summary := p.source.summary()) is not None:
            manifest[p.source.name] = summary
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return manifest
