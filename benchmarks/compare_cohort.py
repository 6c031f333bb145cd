"""The comparison table of one synthetic cohort, generated end to end: synth -> prepare -> pretrain-labs ->
embed-notes -> compare, with the `medfuse demo` settings (src/medfuse/resources/demo.toml).

Writes benchmarks/results/compare_<name>.json (the comparison plus the run's settings, timings and
machine) and compare_<name>.md, which is rendered from that JSON alone: a title, a settings paragraph,
the table of medfuse.evaluation.comparison.comparison_markdown and a reading computed from the numbers.
Reported cohorts use synthetic seeds no design choice looked at (docs/protocol.md):

    python benchmarks/compare_cohort.py --admissions 2000 --seed 1 --name demo
    python benchmarks/compare_cohort.py --admissions 10000 --seed 2 --name 10k
    python benchmarks/compare_cohort.py --name 10k --render-only      # re-render the .md from the .json

Above the demo size (2,000 admissions) the rows default to the baselines and MEDFuse (no ablations or
lambda sweep) and the tuning grid to default.toml's (dropout x modality dropout), as compare_10k has
always been run. Work folders under runs/bench/<name>/ are keyed by the settings they depend on, so a
rerun recomputes only what is missing or changed. The keys cover settings, not code: after changing
medfuse itself, delete runs/bench/<name>/ (or one stage's folder) before a run whose figures you report.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import sys
import time
import tomllib
from pathlib import Path

from _common import RESULTS, ROOT, duration, gib, machine, offline

DEMO_SIZE = 2000
STAGES_FILE = "stages.json"


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build_config(args: argparse.Namespace):
    """The demo configuration with this cohort's size and seed, the rows, the seeds and the grid."""
    from medfuse.config import default_config_text, load_config
    from medfuse.runs.compare import INHERITS_MEDFUSE, variants

    demo = Path(__file__).resolve().parents[1] / "src" / "medfuse" / "resources" / "demo.toml"
    cfg = load_config(args.config or demo, {"synth": {"admissions": args.admissions, "seed": args.seed}})
    large = args.admissions > DEMO_SIZE
    if args.models == "core" or (args.models == "auto" and large):
        models = [v.name for v in variants(cfg.compare.mi_weights) if v.group not in INHERITS_MEDFUSE]
    elif args.models in ("all", "auto"):
        models = list(cfg.compare.models)
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    grid = cfg.compare.grid
    if args.grid == "default" or (args.grid == "auto" and large):
        grid = tomllib.loads(default_config_text())["compare"]["grid"]
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds  # demo.toml's two seeds are the demo's budget
             else tomllib.loads(default_config_text())["compare"]["seeds"])
    compare = cfg.compare.model_validate({**cfg.compare.model_dump(), "models": models, "grid": grid, "seeds": seeds})
    prepare = cfg.prepare.model_copy(update={"source": cfg.synth.format})
    return cfg.model_copy(update={"compare": compare, "prepare": prepare})


def _key(*sections) -> str:
    from medfuse.config import config_hash

    return "-".join(config_hash(s)[:8] for s in sections)


