"""The figures of README.md (the Performance table, the Scale table, where `prepare`'s time goes) and of the
docs (docs/scaling.md, docs/configuration.md, docs/training.md, docs/notes.md), rendered from the JSON files in
benchmarks/results/ (and, for the `[notes]` defaults table, from medfuse.config.NotesConfig), so that no
figure there is typed by hand and none can go stale unnoticed.

Each rendered fragment sits between marker comments in its file,

    <!-- rendered by benchmarks/render_readme.py: performance -->
    ...
    <!-- end -->

on lines of their own for a block (a table, a paragraph) or inside a line or a table cell for an inline figure.
Only the text between the markers is rewritten; everything else in the files is left alone.

    python benchmarks/render_readme.py            # rewrite the fragments from benchmarks/results/*.json
    python benchmarks/render_readme.py --check    # exit 1 (and show the differences) when a file is stale

tests/test_figures.py runs the check. After a benchmark writes new results, run this script and commit both.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # run as a script, or imported by the tests
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, duration, gib, gib_bytes, load_result, marked_span, replace_marked

SCRIPT = "benchmarks/render_readme.py"
REPO = Path(__file__).resolve().parents[1]

# The target for LoRA fine-tuning on a CPU (notes + MLP test macro-AUPRC, fine-tuned minus frozen);
# benchmarks/results/finetune.json does not record it.
FINETUNE_TARGET_DELTA = 0.03


class Results:
    """The results JSON files of one folder, each read once; ``r["prepare"]`` is results/prepare.json."""

    def __init__(self, folder: Path = RESULTS):
        self.folder = Path(folder)
        self._cache: dict[str, dict] = {}

    def __getitem__(self, name: str) -> dict:
        if name not in self._cache:
            self._cache[name] = load_result(name, self.folder)
        return self._cache[name]

    def get(self, name: str) -> dict | None:
        return self[name] if (self.folder / f"{name}.json").exists() else None


# ---------------------------------------------------------------- small formatters

def _millions(n: float) -> str:
    return f"{n / 1e6:.1f} M"


def _size(n_bytes: float) -> str:
    """Bytes as GiB, or MB below a tenth of a GiB."""
    return gib_bytes(n_bytes) if n_bytes >= 0.1 * 2**30 else f"{n_bytes / 1e6:.1f} MB"


def _day(date: str) -> str:
    return date[:10]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _row(*cells: str) -> str:
    return "|---" * len(cells) + "|" if set(cells) == {"---"} else "| " + " | ".join(cells) + " |"


def _wrap(paragraph: str, width: int = 110) -> str:
    """A paragraph wrapped as the hand-written ones are (Markdown joins the lines again)."""
    return "\n".join(textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False))


# ---------------------------------------------------------------- README: Performance

def _prepare_cells(p: dict) -> tuple[str, str]:
    prep, scan = p["prepare"], p["bare_scan"]
    t = p["targets"]
    runs = scan["runs_seconds"]
    runs_text = (f"mean of {' and '.join(f'{s:.2f}' for s in runs)} s, before and after prepare" if len(runs) == 2
                 else f"mean of {len(runs)} runs")
    prepare = (f"{prep['seconds']:.1f} s, {prep['cpu_seconds']:.1f} CPU-s, peak RSS {gib(prep['peak_rss_mib'])} "
               f"(target under {t['peak_rss_mib_max'] / 1024:g} GiB), "
               f"{prep['lab_rows_per_second'] / 1e6:.2f} M lab rows/s")
    ratio = p["ratio_prepare_to_bare_scan"]
    scan_text = (f"{scan['seconds']:.1f} s, {scan['cpu_seconds']:.1f} CPU-s ({runs_text}); prepare / bare scan = "
                 f"**{ratio:.2f}** (target {t['ratio_max']:g}{'' if ratio <= t['ratio_max'] else ', missed'})")
    return prepare, scan_text


def _scale_summary(s: dict) -> str:
    st, summ = s["stages"], s["summary"]
    target = s["targets"]["peak_rss_mib_max"]
    peak = summ["max_peak_rss_mib"]
    prep, emb, train = st["prepare"], st["embed-notes"], st["train"]
    return (f"every stage's peak RSS at most **{gib(peak)}** (target {target / 1024:g} GiB"
            f"{'' if peak <= target else ', missed'}): `prepare` {prep['seconds']:.0f} s, {gib(prep['peak_rss_mib'])}, "
            f"{summ['prepare_to_bare_scan']:.1f}x the bare scan ({summ['bare_scan_seconds_mean']:.1f} s); "
            f"`embed-notes` {emb['seconds']:.0f} s, {gib(emb['peak_rss_mib'])} ({_millions(emb['rows']['lines'])} lines, "
            f"{emb['rows']['unique_lines']:,} distinct); `train` {train['seconds']:.0f} s for "
            f"{train['rows']['epochs']} epochs at {gib(train['peak_rss_mib'])}; slowest stage `{summ['slowest_stage']}`; "
            f"table below and in [docs/scaling.md](docs/scaling.md)")


def _notes_cells(n: dict) -> tuple[str, str, str]:
    cpu = n["cpu"]
    ours, st, f32 = cpu["ours"], cpu["sentence_transformers"], cpu["ours_float32"]
    what = f"`embed-notes`, {n['texts']:,} texts, default model, CPU"
    figure = (f"{ours['notes_per_s_best']:.1f} notes/s vs sentence-transformers {st['notes_per_s_best']:.1f} "
              f"({ours['ratio_best']:.2f}x; {ours['dtype']} on this CPU; float32 {f32['ratio_best']:.2f}x because long "
              f"notes are embedded whole, {ours['tokens_embedded'] / st['tokens_embedded']:.1f}x the tokens; best of "
              f"{n['repeats']} runs)")
    c = n["cached"]
    cached = (f"{c['cached_rerun_cli_seconds']:.1f} s "
              f"({'nothing' if c['cached_rerun_cli_computed'] == 0 else c['cached_rerun_cli_computed']} computed)")
    return what, figure, cached


def _mltm_cells(m: dict) -> tuple[str, str]:
    meta, r = m["meta"], m["results"]["synthetic-2000"]
    nrmse = r["nrmse"]
    (vkey, vrun), = r["mltm_variants"].items()
    vmask = vkey.removeprefix("mltm_mask")
    what = (f"MLTM imputation NRMSE, synthetic development cohort, {meta['fraction']:.0%} of the validation values "
            f"hidden, mean of {meta['repeats']} draws (lower is better)")
    figure = (f"shipped mask {meta['config']['mask_ratio']:g}: {nrmse['mltm']['mean']:.3f}, mask {vmask}: "
              f"{nrmse[vkey]['mean']:.3f} ({meta['config']['epochs']}-epoch budget, early-stopped at "
              f"{r['mltm']['epochs_run']} and {vrun['epochs_run']}) vs mean {nrmse['mean']['mean']:.3f}, KNN "
              f"{nrmse['knn']['mean']:.3f}, IterativeImputer {nrmse['iterative']['mean']:.3f} (same hidden values)")
    return what, figure


def _bootstrap_cells(b: dict) -> tuple[str, str]:
    what = (f"patient-level bootstrap, {b['n_resamples']:,} resamples of {b['admissions']:,} admissions x "
            f"{b['labels']} labels")
    figure = (f"{b['best_seconds']:.1f} s, best of {len(b['runs_seconds'])} ({b['ratio_to_budget']:.2f} of a "
              f"{b['budget_seconds']:g} s budget)")
    return what, figure


def demo_time(d: dict) -> str:
    """The demo's wall time and the conditions it was measured in (docs/training.md)."""
    text = f"{duration(d['wall_seconds'])} on {d['machine']['cpus']} {d['machine']['cpu']} vCPUs on {d['date']} ("
    text += "a quiet machine" if d["quiet_machine"] else f"{d['load']}: not a quiet-machine figure"
    if d.get("quiet_machine_seconds"):
        text += f"; {duration(d['quiet_machine_seconds'])} on a quiet machine"
    return text


