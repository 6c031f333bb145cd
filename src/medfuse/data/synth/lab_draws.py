"""When blood is drawn and which tests each draw measures, per chunk of patients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfuse.data.synth.conditions import AFIB, ANEMIA, CAD, DM, HF, HLD, INFECTION, REASON_INDEX
from medfuse.data.synth.lab_tests import AM, ED, LAB_INDEX, LABS, OUT, PANELS, STAT
from medfuse.data.synth.population import DAY, Cohort


@dataclass
class Draws:
    """Blood draws of one chunk, sorted by patient and time; one CHARTTIME each."""

    adm: np.ndarray  # admission (global index) the draw belongs to or is nearest to
    time: np.ndarray  # seconds
    kind: np.ndarray  # ED, AM, STAT, OUT
    in_hadm: np.ndarray  # written with the admission's HADM_ID
    frac: np.ndarray  # position within the stay, 0..1 (0 for outpatient draws)


def draw_times(c: Cohort, a0: int, a1: int, rng: np.random.Generator) -> Draws:
    """ED/admission draw, one early-morning draw per hospital day, extra ICU draws, outpatient visits."""
    adm = np.arange(a0, a1)
    admit, disch = c.admit[adm], c.disch[adm]
    los = disch - admit
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []

    ed = c.ed_reg[adm] >= 0
    first_time = np.where(
        ed,
        c.ed_reg[adm] + rng.uniform(0.2, 0.9, len(adm)) * (admit - c.ed_reg[adm]),
        admit + rng.uniform(0.02, 0.2, len(adm)) * los,
    )
    parts.append((adm, first_time, ED))

    first_am = (admit - 5 * 3600) // DAY * DAY + DAY + 5 * 3600
    n_am = np.maximum((disch - first_am) // DAY + 1, 0)
    am_adm = np.repeat(adm, n_am)
    k = np.arange(len(am_adm)) - np.repeat(np.cumsum(n_am) - n_am, n_am)
    parts.append((am_adm, first_am[am_adm - a0] + k * DAY + rng.uniform(-75, 90, len(am_adm)) * 60, AM))

    icu_span = np.minimum(los, 4 * DAY)
    n_stat = rng.poisson(1.1 * c.severity[adm] * (1 + 2 * c.ventilated[adm]) * icu_span / DAY)
    stat_adm = np.repeat(adm, n_stat)
    parts.append(
        (stat_adm, admit[stat_adm - a0] + rng.random(len(stat_adm)) ** 1.5 * icu_span[stat_adm - a0], STAT)
    )

    # Outpatient visits before or after the stay, never inside another stay of the patient nor after death.
    n_out = rng.poisson(4.4, len(adm))
    out_adm = np.repeat(adm, n_out)
    after = rng.random(len(out_adm)) < 0.5
    offset = rng.uniform(2, 400, len(out_adm)) * DAY
    out_time = np.where(after, c.disch[out_adm] + offset, c.admit[out_adm] - offset)
    same_next = np.append(c.pat[1:] == c.pat[:-1], False)
    same_prev = np.insert(c.pat[1:] == c.pat[:-1], 0, False)
    death = np.where(c.dod >= 0, c.dod, np.iinfo(np.int64).max)[c.pat]
    next_admit = np.where(same_next, np.roll(c.admit, -1), death)[out_adm]
    prev_disch = np.where(same_prev, np.roll(c.disch, 1), np.iinfo(np.int64).min)[out_adm]
    keep = (out_time > prev_disch + DAY) & (out_time < next_admit - DAY)
    parts.append((out_adm[keep], out_time[keep], OUT))

    adm_d = np.concatenate([p[0] for p in parts])
    t = (np.concatenate([p[1] for p in parts]) // 60 * 60).astype(np.int64)
    kind = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    order = np.lexsort((kind, t, c.pat[adm_d]))
    adm_d, t, kind = adm_d[order], t[order], kind[order]
    in_hadm = (kind != OUT) & ~((kind == ED) & (t < c.admit[adm_d]) & (rng.random(len(t)) < 0.3))
    frac = np.where(
        kind == OUT,
        0.0,
        np.clip((t - c.admit[adm_d]) / np.maximum(c.disch[adm_d] - c.admit[adm_d], 1), 0, 1),
    )
    return Draws(adm=adm_d, time=t, kind=kind, in_hadm=in_hadm, frac=frac)


def panel_masks(c: Cohort, d: Draws, rng: np.random.Generator) -> np.ndarray:
    """Which tests each draw measured, [draws, tests]: routine panels almost always, special tests rarely
    and more often when relevant (HbA1c with diabetes, BNP with heart failure, troponin with CAD...)."""
    n = len(d.adm)
    has = c.dis[d.adm].astype(float)
    reason = c.reason[d.adm]
    kind = d.kind
    ed, am, stat, out = (kind == ED), (kind == AM), (kind == STAT), (kind == OUT)
    vent = c.ventilated[d.adm]
    chest = (
        (reason == REASON_INDEX["nstemi"])
        | (reason == REASON_INDEX["cabg"])
        | (reason == REASON_INDEX["syncope"])
    )
    infection = np.isin(reason, [REASON_INDEX[r] for r in INFECTION])
    warfarin = has[:, AFIB] * c.warfarin[c.pat[d.adm]]
    # Tests drawn once per stay go on the stay's first in-hospital draw.
    inside = np.flatnonzero(~out)
    first_of_stay = np.zeros(n, bool)
    first_of_stay[inside[np.unique(d.adm[inside], return_index=True)[1]]] = True

    chance = {
        "coag": np.select([ed, am, stat], [0.7, 0.45, 0.3], 0.12) + 0.25 * warfarin,
        "blood_gas": np.select(
            [ed, am, stat], [0.12 + 0.5 * vent, 0.04 + 0.75 * vent, 0.08 + 0.85 * vent], 0.0
        ),
        "cardiac": np.select(
            [ed, am, stat],
            [
                0.15 + 0.15 * has[:, CAD] + 0.5 * chest,
                0.02 + 0.04 * has[:, CAD] + 0.3 * chest,
                0.03 + 0.4 * chest,
            ],
            0.01 + 0.02 * has[:, CAD],
        ),
        "bnp": np.select(
            [ed, am, stat],
            [0.05 + 0.15 * has[:, HF], 0.005 + 0.02 * has[:, HF], 0.0],
            0.01 + 0.05 * has[:, HF],
        ),
        "vanco": np.where(am | stat, 0.35 * infection, 0.0),
        "hba1c": np.where(out, 0.03 + 0.2 * has[:, DM], first_of_stay * (0.05 + 0.2 * has[:, DM])),
        "lipids": np.where(
            out, 0.05 + 0.25 * has[:, HLD], first_of_stay * (0.04 + 0.15 * has[:, HLD] + 0.12 * has[:, CAD])
        ),
        "iron": np.where(out, 0.01 + 0.04 * has[:, ANEMIA], first_of_stay * (0.05 + 0.15 * has[:, ANEMIA])),
        "b12": np.where(out, 0.005 + 0.02 * has[:, ANEMIA], first_of_stay * (0.03 + 0.07 * has[:, ANEMIA])),
    }
    measured = np.zeros((n, len(LABS)), bool)
    for name, (tests, by_kind) in PANELS.items():
        p = chance[name] if by_kind is None else np.array(by_kind)[kind]
        drawn = rng.random(n) < p
        for t in tests:
            measured[:, LAB_INDEX[t]] = drawn
    return measured