def run(args: argparse.Namespace) -> dict:
    """Run (or reuse) every stage for one cohort; the comparison table plus a ``benchmark`` block."""
    from medfuse.config import config_hash
    from medfuse.data.cohort import Cohort
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.progress import stage_progress
    from medfuse.runs.compare import compare
    from medfuse.runs.stages import ensure_labs_run, ensure_notes_run

    cfg = build_config(args)
    work = args.work_dir / args.name
    work.mkdir(parents=True, exist_ok=True)
    stages_path = work / STAGES_FILE
    stages = json.loads(stages_path.read_text()) if stages_path.exists() else {}
    raw = work / f"raw-{_key(cfg.synth)}"
    cohort_dir = work / f"cohort-{_key(cfg.synth, cfg.prepare)}"
    labs_dir = work / f"labs-{_key(cfg.synth, cfg.prepare, cfg.labs)}"
    notes_dir = work / f"notes-{_key(cfg.synth, cfg.prepare, cfg.notes)}"
    reused = []

    def stage(name: str, folder: Path, done: bool, fn) -> None:
        """Run ``fn`` unless ``done``; record its wall seconds and the process's peak RSS so far.

        A finished folder without a timing record is recomputed, so every reported time was measured."""
        if done and folder.name in stages:
            reused.append(name)
            return
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        fn()
        stages[folder.name] = {"stage": name, "seconds": round(time.perf_counter() - t0, 1),
                               "peak_rss_mib": _peak_rss_mib()}
        stages_path.write_text(json.dumps(stages, indent=2))

    with stage_progress() as progress:
        stage("synth", raw, (raw / ".complete").exists(), lambda: (
            generate(raw, cfg.synth.format, cfg.synth.admissions, seed=cfg.synth.seed,
                     note_fraction=cfg.synth.note_fraction, progress=progress), (raw / ".complete").touch()))
        manifest_path = cohort_dir / "manifest.json"
        stage("prepare", cohort_dir, manifest_path.exists(),
              lambda: prepare_cohort(raw, cohort_dir, cfg.prepare, overwrite=True, progress=progress))
        cohort = Cohort(cohort_dir)
        stage("pretrain-labs", labs_dir, (labs_dir / "labs" / "model.safetensors").exists(),
              lambda: ensure_labs_run(cohort, labs_dir, cfg, progress))
        stage("embed-notes", notes_dir, (notes_dir / "notes" / "note_embeddings.parquet").exists(),
              lambda: ensure_notes_run(cohort, notes_dir, cfg, progress))
        train = cfg.train.model_copy(update={"labs_run": str(labs_dir / "labs"), "notes_run": str(notes_dir / "notes")})
        cfg = cfg.model_copy(update={"train": train})
        out = work / f"compare-{config_hash(cfg)[:12]}"
        stage("compare", out, (out / "compare.json").exists(), lambda: compare(cohort_dir, out, cfg, progress=progress))
    table = json.loads((out / "compare.json").read_text())
    manifest = json.loads(manifest_path.read_text())
    used = [stages[f.name] for f in (raw, cohort_dir, labs_dir, notes_dir, out)]
    table["benchmark"] = {
        "name": args.name, "format": cfg.synth.format, "admissions": cfg.synth.admissions, "synth_seed": cfg.synth.seed,
        "split_sizes": manifest["split_sizes"], "prepare_seed": cfg.prepare.seed,
        "config": cfg.model_dump(mode="json", include={"labs", "notes", "train", "compare"}),
        "stage_seconds": {s["stage"]: s["seconds"] for s in used},
        "wall_seconds": round(sum(s["seconds"] for s in used), 1),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in used),
        "reused_this_run": reused, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "command": shlex.join(["python", "benchmarks/compare_cohort.py", *sys.argv[1:]]),
    }
    return table


# ---------------------------------------------------------------- rendering (JSON -> Markdown)

def _grid_text(grid: dict) -> str:
    if not grid:
        return "no tuning (empty `compare.grid`)"
    return " × ".join(f"{k} " + " / ".join(f"{v:g}" for v in values) for k, values in grid.items())


def settings_paragraph(table: dict) -> str:
    """What was run, from the JSON: cohort and split sizes, the settings, seeds, grid, time and memory."""
    seeds = table["seeds"]
    rule = table.get("threshold_rule")
    rule = f" (rule `{rule['rule']}`)" if rule else ""
    cells = (f"Cells: test mean ± sd over seeds {', '.join(map(str, seeds))} [seed {seeds[0]}'s patient-level "
             f"bootstrap 95% interval, {table['n_resamples']} resamples]. Thresholds tuned on validation{rule}; every "
             f"neural row's setting chosen on validation macro-AUPRC with seed {seeds[0]} over the grid "
             f"{_grid_text(table['grid'])} (last column; MEDFuse's ablations and lambda sweep reuse MEDFuse's choice).")
    b = table.get("benchmark")
    if not b:
        return f"Cohort `{table['cohort']}`, {table['split']} split. {cells}"
    sizes, c = b["split_sizes"], b["config"]
    labs, notes, train = c["labs"], c["notes"], c["train"]
    unit = (f"`notes.unit = \"lines\"` ({notes['line_clusters']} line clusters per field)"
            if notes["unit"] == "lines" else '`notes.unit = "text"`')
    rows = ", ".join(c["compare"]["models"]) if c["compare"]["models"] else "all rows"
    return (
        f"`medfuse synth --format {b['format']} --admissions {b['admissions']} --seed {b['synth_seed']}`, "
        f"`medfuse prepare` (split seed {b['prepare_seed']}): {sizes['all']['admissions']:,} admissions of "
        f"{sizes['all']['patients']:,} patients, {sizes['train']['admissions']:,} train / "
        f"{sizes['val']['admissions']:,} validation / {sizes['test']['admissions']:,} test, split by patient. "
        f"`medfuse demo` settings (src/medfuse/resources/demo.toml): MLTM pre-trained at most {labs['epochs']} epochs "
        f"(mask ratio {labs['mask_ratio']:g}, aggregates {', '.join(labs['aggregates'])}), `train.labs_encoder = "
        f"\"{train['labs_encoder']}\"`; note vectors from `notes.model = \"{notes['model']}\"` with {unit}; lab value "
        f"channels {'on' if train['lab_values'] else 'off'}; at most {train['epochs']} epochs with early stopping on "
        f"validation macro-AUPRC (patience {train['patience']}). Rows: {rows}. {cells} "
        f"Wall time {duration(b['wall_seconds'])} (" + ", ".join(f"{k} {duration(v)}" for k, v in
                                                             b["stage_seconds"].items())
        + f"), peak RSS {gib(b['peak_rss_mib'])}, {b['machine']['cpus']} CPU cores, {b['date']}; "
        f"generated by `{b['command']}`."
    )