def _demo_cells(d: dict) -> tuple[str, str]:
    what = (f"`make demo` ({d['admissions']:,} admissions, whole pipeline incl. a {d['comparison_rows']}-row comparison "
            f"× {len(d['comparison_seeds'])} seeds with validation tuning in {d['compare_workers']} worker processes, "
            f"export, report with explained patients, {d['new_patients']} new patients predicted and explained)")
    quiet = d.get("quiet_machine_seconds")
    if d["quiet_machine"]:
        conditions = "a quiet machine"
    else:
        conditions = f"**not a quiet-machine figure**: {d['load']}"
    target = d["target_seconds"]
    verdict = "met" if d["wall_seconds"] <= target else "not met here"
    figure = (f"**{duration(d['wall_seconds'])}** with set-up already done ({d['machine']['cpus']} {d['machine']['cpu']} "
              f"vCPUs, {d['date']}; {conditions}); "
              + (f"{duration(quiet)} on a quiet machine; " if quiet else
                 "" if d["quiet_machine"] else "no quiet-machine figure recorded; ")
              + f"target {target / 60:g} min, {verdict}; {d['cpu_percent']}% CPU ({d['cpu_seconds']:,.0f} CPU-s), peak "
              f"RSS {gib(d['peak_rss_mib'])}; plain one-line-per-stage progress when not on a terminal")
    return what, figure


def _predict_cells(p: dict, nc: dict) -> tuple[str, str]:
    small, large = p["runs"][0], p["runs"][-1]
    nc_small, nc_large = nc["runs"][0], nc["runs"][-1]
    what = (f"`medfuse predict`, new patients (demo model, records of another seed, "
            f"{'empty embedding cache' if p['cache'].startswith('empty') else p['cache']})")
    figure = (f"{small['patients']:,} patients: **{small['patients_per_second']:.1f} patients/s**, peak RSS "
              f"{gib(small['peak_rss_mib'])}; {large['patients']:,}: **{large['patients_per_second']:.1f} patients/s**, "
              f"peak {gib(large['peak_rss_mib'])} (target {p['target_patients_per_second']}/s); records stream in "
              f"chunks of {p['batch_size']}; the peak grows {p['peak_rss_ratio_largest_to_smallest']:.2f}x for "
              f"{large['patients'] / small['patients']:g}x the patients, {nc['peak_rss_ratio_largest_to_smallest']:.2f}x "
              f"without the line cache (`--no-cache`: {nc_small['patients_per_second']:.1f} and "
              f"{nc_large['patients_per_second']:.1f} patients/s)")
    return what, figure


