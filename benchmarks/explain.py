"""Faithfulness of the explanations (medfuse.serving.explain), measured by deletion and insertion.

For every positive prediction (admission x label decided positive at the frozen thresholds):

* deletion: the label's probability with its top-3 attributed items deleted vs with 3 random items of
  the same record deleted (mean of ``--draws`` draws); items are the measured lab tests and the note
  lines, pooled, and each modality on its own. A lab test is deleted by making it unobserved, a line by
  removing it from its field. "Top beats random" when the top-3 deletion lowers p more.
* insertion, per modality: from the record without any lab test (or without any note line), the top-3
  items inserted vs 3 random ones; "top beats random" when the top-3 raise p more.
* also, pooled: deleting the top 3 vs the items ranked 4 to 6, and the share of positives whose decision
  the top-3 deletion turns negative.

Records with 3 or fewer items of a kind are left out of that kind's figures (top 3 = every item; 5 or
fewer for the comparison with ranks 4 to 6).

1. Choice (development seed 0, docs/protocol.md; validation split): lab scores by occlusion vs Captum
   integrated gradients; chosen: the higher share of top-3 lab deletions beating random, then the larger
   mean top-3 deletion drop (occlusion on a tie).
2. Report (reporting seed 1, the `medfuse demo` cohort, 2,000 admissions; test split): the chosen method.

Each cohort is built with the demo settings (src/medfuse/resources/demo.toml) in the folders that
benchmarks/compare_cohort.py uses (runs/bench/<name>/, keyed by the settings; existing ones are reused),
then trained (`medfuse train`), exported (`medfuse export`), and its split's records read from the raw
files (`records_from_raw`) are predicted and explained through the bundle. Writes
benchmarks/results/explain.json.

    python benchmarks/explain.py
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, offline, save

TARGET = 0.8
NONE = np.zeros(0, np.int64)


def build(name: str, seed: int, admissions: int, work_dir: Path, progress) -> tuple[Path, Path, dict]:
    """``(raw, bundle, timings)`` of one synthetic cohort with the demo settings (existing folders reused)."""
    from medfuse.config import config_hash, load_config
    from medfuse.data.cohort import Cohort
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.runs.export import export_bundle
    from medfuse.runs.stages import ensure_labs_run, ensure_notes_run, train_run

    demo = ROOT.parent / "src" / "medfuse" / "resources" / "demo.toml"
    cfg = load_config(demo, {"synth": {"admissions": admissions, "seed": seed}})
    cfg = cfg.model_copy(update={"prepare": cfg.prepare.model_copy(update={"source": cfg.synth.format})})

    def key(*sections) -> str:
        return "-".join(config_hash(s)[:8] for s in sections)

    work = work_dir / name
    raw = work / f"raw-{key(cfg.synth)}"
    cohort_dir = work / f"cohort-{key(cfg.synth, cfg.prepare)}"
    labs_dir = work / f"labs-{key(cfg.synth, cfg.prepare, cfg.labs)}"
    notes_dir = work / f"notes-{key(cfg.synth, cfg.prepare, cfg.notes)}"
    timings: dict[str, float | str] = {}

    def stage(label: str, done: bool, fn) -> None:
        if done:
            timings[label] = "reused"
            return
        t0 = time.perf_counter()
        fn()
        timings[label] = round(time.perf_counter() - t0, 1)

    stage("synth", (raw / ".complete").exists(), lambda: (
        generate(raw, cfg.synth.format, admissions, seed=seed, note_fraction=cfg.synth.note_fraction,
                 progress=progress), (raw / ".complete").touch()))
    stage("prepare", (cohort_dir / "manifest.json").exists(),
          lambda: prepare_cohort(raw, cohort_dir, cfg.prepare, overwrite=True, progress=progress))
    cohort = Cohort(cohort_dir)
    stage("pretrain-labs", (labs_dir / "labs" / "model.safetensors").exists(),
          lambda: ensure_labs_run(cohort, labs_dir, cfg, progress))
    stage("embed-notes", (notes_dir / "notes" / "note_embeddings.parquet").exists(),
          lambda: ensure_notes_run(cohort, notes_dir, cfg, progress))
    train = cfg.train.model_copy(update={"labs_run": str(labs_dir / "labs"), "notes_run": str(notes_dir / "notes")})
    cfg = cfg.model_copy(update={"train": train})
    run = work / f"explain-{config_hash(cfg)[:12]}"
    stage("train", (run / "run" / "thresholds.json").exists(), lambda: train_run(cohort_dir, run / "run", cfg,
                                                                                progress=progress))
    stage("export", (run / "model" / "bundle.json").exists(),
          lambda: export_bundle(run / "run", run / "model", overwrite=True))
    return raw, run / "model", {"cohort": str(cohort_dir), "timings": timings,
                                "hours_before": cfg.prepare.lab_hours_before_admission, "source": cfg.synth.format}


def _record_measures(explainer, i: int, positive: np.ndarray, lab_method: str, draws: int,
                     rng: np.random.Generator) -> list[dict]:
    """Deletion and insertion of one record's top-3 vs random-3 items (and pooled deletion of the top 3 vs
    the items ranked 4 to 6), for each of its positive labels."""
    s = explainer.scores(i, lab_method, positive)
    tests, lines = s.tests, s.line_index
    m = len(tests)

    def split(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pooled item numbers -> (tests, lines)
        return tests[items[items < m]], lines[items[items >= m] - m]

    sizes = {"all": m + len(lines), "labs": m, "lines": len(lines)}
    random = {kind: [rng.choice(n, 3, replace=False) for _ in range(draws)] if n > 3 else []
              for kind, n in sizes.items()}
    drop_tests, drop_lines, where = [NONE], [NONE], {}

    def add(name, dt, dl) -> None:
        where.setdefault(name, []).append(len(drop_tests))
        drop_tests.append(dt)
        drop_lines.append(dl)

    for q in random["all"]:
        add("del_all", *split(q))
    for q in random["labs"]:
        add("del_labs", tests[q], NONE)
        add("ins_labs", np.delete(tests, q), NONE)
    for q in random["lines"]:
        add("del_lines", NONE, lines[q])
        add("ins_lines", NONE, np.delete(lines, q))
    add("empty_labs", tests, NONE)
    add("empty_lines", NONE, lines)
    for j in positive:
        ranked = np.argsort(-np.concatenate([s.labs[j], s.lines[j]]), kind="stable")
        top_all = ranked[:3]
        if sizes["all"] >= 6:
            add(f"next_del_all_{j}", *split(ranked[3:6]))
        top_labs = np.argsort(-s.labs[j], kind="stable")[:3]
        top_lines = np.argsort(-s.lines[j], kind="stable")[:3]
        add(f"top_del_all_{j}", *split(top_all))
        add(f"top_del_labs_{j}", tests[top_labs], NONE)
        add(f"top_ins_labs_{j}", np.delete(tests, top_labs), NONE)
        add(f"top_del_lines_{j}", NONE, lines[top_lines])
        add(f"top_ins_lines_{j}", NONE, np.delete(lines, top_lines))
    p = explainer.probabilities(i, drop_tests, drop_lines)
    out = []
    for j in positive:
        full = p[0, j]
        row = {"label": int(j), "p": float(full)}
        for kind in ("all", "labs", "lines"):
            if random[kind]:
                row[f"deletion_{kind}"] = (float(full - p[where[f"top_del_{kind}_{j}"][0], j]),
                                           float(np.mean(full - p[where[f"del_{kind}"], j])))
        if f"next_del_all_{j}" in where:
            row["deletion_all_vs_next3"] = (row["deletion_all"][0], float(full - p[where[f"next_del_all_{j}"][0], j]))
        row["decision_flipped"] = bool(p[where[f"top_del_all_{j}"][0], j] < explainer.predictor.thresholds[j])
        for kind in ("labs", "lines"):
            if random[kind]:
                empty = p[where[f"empty_{kind}"][0], j]
                row[f"insertion_{kind}"] = (float(p[where[f"top_ins_{kind}_{j}"][0], j] - empty),
                                            float(np.mean(p[where[f"ins_{kind}"], j] - empty)))
        out.append(row)
    return out


def faithfulness(predictor, records: list, lab_method: str, draws: int, seed: int = 0) -> dict:
    """Deletion / insertion figures over every positive prediction of ``records``."""
    from medfuse.serving.explain import Explainer

    t0 = time.perf_counter()
    prepared = predictor.prepare(records)
    prob = predictor.probabilities(prepared)
    explainer = Explainer(predictor, prepared)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(len(records)):
        positive = np.flatnonzero(prob[i] >= predictor.thresholds)
        if len(positive):
            rows += _record_measures(explainer, i, positive, lab_method, draws, rng)
    out = {"lab_method": lab_method, "records": len(records), "positive_predictions": len(rows),
           "seconds": round(time.perf_counter() - t0, 1)}
    for measure in ("deletion_all", "deletion_labs", "deletion_lines", "insertion_labs", "insertion_lines",
                    "deletion_all_vs_next3"):
        other = "next3" if measure.endswith("next3") else "random3"
        pairs = np.array([r[measure] for r in rows if measure in r]).reshape(-1, 2)
        out[measure] = {
            "n": len(pairs), f"left_out_{5 if other == 'next3' else 3}_or_fewer_items": len(rows) - len(pairs),
            f"share_top3_beats_{other}": round(float((pairs[:, 0] > pairs[:, 1]).mean()), 4) if len(pairs) else None,
            "mean_change_top3": round(float(pairs[:, 0].mean()), 4) if len(pairs) else None,
            f"mean_change_{other}": round(float(pairs[:, 1].mean()), 4) if len(pairs) else None,
        }
    out["share_decision_flipped_by_top3_deletion"] = round(float(np.mean([r["decision_flipped"] for r in rows])), 4)
    return out


def explain_split(raw: Path, bundle: Path, info: dict, split: str, methods: list[str], draws: int) -> dict:
    import pyarrow.parquet as pq

    from medfuse.serving.predict import Predictor
    from medfuse.serving.raw_records import records_from_raw
    from medfuse.serving.records import PatientRecord

    splits = pq.read_table(Path(info["cohort"]) / "splits.parquet").to_pydict()
    ids = [h for h, s in zip(splits["hadm_id"], splits["split"], strict=True) if s == split]
    records = [PatientRecord.model_validate(r) for r in records_from_raw(raw, info["source"], ids, info["hours_before"])]
    predictor = Predictor.load(bundle)
    cost = {"records": len(records)}
    for key, explain in (("predict_seconds", False), ("predict_explain_seconds", True)):
        t0 = time.perf_counter()
        predictor.predict(records, explain=explain)
        cost[key] = round(time.perf_counter() - t0, 1)
    return {"split": split, "bundle": str(bundle), "cohort": info["cohort"], "stage_seconds": info["timings"],
            "cost": cost, **{m: faithfulness(predictor, records, m, draws) for m in methods}}


def summary_line(name: str, f: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {f[k]['share_top3_beats_random3']} (n {f[k]['n']})"
             for k in ("deletion_all", "deletion_labs", "deletion_lines", "insertion_labs", "insertion_lines")]
    return (f"{name} [{f['lab_method']}]: top-3 beats random-3 on " + ", ".join(parts)
            + f"; pooled deletion, top-3 beats ranks 4-6 {f['deletion_all_vs_next3']['share_top3_beats_next3']}, "
            f"decision flipped {f['share_decision_flipped_by_top3_deletion']}")


def main() -> None:
    offline()
    from medfuse.progress import stage_progress

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admissions", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=10, help="random draws of 3 items per record")
    ap.add_argument("--work-dir", type=Path, default=ROOT.parent / "runs" / "bench")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with stage_progress() as progress:
        dev = build("dev", 0, args.admissions, args.work_dir, progress)
        report = build("demo", 1, args.admissions, args.work_dir, progress)
    choice = explain_split(*dev, "val", ["occlusion", "integrated_gradients"], args.draws)
    scores = {m: (choice[m]["deletion_labs"]["share_top3_beats_random3"] or 0.0,
                  choice[m]["deletion_labs"]["mean_change_top3"] or 0.0) for m in ("occlusion", "integrated_gradients")}
    chosen = "integrated_gradients" if scores["integrated_gradients"] > scores["occlusion"] else "occlusion"
    choice["chosen"] = chosen
    choice["rule"] = ("on the development seed's validation split, the lab method with the higher share of top-3 lab "
                      "deletions beating random-3, then the larger mean top-3 deletion drop; occlusion on a tie")
    reported = explain_split(*report, "test", [chosen], args.draws)
    f = reported[chosen]
    result = {
        "description": __doc__.split("\n\n")[0],
        "settings": {"admissions": args.admissions, "draws": args.draws, "items": 3, "target": TARGET,
                     "config": "src/medfuse/resources/demo.toml"},
        "choice_dev_seed0_val": choice,
        "report_seed1_test": reported,
        "meets_target": bool(f["deletion_all"]["share_top3_beats_random3"] >= TARGET),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "command": shlex.join(["python", "benchmarks/explain.py", *sys.argv[1:]]),
    }
    path = save("explain", result)
    for m in ("occlusion", "integrated_gradients"):
        print(summary_line(f"seed 0 val ({choice[m]['seconds']} s)", choice[m]))
    print(f"chosen: {chosen}")
    print(summary_line(f"seed 1 test ({f['seconds']} s)", f))
    print(json.dumps({"meets_target": result["meets_target"], "wall_seconds": result["wall_seconds"]}), "->", path)


if __name__ == "__main__":
    main()