def reading(table: dict) -> str:
    """A few sentences computed from the table: MEDFuse, the best baseline, the paired Δ, the lambda range."""
    from medfuse.evaluation.comparison import best_baseline, delta_text

    medfuse = next((r for r in table["models"] if r["name"] == "MEDFuse"), None)
    best = best_baseline(table)
    if not medfuse or not best:
        return ""

    def means(r: dict) -> str:
        return f"{r['summary']['macro_f1']['mean']:.3f} / {r['summary']['macro_auprc']['mean']:.3f}"

    out = [(f"**Reading** (computed from the JSON). Test macro-F1 / macro-AUPRC, mean of {len(table['seeds'])} "
            f"seed(s): MEDFuse {means(medfuse)}; best baseline by macro-AUPRC: {best['name']} {means(best)}.")]
    vs = best.get("vs_medfuse") or {}
    deltas = [f"Δ {label} {delta_text(vs.get(m))}" for m, label in (("macro_auprc", "macro-AUPRC"),
                                                                      ("macro_f1", "macro-F1"))
              if delta_text(vs.get(m)) != "–"]
    if deltas:
        out.append(f"MEDFuse minus {best['name']}, paired patient-level bootstrap of seed {table['seeds'][0]}'s "
                   f"test predictions: {'; '.join(deltas)} (one-sided p).")
    sweep = [r for r in table["models"] if r["name"] in ("MEDFuse", "MEDFuse w/o MI loss")
             or r["name"].startswith("MEDFuse lambda=")]
    if len(sweep) > 2:
        auprc = [r["summary"]["macro_auprc"]["mean"] for r in sweep]
        out.append(f"Lambda sweep ({len(sweep)} values of lambda, MEDFuse's settings): macro-AUPRC "
                   f"{min(auprc):.3f}-{max(auprc):.3f}.")
    return " ".join(out)


def render(table: dict, title: str) -> str:
    """The whole Markdown page of a comparison JSON."""
    from medfuse.evaluation.comparison import comparison_markdown

    parts = [f"# {title}", settings_paragraph(table), comparison_markdown(table).rstrip("\n")]
    text = reading(table)
    if text:
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def title_of(table: dict, name: str) -> str:
    b = table.get("benchmark")
    if not b:
        return f"Comparison: {name}"
    return f"Comparison on {b['admissions']:,} synthetic admissions (seed {b['synth_seed']}, `{name}`)"


def main() -> None:
    offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results are compare_<name>.json / .md")
    ap.add_argument("--admissions", type=int, default=DEMO_SIZE)
    ap.add_argument("--seed", type=int, default=1, help="synthetic generator seed (0 is the development seed)")
    ap.add_argument("--models", default="auto",
                    help="auto | all | core (baselines and MEDFuse) | comma-separated row names")
    ap.add_argument("--grid", choices=("auto", "demo", "default"), default="auto",
                    help="tuning grid: demo.toml's, default.toml's, or auto (default above 2,000 admissions)")
    ap.add_argument("--seeds", default="", help="comma-separated training seeds (default: default.toml's)")
    ap.add_argument("--config", type=Path, help="a TOML file used instead of demo.toml (merged over the defaults)")
    ap.add_argument("--work-dir", type=Path, default=ROOT.parent / "runs" / "bench")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true", help="re-render compare_<name>.md from compare_<name>.json")
    ap.add_argument("--json", type=Path, help="with --render-only: the JSON to read (default out-dir/compare_<name>.json)")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / f"compare_{args.name}.json"
    if args.render_only:
        table = json.loads((args.json or json_path).read_text())
    else:
        table = run(args)
        json_path.write_text(json.dumps(table, indent=2))
        print(json_path)
    md_path = args.out_dir / f"compare_{args.name}.md"
    md_path.write_text(render(table, title_of(table, args.name)))
    print(md_path)


if __name__ == "__main__":
    main()