def _serve_cells(s: dict, nc: dict) -> tuple[str, str]:
    (clients, target), = [tuple(int(x) for x in m.groups()) for k in s["targets_met"]
                          if (m := re.fullmatch(r"p99_ms_at_(\d+)_clients_le_(\d+)", k))]
    by = {lv["clients"]: lv for lv in s["levels"]}
    nc_by = {lv["clients"]: lv for lv in nc["levels"]}
    lo, hi = min(by), max(by)
    errors = sum(sum(lv["errors"].values()) for lv in s["levels"])
    rec = s["records"]
    what = (f"`medfuse serve`, one record per request ({rec['n']} records of seed {rec['seed']}: median "
            f"{rec['note_words_median']} note words, {rec['labs_median']} labs)")
    figure = (f"p99 **{by[clients]['p99_ms']:.0f} ms** at {clients} clients (target {target}), {hi} clients "
              f"{s['throughput_32_over_1']:g}x the throughput of {lo} ({by[hi]['requests_per_s']:.0f} vs "
              f"{by[lo]['requests_per_s']:.1f} requests/s), {errors} errors; without the in-memory line cache p99 "
              f"{nc_by[clients]['p99_ms']:.0f} ms at {clients} clients ([docs/serving.md](docs/serving.md))")
    return what, figure


def _explain_cells(e: dict) -> tuple[str, str]:
    items, r = e["settings"]["items"], e["report_seed1_test"]
    f = r[e["choice_dev_seed0_val"]["chosen"]]["deletion_all"]
    cost = (r["cost"]["predict_explain_seconds"] - r["cost"]["predict_seconds"]) / r["cost"]["records"]
    what = (f"explanations: deleting the top-{items} attributed items (labs and note lines) vs {items} random items "
            f"of the same record, test positives of the demo's cohort")
    figure = (f"lowers p more on **{f['share_top3_beats_random3']:.0%}** of {f['n']:,} positive predictions (target "
              f"{e['settings']['target']:.0%}{'' if e['meets_target'] else ', missed'}; mean drop "
              f"{f['mean_change_top3']:.2f} vs {f['mean_change_random3']:.2f}); explaining costs about {cost:.2f} s "
              f"per record")
    return what, figure


def _finetune_cells(ft: dict) -> tuple[str, str, str]:
    confirm = max((v for k, v in ft.items() if k.startswith("confirm/")), key=lambda v: v["date"])
    dev = ft[f"dev/{confirm['setting']}"]
    o = confirm["overrides"]
    delta = confirm["delta_finetuned_minus_frozen_mlp"]
    what = (f"LoRA fine-tuning of the default note model on {confirm['machine']['cpus']} CPU cores ({o['unit']}, "
            f"{o['epochs']} epochs, {duration(confirm['finetune']['seconds'])}; `benchmarks/results/finetune.json`)")
    figure = (f"notes + MLP test macro-AUPRC on the unseen seed: fine-tuned **{confirm['finetuned_mlp']['macro_auprc_mean']:.3f}**"
              f" vs frozen {confirm['frozen_mlp']['macro_auprc_mean']:.3f} ({delta:+.3f}; target +{FINETUNE_TARGET_DELTA:g}, "
              f"{'met' if delta >= FINETUNE_TARGET_DELTA else '**missed**'}; "
              f"{dev['delta_finetuned_minus_frozen_mlp']:+.3f} on the development seed's validation), TF-IDF "
              f"{confirm['tfidf_logreg']['macro_auprc']:.3f}; the fine-tuned model's own head "
              f"{confirm['finetuned_head']['macro_auprc']:.3f} ([docs/notes.md](docs/notes.md))")
    return what, figure, _day(confirm["date"])


def _gpu_cells(gpu: dict | None, tiny: dict) -> tuple[str, str, str]:
    what = "LoRA fine-tuning and embedding with an 8B Llama-shape note model on one GPU"
    if gpu is None:
        lora, emb = tiny["lora_bf16_gradient_checkpointing"], tiny["embedding_bf16"]
        figure = (f"script ready, **not measured** (no `llm_gpu.json`: no GPU was lent); the same code path runs on "
                  f"{'CPU' if tiny['device'] == 'cpu' else tiny['device']} with `--tiny` (a "
                  f"{tiny['config']['num_hidden_layers']}-layer model: {lora['train_tokens_per_s']:,.0f} training tokens/s, "
                  f"{emb['tokens_per_s']:,.0f} embedding tokens/s; `llm_gpu_tiny.json`) "
                  f"([docs/scaling.md](docs/scaling.md))")
        return what, figure, tiny["date"]
    lora, emb, q = gpu["lora_bf16_gradient_checkpointing"], gpu["embedding_bf16"], gpu["load_4bit"]
    four_bit = (f"4-bit: {q['gpu_gib_after_load']:g} GiB after loading, {q['tokens_per_s']:,.0f} tokens/s"
                if q.get("available") else f"4-bit not measured ({q.get('reason', 'unavailable')})")
    figure = (f"{gpu['shape']}, {gpu['device']}: LoRA fine-tuning peak GPU memory {lora['peak_gpu_gib']:g} GiB, "
              f"{lora['train_tokens_per_s']:,.0f} training tokens/s; embedding peak {emb['peak_gpu_gib']:g} GiB, "
              f"{emb['tokens_per_s']:,.0f} tokens/s; {four_bit} ([docs/scaling.md](docs/scaling.md))")
    return what, figure, gpu["date"]


