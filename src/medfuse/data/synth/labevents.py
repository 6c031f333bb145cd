"""LABEVENTS: the results of each chunk of patients as the lab system prints them, streamed to CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medfuse.data.synth.csv_gz import GzipCsv, ints, strings, ts
from medfuse.data.synth.lab_draws import Draws, draw_times, panel_masks
from medfuse.data.synth.lab_tests import LAB_INDEX, LABS
from medfuse.data.synth.lab_values import lab_values
from medfuse.data.synth.layout import Layout
from medfuse.progress import ProgressFn

_ERROR_VALUES = ("ERROR", "HEMOLYZED", "UNABLE TO REPORT", "NotDone")

# Per-test arrays, indexed like LABS.
_DECIMALS = np.array([lab.decimals for lab in LABS])
_NORMAL = np.array([[lab.female or lab.normal, lab.normal] for lab in LABS])  # [test, female/male, low/high]
_BELOW = np.array([lab.below for lab in LABS])
_ABOVE = np.array([lab.above for lab in LABS])
_LIMIT_TEXT = [f"{x:g}" for x in np.where(np.isnan(_BELOW), _ABOVE, _BELOW)]


@dataclass
class LabResults:
    """One chunk's results, a row per test measured at a draw, with the columns both layouts share."""

    draws: Draws
    draw: np.ndarray  # draw of each row
    test: np.ndarray  # test of each row, an index into LABS
    text: np.ndarray  # the row is a specimen type, not a number
    numeric: np.ndarray  # the row has a VALUENUM
    low: np.ndarray  # reference range (NaN where the test has none)
    high: np.ndarray
    row_id: pa.Array
    subject: pa.Array
    hadm: pa.Array
    item: pa.Array
    charttime: pa.Array
    value: pa.Array
    valuenum: pa.Array
    unit: pa.Array
    flag: pa.Array


def _fixed(x: np.ndarray, decimals: np.ndarray) -> pa.Array:
    """Numbers as text with a per-row count of decimals, as the lab system prints them ("0.20", "7", "-3")."""
    scale = 10**decimals
    units = np.rint(np.abs(x) * scale).astype(np.int64)
    whole = pc.cast(pa.array(units // scale), pa.string())
    frac = pc.utf8_slice_codeunits(pc.cast(pa.array(units % scale + scale), pa.string()), 1)
    dot = pc.if_else(pa.array(decimals > 0), ".", "")
    sign = pc.if_else(pa.array((x < 0) & (units > 0)), "-", "")
    return pc.binary_join_element_wise(sign, whole, dot, frac, "")


def _results(
    layout: Layout, chunk: tuple[int, int, int, int], first_id: int, rng: np.random.Generator
) -> LabResults:
    """Draw one chunk's results: draw times, true values, tests measured, then what is printed: fixed
    decimals, "<0.01"/">150" beyond the reporting limits, specimen types as text, and a few failed
    results ("HEMOLYZED", ...) without a number."""
    c = layout.c
    p0, p1, a0, a1 = chunk
    draws = draw_times(c, a0, a1, rng)
    values = lab_values(c, draws, p0, p1, a0, a1, rng)
    r_draw, r_test = np.nonzero(panel_masks(c, draws, rng))
    n = len(r_draw)

    x = values[r_draw, r_test]
    dec = _DECIMALS[r_test]
    shown = np.rint(x * 10.0**dec) / 10.0**dec + 0.0  # + 0.0 turns -0.0 into 0.0
    under, over = shown < _BELOW[r_test], shown > _ABOVE[r_test]
    text = r_test == LAB_INDEX["specimen_type"]
    error = (rng.random(n) < np.where(r_test == LAB_INDEX["potassium"], 0.006, 0.0012)) & ~text
    numeric = ~(under | over | text | error)
    censored = pc.binary_join_element_wise(
        strings(["<", ">"], over.astype(np.int64)), strings(_LIMIT_TEXT, r_test), ""
    )
    value = pc.if_else(pa.array(under | over), censored, _fixed(x, dec))
    value = pc.if_else(
        pa.array(text), strings(layout.specimen_types, np.where(text, x, 0).astype(np.int64)), value
    )
    failed = strings(_ERROR_VALUES, rng.integers(0, len(_ERROR_VALUES), n))
    value = pc.if_else(pa.array(error), failed, value)
    male = c.male[c.pat[draws.adm[r_draw]]].astype(np.int64)
    low, high = _NORMAL[r_test, male, 0], _NORMAL[r_test, male, 1]
    reported = np.where(under, _BELOW[r_test], np.where(over, _ABOVE[r_test], shown))
    abnormal = ~text & ~error & ((reported < low) | (reported > high) | over)

    adm = draws.adm[r_draw]
    return LabResults(
        draws=draws,
        draw=r_draw,
        test=r_test,
        text=text,
        numeric=numeric,
        low=low,
        high=high,
        row_id=ints(first_id + 1 + np.arange(n)),
        subject=ints(c.subject_id[c.pat[adm]]),
        hadm=ints(c.hadm_id[adm], draws.in_hadm[r_draw]),
        item=ints(layout.itemids[r_test]),
        charttime=ts(draws.time).take(pa.array(r_draw)),
        value=value,
        valuenum=pa.array(shown, pa.float64(), mask=~numeric),
        unit=layout.units.take(pa.array(r_test)),
        flag=strings([None, "abnormal"], abnormal.astype(np.int64)),
    )


def write_labevents(layout: Layout, path: Path, report: ProgressFn) -> int:
    """LABEVENTS / labevents, streamed per chunk of patients; returns the number of rows written."""
    chunks = layout.c.chunks()
    next_id = 0
    with GzipCsv(path, layout.quote_all) as sink:
        for i, chunk in enumerate(chunks):
            rng = np.random.default_rng([layout.seed, 3, i])
            results = _results(layout, chunk, next_id, rng)
            columns = layout.lab_columns(results, rng)
            n = len(results.draw)
            duplicate = rng.random(n) < 0.002  # exact duplicate rows, as a repeated export leaves them
            rows = pa.array(np.repeat(np.arange(n), 1 + duplicate))
            sink.write({name: column.take(rows) for name, column in columns.items()})
            next_id += n
            report("labevents", (i + 1) / len(chunks))
    return sink.rows