def performance(r: Results) -> str:
    """README: the intro line and the Performance table."""
    p, p4, s = r["prepare"], r["prepare_mimic4"], r["mimic4_scale"]
    prepare, scan = _prepare_cells(p)
    gpu = r.get("llm_gpu")
    notes_what, notes_fig, cached = _notes_cells(r["notes"])
    ft_what, ft_fig, ft_date = _finetune_cells(r["finetune"])
    gpu_what, gpu_fig, gpu_date = _gpu_cells(gpu, r["llm_gpu_tiny"])
    sd, sm = s["dataset"], s["stages"]["synth"]["rows"]
    rows = [
        ((f"`prepare` on a synthetic MIMIC-III-size dataset ({p['dataset']['admissions']:,} admissions, "
         f"{_millions(p['dataset']['lab_rows'])} lab rows; generating it: [docs/synthetic.md](docs/synthetic.md))"),
         prepare, p["date"], "`benchmarks/bench_prepare.py`"),
        ("DuckDB's bare `count(*)` scan of the same LABEVENTS", scan, p["date"], "same run"),
        ((f"the same in MIMIC-IV layout (`--format {p4['dataset']['format']}`, {_millions(p4['dataset']['lab_rows'])} "
         f"lab rows with reference ranges)"),
         (f"prepare {p4['prepare']['seconds']:.1f} s, {p4['prepare']['cpu_seconds']:.1f} CPU-s, peak RSS "
         f"{gib(p4['prepare']['peak_rss_mib'])}; bare scan {p4['bare_scan']['seconds']:.1f} s; ratio "
         f"{p4['ratio_prepare_to_bare_scan']:.2f}"), p4["date"], f"`bench_prepare.py --format {p4['dataset']['format']}`"),
        ((f"the whole pipeline at MIMIC-IV size (synthetic: {sd['admissions']:,} admissions, "
         f"{_millions(sm['lab_rows'])} lab rows, {sm['notes']:,} notes; {s['machine']['cpus']} {s['machine']['cpu']} "
         f"vCPUs)"), _scale_summary(s), s["date"], "`benchmarks/bench_mimic4_scale.py`"),
        (notes_what, notes_fig, _day(r["notes"]["date"]), "`benchmarks/bench_notes.py`"),
        ("cached `embed-notes` re-run", cached, _day(r["notes"]["date"]), "same run"),
        (*_mltm_cells(r["mltm"]), _day(r["mltm"]["meta"]["created"]), "`benchmarks/bench_mltm.py`"),
        (*_bootstrap_cells(r["bootstrap"]), r["bootstrap"]["date"], "`benchmarks/bench_bootstrap.py`"),
        (*_demo_cells(r["demo"]), r["demo"]["date"], "`make demo` (`benchmarks/results/demo.json`)"),
        (*_predict_cells(r["predict"], r["predict_no_cache"]), r["predict"]["date"], "`benchmarks/bench_predict.py`"),
        (*_serve_cells(r["serve"], r["serve_no_line_cache"]), r["serve"]["date"], "`benchmarks/bench_serve.py`"),
        (*_explain_cells(r["explain"]), r["explain"]["date"], "`benchmarks/explain.py`"),
        (ft_what, ft_fig, ft_date, "`benchmarks/bench_finetune.py`"),
        (gpu_what, gpu_fig, gpu_date, "`benchmarks/bench_llm_gpu.py`"),
    ]
    cpus = sorted({d["machine"]["cpus"] for d in (p, p4, s, r["demo"], r["predict"], r["serve"], r["explain"])})
    intro = (f"Latest figures ({' or '.join(map(str, cpus))} shared CPU cores, "
             f"{'no GPU' if gpu is None else 'the GPU row on ' + gpu['device']}), rendered from the JSON in "
             f"[benchmarks/results/](benchmarks/results/) by `python benchmarks/render_readme.py`:")
    table = ["| what | figure | measured | script |", "|---|---|---|---|"]
    table += [_row(*row) for row in rows]
    return _wrap(intro) + "\n\n" + "\n".join(table) + "\n"


# ---------------------------------------------------------------- README: Scale

def _bare_scan(s: dict) -> tuple[dict, dict]:
    return s["stages"]["scan_before"], s["stages"]["scan_after"]


def scale(r: Results) -> str:
    """README: the Scale paragraph and table (benchmarks/results/mimic4_scale.json)."""
    s = r["mimic4_scale"]
    st, m = s["stages"], s["machine"]
    syn, prep, labs, emb, train, ev = (st[k] for k in ("synth", "prepare", "pretrain-labs", "embed-notes", "train",
                                                       "evaluate"))
    gpu = "GPU columns not measured, no GPU was lent" if m.get("gpu") == "none" else f"GPU: {m.get('gpu')}"
    intro = (f"**Scale.** At MIMIC-IV size on {m['cpus']} shared cores ({m['cpu']}), every stage in its own process "
             f"([benchmarks/results/mimic4_scale.json](benchmarks/results/mimic4_scale.json), {s['date']}; the "
             f"walk-through and the GPU commands in [docs/scaling.md](docs/scaling.md); {gpu}):")
    epochs = train["rows"]["epoch_seconds"]
    rows = [
        ("stage", "wall", "CPU", "peak RSS", "disk"),
        ("---",) * 5,
        (f"`synth --format {s['dataset']['format']}`, {s['dataset']['admissions']:,} admissions",
         f"{syn['seconds']:.0f} s", f"{syn['cpu_seconds']:,.0f} s", gib(syn["peak_rss_mib"]),
         f"{_size(syn['disk_bytes'])} raw"),
        (f"`prepare` (DuckDB `memory_limit` {prep['rows']['memory_limit']}, `temp_directory` set)",
         (f"{prep['seconds']:.0f} s (bare scan {s['summary']['bare_scan_seconds_mean']:.1f} s: "
         f"{s['summary']['prepare_to_bare_scan']:.1f}x)"), f"{prep['cpu_seconds']:,.0f} s", gib(prep["peak_rss_mib"]),
         f"{_size(prep['disk_bytes'])} + {gib_bytes(prep['temp_directory_peak_bytes'])} spill at peak"),
        (f"`pretrain-labs`, {labs['rows']['epochs']} epoch{'s' if labs['rows']['epochs'] > 1 else ''} (bounded)",
         f"{labs['seconds']:.0f} s", f"{labs['cpu_seconds']:,.0f} s", gib(labs["peak_rss_mib"]),
         _size(labs["disk_bytes"])),
        (f"`embed-notes`, line unit, {emb['rows']['unique_lines']:,} distinct of {_millions(emb['rows']['lines'])} lines",
         f"{emb['seconds']:.0f} s", f"{emb['cpu_seconds']:,.0f} s", gib(emb["peak_rss_mib"]), _size(emb["disk_bytes"])),
        ((f"`train`, {train['rows']['epochs']} epochs (bounded): fusion inputs {train['rows']['inputs_seconds']:.0f} s, "
         f"epochs {' and '.join(f'{e:.0f} s' for e in epochs)}"),
         f"{train['seconds']:.0f} s", f"{train['cpu_seconds']:,.0f} s", gib(train["peak_rss_mib"]),
         f"{_size(train['disk_bytes'])} (`RUN/inputs/`)"),
        (f"`evaluate --split test` ({ev['rows']['test_admissions']:,} admissions)", f"{ev['seconds']:.0f} s",
         f"{ev['cpu_seconds']:,.0f} s", gib(ev["peak_rss_mib"]), "-"),
    ]
    slowest = s["summary"]["slowest_stage"]
    reading = (f"`train` {'dominates' if slowest == 'train' else f'is second to `{slowest}`'}: every fusion epoch is "
               f"~{_mean(epochs) / 60:.0f} minutes of CPU-bound MEDFuse steps over "
               f"{st['pretrain-labs']['rows']['train_admissions']:,} training admissions, on top of one pass of the "
               f"MLTM encoder over all {s['dataset']['admissions']:,} to build the inputs "
               f"({train['rows']['inputs_seconds']:.0f} s, {train['rows']['inputs_bytes'] / 1e9:.1f} GB in "
               f"`RUN/inputs/`).")
    return _wrap(intro) + "\n\n" + "\n".join(_row(*row) for row in rows) + "\n\n" + _wrap(reading) + "\n"


# ---------------------------------------------------------------- README: where prepare's time goes

def prepare_time(r: Results) -> str:
    """README: the breakdown of `prepare`'s time (benchmarks/results/prepare.json)."""
    p = r["prepare"]
    prep, t, load = p["prepare"], p["prepare"]["stage_seconds"], p["load_average"]
    head = t["admissions"] + t["diagnoses & labels"] + t["patient-level split"]
    rest = t["labs"] - t["labs: read"] - t["labs: aggregate"]
    return _wrap(
        f"Where `prepare`'s time goes ({p['dataset']['admissions']:,} admissions, "
        f"[benchmarks/results/prepare.json](benchmarks/results/prepare.json) of {p['date']}, 1-minute load average "
        f"{load['before'][0]:.2f} before and {load['after'][0]:.2f} after; {t['total']:.1f} s inside the call): "
        f"admissions, labels and the patient-level split {head:.1f} s; then the lab stage, {t['labs']:.1f} s: one pass "
        f"that reads, types, attaches (rows without `HADM_ID`, by time) and classifies every LABEVENTS row "
        f"{t['labs: read']:.1f} s, per-(admission, test) aggregates {t['labs: aggregate']:.1f} s, which also find the "
        f"pairs that may hold exact duplicates (distinct 32-bit hashes of time and value fewer than rows) so that only "
        f"those pairs are de-duplicated exactly, then units, test selection, train-only statistics and the wide lab "
        f"table (numpy) beside the lab text (DuckDB) {rest:.1f} s; the notes ({t['notes']:.1f} s: read "
        f"{t['notes: read']:.1f} s, sections in Python) run beside the lab stage; writing {t['write']:.1f} s. Every "
        f"step is CPU-bound on the {p['machine']['cpus']} cores ({prep['cpu_seconds']:.1f} CPU-s in "
        f"{prep['seconds']:.1f} s), so what made it faster was removing work: the old one-row-per-measurement hash "
        f"table for duplicates (one entry per lab row, {_millions(p['dataset']['lab_rows'])} here), a 16 MB CSV line "
        f"limit that slowed the LABEVENTS scan (now only for notes), a second copy of the note texts, and per-row "
        f"numpy calls in the split (same folds)."
    ) + "\n"


# ---------------------------------------------------------------- docs/scaling.md

def scaling_table(r: Results) -> str:
    """docs/scaling.md: time, memory and disk per stage at MIMIC-IV size."""
    from medfuse.config import EvaluateConfig

    s = r["mimic4_scale"]
    st = s["stages"]
    syn, prep, labs, emb, train, ev = (st[k] for k in ("synth", "prepare", "pretrain-labs", "embed-notes", "train",
                                                       "evaluate"))
    before, after = _bare_scan(s)
    no_gpu = s["machine"].get("gpu") == "none"
    peak = s["summary"]["max_peak_rss_mib"]
    slowest = s["summary"]["slowest_stage"]

    def rss(stage: dict) -> str:
        return f"**{gib(stage['peak_rss_mib'])}**" if stage["peak_rss_mib"] == peak else gib(stage["peak_rss_mib"])

    def wall(key: str) -> str:
        return f"**{st[key]['seconds']:.0f} s**" if key == slowest else f"{st[key]['seconds']:.0f} s"

    def gpu(stage: dict) -> str:
        if stage.get("peak_gpu_gib") is not None:
            return f"{stage['peak_gpu_gib']:g} GiB"
        return "not measured: no GPU was lent" if no_gpu else "not recorded"

    lr, er, tr = labs["rows"], emb["rows"], train["rows"]
    rows = [
        ("stage", "wall time", "CPU time", "peak RSS", "disk written", "GPU memory"),
        ("---",) * 6,
        ((f"`synth --format {s['dataset']['format']}` ({s['dataset']['admissions']:,} admissions, "
         f"{_millions(syn['rows']['lab_rows'])} lab rows, {syn['rows']['notes']:,} notes)"), wall("synth"),
         f"{syn['cpu_seconds']:,.0f} s", rss(syn), f"{_size(syn['disk_bytes'])} (raw)", "- (CPU only)"),
        ("DuckDB's bare `count(*)` scan of `labevents.csv.gz` (the reference)",
         (f"{s['summary']['bare_scan_seconds_mean']:.1f} s ({before['seconds']:.1f} and {after['seconds']:.1f}, "
         f"before and after `prepare`)"), f"{_mean([before['cpu_seconds'], after['cpu_seconds']]):,.0f} s",
         gib(max(before["peak_rss_mib"], after["peak_rss_mib"])), "-", "-"),
        (f"`prepare` (`memory_limit` {prep['rows']['memory_limit']}, `temp_directory` set)",
         f"{wall('prepare')} ({s['summary']['prepare_to_bare_scan']:.1f}x the bare scan)",
         f"{prep['cpu_seconds']:,.0f} s", rss(prep),
         (f"{_size(prep['disk_bytes'])} (cohort); {gib_bytes(prep['temp_directory_peak_bytes'])} of spill files at "
         f"peak, removed after"), "-"),
        ((f"`pretrain-labs`, bounded to {lr['epochs']} epoch{'s' if lr['epochs'] > 1 else ''} "
         f"({lr['train_admissions']:,} training admissions, {lr['admissions_per_second']:,} a second)"),
         wall("pretrain-labs"), f"{labs['cpu_seconds']:,.0f} s", rss(labs), _size(labs["disk_bytes"]), gpu(labs)),
        ((f"`embed-notes`, line unit ({_millions(er['lines'])} lines, {er['unique_lines']:,} distinct"
         f"{', a fresh content cache' if er['cached'] == 0 else ''})"), wall("embed-notes"),
         f"{emb['cpu_seconds']:,.0f} s", rss(emb), _size(emb["disk_bytes"]), gpu(emb)),
        ((f"`train`, bounded to {tr['epochs']} epochs (inputs {tr['inputs_seconds']:.0f} s, epochs "
         f"{' and '.join(f'{e:.0f} s' for e in tr['epoch_seconds'])})"), wall("train"),
         f"{train['cpu_seconds']:,.0f} s", rss(train),
         f"{_size(train['disk_bytes'])} (`RUN/inputs/` {tr['inputs_bytes'] / 1e9:.1f} GB)", gpu(train)),
        ((f"`evaluate --split test` ({ev['rows']['test_admissions']:,} admissions, "
         f"{EvaluateConfig().n_resamples:,} bootstrap resamples)"), wall("evaluate"), f"{ev['cpu_seconds']:,.0f} s",
         rss(ev), "-", gpu(ev)),
    ]
    return "\n".join(_row(*row) for row in rows) + "\n"


def _default_epochs(stage: dict) -> int:
    return int(re.search(r"of the default (\d+)", stage["bounded"]).group(1))


def scaling_bounds(r: Results) -> str:
    """docs/scaling.md: what the run bounded and what the fusion model still reached."""
    s = r["mimic4_scale"]
    st = s["stages"]
    labs, train, ev = st["pretrain-labs"], st["train"], st["evaluate"]
    largest = max((k for k in st if not k.startswith("scan")), key=lambda k: st[k]["peak_rss_mib"])
    target = s["targets"]["peak_rss_mib_max"]
    total = sum(v["seconds"] for v in st.values())
    ok = s["summary"]["max_peak_rss_mib"] <= target
    budget = (f" under DuckDB's {st['prepare']['rows']['memory_limit']} budget" if largest == "prepare" else "")
    return _wrap(
        f"{'Every stage stays under' if ok else 'Not every stage stays under'} the {target / 1024:g} GiB target; the "
        f"largest is `{largest}` ({gib(st[largest]['peak_rss_mib'])}{budget}). What was bounded to fit the "
        f"~{total / 60:.0f} minutes the run takes: `pretrain-labs` ran {labs['rows']['epochs']} epoch"
        f"{'s' if labs['rows']['epochs'] > 1 else ''} of its default budget of {_default_epochs(labs)} (with early "
        f"stopping) and `train` {train['rows']['epochs']} of its {_default_epochs(train)}; one MLTM epoch costs about "
        f"{labs['seconds'] / labs['rows']['epochs'] / 60:.1f} minutes and one fusion epoch about "
        f"{_mean(train['rows']['epoch_seconds']) / 60:.0f} on these {s['machine']['cpus']} cores, so a full run "
        f"multiplies those. The fusion model still reached validation macro-AUPRC "
        f"{max(train['rows']['val_macro_auprc']):.3f} after {train['rows']['epochs']} epochs (test "
        f"{ev['rows']['macro_auprc']:.3f}, macro-F1 {ev['rows']['macro_f1']:.3f})."
    ) + "\n"


def scaling_dominant(r: Results) -> str:
    """docs/scaling.md: which stage dominates, and why."""
    from medfuse.config import TrainConfig

    s, p4 = r["mimic4_scale"], r["prepare_mimic4"]
    st = s["stages"]
    syn, prep, labs, emb, train = (st[k] for k in ("synth", "prepare", "pretrain-labs", "embed-notes", "train"))
    tr, er = train["rows"], emb["rows"]
    batch = TrainConfig().batch_size
    steps = -(-labs["rows"]["train_admissions"] // batch)
    slowest = s["summary"]["slowest_stage"]
    return _wrap(
        f"**Which stage dominates, and why.** `train`{'' if slowest == 'train' else f' (second to `{slowest}`)'}: "
        f"{tr['inputs_seconds']:.0f} s build the fusion inputs once (the frozen MLTM encoder over "
        f"{s['dataset']['admissions']:,} admissions, {tr['inputs_bytes'] / 1e9:.1f} GB written) and every epoch costs "
        f"about {_mean(tr['epoch_seconds']):.0f} s ({steps:,} steps of {batch} admissions through MEDFuse's joint "
        f"tokens and cross-attention, all on {s['machine']['cpus']} CPU cores), so with the default "
        f"{_default_epochs(train)}-epoch budget it outgrows everything else; it is the part a GPU is for (not measured "
        f"here). `embed-notes` comes next ({emb['seconds']:.0f} s, most of it pushing the {er['unique_lines']:,} "
        f"distinct lines through MiniLM in bfloat16, the rest pooling and writing the {er['admissions']:,} admissions, "
        f"reading texts and fitting the codebook); it is paid once per note model, since a re-run finds every line in "
        f"the content cache. Then one MLTM epoch ({labs['seconds']:.0f} s), `synth` ({syn['seconds']:.0f} s, almost "
        f"all of it drawing and gzip-writing {syn['rows']['lab_rows'] / 1e6:.0f} M lab rows) and `prepare` "
        f"({prep['seconds']:.0f} s), whose time is the one pass over `labevents` under a "
        f"{prep['rows']['memory_limit']} DuckDB budget that spills "
        f"{gib_bytes(prep['temp_directory_peak_bytes'])} to disk: {s['summary']['prepare_to_bare_scan']:.1f}x the bare "
        f"scan here against {p4['ratio_prepare_to_bare_scan']:.2f}x at {p4['dataset']['admissions']:,} admissions "
        f"(`bench_prepare.py --format mimic4`). A larger `memory_limit` (the machine allowing) spills less."
    ) + "\n"


def prepare_peak(r: Results) -> str:
    """docs/scaling.md, inline: prepare's peak RSS and spill at MIMIC-IV size."""
    prep = r["mimic4_scale"]["stages"]["prepare"]
    return (f"peaked at {gib(prep['peak_rss_mib'])} under the {prep['rows']['memory_limit']} default, with "
            f"{gib_bytes(prep['temp_directory_peak_bytes'])} of spill files at the peak")


def train_peak(r: Results) -> str:
    """docs/scaling.md, inline: train's peak RSS reading batches with pread."""
    return f"peak {gib(r['mimic4_scale']['stages']['train']['peak_rss_mib'])}"


# ---------------------------------------------------------------- docs/configuration.md

def _scale_prepare(r: Results) -> tuple[dict, dict]:
    s = r["mimic4_scale"]
    return s["stages"]["prepare"], s["stages"]["synth"]["rows"]


def config_memory_limit(r: Results) -> str:
    """docs/configuration.md, inline (`memory_limit` row)."""
    prep, rows = _scale_prepare(r)
    return (f"{gib(prep['peak_rss_mib'])} under the {prep['rows']['memory_limit']} default for "
            f"{prep['rows']['admissions']:,} admissions and {rows['lab_rows'] / 1e6:.0f} M lab rows")


def config_spill(r: Results) -> str:
    """docs/configuration.md, inline (`temp_directory` row)."""
    prep, rows = _scale_prepare(r)
    return (f"{gib_bytes(prep['temp_directory_peak_bytes'])} at peak for {rows['lab_rows'] / 1e6:.0f} M lab rows "
            f"under the {prep['rows']['memory_limit']} default")


# ---------------------------------------------------------------- docs/training.md

def training_demo_time(r: Results) -> str:
    """docs/training.md, inline: how long `medfuse demo` takes."""
    return demo_time(r["demo"]) + "; [benchmarks/results/demo.json](../benchmarks/results/demo.json))"


# ---------------------------------------------------------------- docs/notes.md

NOTES_ROWS: list[tuple[tuple[str, ...], str]] = [
    (("model",), "`default` or a local model folder"),
    (("pooling",), "`auto`, `mean`, `last`"),
    (("max_length",), "window tokens incl. special tokens; 0 = the model's limit"),
    (("stride",), "tokens shared by consecutive windows"),
    (("batch_tokens", "batch_size"), "per-forward budget; 0 = by device"),
    (("normalize",), "L2-normalise vectors"),
    (("unit",), ("`lines` (each line embedded; per field max-pooled and counted in line clusters) or `text` "
                "(whole text)")),
    (("line_clusters",), ("with `lines`: k-means clusters of line vectors per field, fitted on the training split; "
                         "0 = max-pool only")),
    (("line_max",), ("with `lines`: the per-field max of the line vectors is part of the note vector; false = "
                    "cluster counts only")),
    (("template",), "per-admission text (with `lines`: its fields, in order)"),
    (("cache", "cache_dir"), "embedding cache and its folder"),
    (("device", "dtype"), ("cuda + bfloat16 when available; else cpu, bfloat16 on CPUs with native bfloat16, float32 "
                          "otherwise")),
    (("finetune",), ("`train`: LoRA-fine-tune the note model on the training split first (`RUN/finetune`), then "
                    "embed with it")),
    (("lora_rank", "lora_alpha", "lora_dropout", "target_modules"), ("LoRA; empty `target_modules` = per family "
                                                                     "(BERT `query`, `value`; Llama `q_proj`, "
                                                                     "`k_proj`, `v_proj`, `o_proj`)")),
    (("lora_layers",), "adapt only the top N transformer layers (0 = all)"),
    (("epochs", "schedule_epochs", "train_batch_size", "lr", "head_lr", "weight_decay"),
     ("training: at most `epochs`; the learning-rate cosine ends at `schedule_epochs` (0 = `epochs`); admissions a "
     "step; AdamW rates of the LoRA weights and of the head")),
    (("patience", "pos_weight", "max_minutes"), ("early stopping after `patience` epochs without a better validation "
                                                "macro-AUPRC; positives weighted per disease; time budget in minutes "
                                                "(0 = none)")),
    (("gradient_checkpointing", "cpu_autocast", "seed"), "training"),
]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, list):
        return "`[" + ", ".join(f'"{x}"' for x in v) + "]`"
    if isinstance(v, float):
        return f"{v:.0e}".replace("e-0", "e-") if 0 < abs(v) < 0.01 else f"{v:g}"
    return str(v)


def notes_config(r: Results) -> str:
    """docs/notes.md: the `[notes]` keys and their defaults, from medfuse.config.NotesConfig."""
    from medfuse.config import NotesConfig

    defaults = NotesConfig().model_dump()
    listed = [k for keys, _ in NOTES_ROWS for k in keys]
    missing, unknown = set(defaults) - set(listed), set(listed) - set(defaults)
    if missing or unknown or len(listed) != len(set(listed)):
        raise ValueError(f"NOTES_ROWS: missing {sorted(missing)}, unknown {sorted(unknown)} (or a key listed twice)")
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for keys, meaning in NOTES_ROWS:
        values = ["see above" if k == "template" else _toml_value(defaults[k]) for k in keys]
        lines.append(_row(", ".join(f"`{k}`" for k in keys), ", ".join(values), meaning))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the fragments of each file

FRAGMENTS: dict[str, dict[str, Callable[[Results], str]]] = {
    "README.md": {"performance": performance, "scale": scale, "prepare-time": prepare_time},
    "docs/scaling.md": {"scale-table": scaling_table, "scale-bounds": scaling_bounds,
                        "scale-dominant": scaling_dominant, "prepare-peak": prepare_peak, "train-peak": train_peak},
    "docs/configuration.md": {"memory-limit": config_memory_limit, "spill": config_spill},
    "docs/training.md": {"demo-time": training_demo_time},
    "docs/notes.md": {"notes-config": notes_config},
}


def render_text(path: str, text: str, results: Results) -> str:
    """``text`` (the contents of ``path``, relative to the repository) with its fragments re-rendered."""
    for name, fn in FRAGMENTS[path].items():
        text = replace_marked(text, SCRIPT, name, fn(results))
    return text


def fragment(name: str, text: str) -> str:
    """The current text of fragment ``name`` in ``text``."""
    return marked_span(SCRIPT, name).search(text).group(1)


def stale(root: Path = REPO, results: Path = RESULTS) -> dict[str, tuple[str, str]]:
    """``{path: (current, rendered)}`` for every file whose fragments differ from what the JSON renders."""
    res = Results(results)
    out = {}
    for path in FRAGMENTS:
        current = (Path(root) / path).read_text()
        rendered = render_text(path, current, res)
        if rendered != current:
            out[path] = (current, rendered)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs from its rendering")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository whose README.md and docs/ are rendered")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the folder of results JSON files")
    args = ap.parse_args(argv)
    differ = stale(args.root, args.results)
    if args.check:
        for path, (current, rendered) in differ.items():
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), rendered.splitlines(True),
                                                       f"{path} (now)", f"{path} (rendered from the JSON)"))
        if differ:
            print(f"stale: {', '.join(differ)}; run python {SCRIPT}", file=sys.stderr)
        return 1 if differ else 0
    for path, (_, rendered) in differ.items():
        (args.root / path).write_text(rendered)
        print(f"rendered {path}")
    if not differ:
        print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
