"""The whole pipeline at MIMIC-IV size on a synthetic hospital: wall time, CPU time, peak RSS and disk per stage.

Stages, each in a fresh child process (peak RSS = the child's VmHWM; a watchdog kills a child whose RSS passes
``--rss-cap-gib`` so that a stage that would not fit cannot take the machine down):

  synth          ``generate(..., "mimic4", 430,000 admissions, note_fraction 0.767)``: ~330,000 discharge notes
  scan           DuckDB's bare ``count(*)`` over hosp/labevents.csv.gz, before and after prepare (the reference)
  prepare        ``medfuse prepare`` with ``[prepare] memory_limit`` (default 3GB) and ``temp_directory`` set
  pretrain-labs  ``medfuse pretrain-labs``, bounded to ``--labs-epochs`` epochs
  embed-notes    ``medfuse embed-notes`` (line unit, every distinct line embedded once, admissions 4,096 at
                 a time; a fresh content cache)
  train          ``medfuse train`` with both runs reused, bounded to ``--train-epochs`` epochs: the MLTM
                 reconstruction table, the fusion inputs written to RUN/inputs, training, thresholds
  evaluate       ``medfuse evaluate RUN --split test`` (inputs memory-mapped from RUN/inputs)

A stage whose output exists is not run again (its figures are kept from the previous results file; ``--only``
names stages to run again; ``--until`` stops after one), so the script can be re-run after an interruption. Writes
benchmarks/results/mimic4_scale.json after every stage and prints a table at the end.

    nohup python benchmarks/bench_mimic4_scale.py --rss-cap-gib 10 > scale.log 2>&1 &
    python benchmarks/bench_mimic4_scale.py --admissions 20000              # a quick check of the script

About an hour on 2 shared cores and 23 GiB of disk (raw 3.6 GiB, notes 2.5, RUN/inputs 9.8, spill 9.95 at
its peak, removed after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
from _common import CACHE, RESULTS, machine, offline, save

offline()

REPORT = ("\nimport atexit, resource, sys\n"
          "def _report():\n"
          "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
          "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
          "    print('PEAK_RSS_KIB', hwm, 'CPU_S', u.ru_utime + u.ru_stime, file=sys.stderr, flush=True)\n"
          "atexit.register(_report)\n")


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they use)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_stage(name: str, code: str, log: Path, cap_bytes: int, watch: Path | None = None) -> dict:
    """Run ``code`` in a fresh Python; wall and CPU seconds, peak RSS (VmHWM), the peak size of ``watch``.

    The child is killed when its resident set passes ``cap_bytes`` (recorded as ``killed_at_rss_mib``)."""
    t0 = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", REPORT + code], stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc, peak_watch, killed, sampled = psutil.Process(child.pid), 0, None, 0
    while child.poll() is None:
        try:
            rss = proc.memory_info().rss
        except psutil.NoSuchProcess:
            break
        sampled = max(sampled, rss)
        if rss > cap_bytes and killed is None:
            killed = rss
            child.kill()
        if watch is not None:
            peak_watch = max(peak_watch, disk_bytes(watch))
        try:
            child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    result = {"stage": name, "seconds": round(wall, 1), "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    if killed is not None:
        return {**result, "killed_at_rss_mib": round(killed / 2**20), "error": "peak RSS over the cap"}
    if child.returncode or "PEAK_RSS_KIB" not in text:
        return {**result, "error": text[-3000:], "sampled_peak_rss_mib": round(sampled / 2**20)}
    tail = text.rsplit("PEAK_RSS_KIB", 1)[1].split()
    result.update(cpu_seconds=round(float(tail[2]), 1), peak_rss_mib=round(int(tail[0]) / 1024, 1))
    if watch is not None:
        result["temp_directory_peak_bytes"] = peak_watch
    return result


def cli(*argv: str) -> str:
    """Child code that runs ``medfuse ARGV`` (the installed CLI, in-process so VmHWM is its own)."""
    return f"import sys\nsys.argv = {['medfuse', *argv]!r}\nfrom medfuse.cli import app\napp()\n"


def bare_scan(labevents: Path) -> str:
    return (f"import duckdb; con = duckdb.connect(); con.execute('SET enable_progress_bar = false'); "
            f"print('ROWS', con.execute(\"SELECT count(*) FROM read_csv('{labevents}')\").fetchone()[0])")


def table(stages: dict[str, dict]) -> str:
    lines = [f"{'stage':<16}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}{'disk GiB':>10}  rows / notes"]
    for name, s in stages.items():
        rss = f"{s['peak_rss_mib'] / 1024:.2f}" if "peak_rss_mib" in s else (
            f">{s['killed_at_rss_mib'] / 1024:.1f} (cap)" if "killed_at_rss_mib" in s else "failed")
        disk = f"{s['disk_bytes'] / 2**30:.2f}" if s.get("disk_bytes") else "-"
        rows = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in s.get("rows", {}).items())
        lines.append(f"{name:<16}{s['seconds']:>9.1f}{s.get('cpu_seconds', float('nan')):>9.1f}{rss:>14}{disk:>10}"
                     f"  {rows}{'  [' + s['bounded'] + ']' if s.get('bounded') else ''}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admissions", type=int, default=430_000)
    ap.add_argument("--note-fraction", type=float, default=0.767, help="share of admissions with a discharge note")
    ap.add_argument("--labs-epochs", type=int, default=1, help="MLTM epochs (the time bound of pretrain-labs)")
    ap.add_argument("--train-epochs", type=int, default=2, help="fusion epochs (the time bound of train)")
    ap.add_argument("--rss-cap-gib", type=float, default=12.0, help="a child above this RSS is killed")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data (default benchmarks/.cache/...)")
    ap.add_argument("--only", default="", help="comma-separated stages to (re)run; empty = every missing one")
    ap.add_argument("--until", default="", help="stop after this stage (e.g. prepare: make the data, run nothing else)")
    args = ap.parse_args()

    work = args.work or CACHE / f"mimic4-scale-{args.admissions}"
    work.mkdir(parents=True, exist_ok=True)
    raw, cohort, labs, notes, run = (work / n for n in ("raw", "cohort", "labs", "notes", "run"))
    spill, cache, logs = work / "spill", work / "cache", work / "logs"
    logs.mkdir(exist_ok=True)
    os.environ["MEDFUSE_CACHE"] = str(cache)  # a cache of its own: every distinct line is computed once here
    config = work / "scale.toml"
    config.write_text(f'[prepare]\nsource = "mimic4"\ntemp_directory = "{spill}"\n\n[labs]\nepochs = {args.labs_epochs}\n\n'
                      f'[train]\nepochs = {args.train_epochs}\nlabs_run = "{labs}"\nnotes_run = "{notes}"\n')
    name = "mimic4_scale" if args.admissions == 430_000 else f"mimic4_scale_{args.admissions}"
    previous = json.loads((RESULTS / f"{name}.json").read_text()).get("stages", {}) if (RESULTS / f"{name}.json").exists() else {}
    only = {s for s in args.only.split(",") if s}
    stages: dict[str, dict] = {}
    cap = int(args.rss_cap_gib * 2**30)
    labevents = raw / "hosp" / "labevents.csv.gz"

    def stage(key: str, done: bool, code: str, output: Path | None, rows=None, watch=None, bounded: str = ""):
        if done and key not in only and key in previous:
            stages[key] = previous[key]
        else:
            run_and_record(key, code, output, rows, watch, bounded)
        if key == args.until:
            write()
            print(table(stages))
            sys.exit(0)

    def run_and_record(key: str, code: str, output: Path | None, rows, watch, bounded: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {key} ...", flush=True)
        s = run_stage(key, code, logs / f"{key}.log", cap, watch)
        if output is not None:
            s["disk_bytes"] = disk_bytes(output)
        if "error" not in s and rows is not None:
            s["rows"] = rows()
        if bounded:
            s["bounded"] = bounded
        stages[key] = s
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {json.dumps({k: v for k, v in s.items() if k != 'error'})}",
              flush=True)
        if "error" in s:
            print(s["error"][-1500:], flush=True)
        write()

    def write() -> None:
        scan = [stages[k] for k in ("scan_before", "scan_after") if "peak_rss_mib" in stages.get(k, {})]
        summary = {}
        if scan and "peak_rss_mib" in stages.get("prepare", {}):
            mean = sum(s["seconds"] for s in scan) / len(scan)
            summary["prepare_to_bare_scan"] = round(stages["prepare"]["seconds"] / mean, 2)
            summary["bare_scan_seconds_mean"] = round(mean, 1)
        measured = [s for s in stages.values() if "peak_rss_mib" in s]
        if measured:
            top = max(measured, key=lambda s: s["seconds"])
            summary["slowest_stage"] = top["stage"]
            summary["max_peak_rss_mib"] = max(s["peak_rss_mib"] for s in measured)
        save(name, {"machine": {**machine(), **device()}, "dataset": {"format": "mimic4", "admissions": args.admissions,
                                                                       "note_fraction": args.note_fraction, "seed": 0},
                    "settings": {"labs_epochs": args.labs_epochs, "train_epochs": args.train_epochs,
                                 "rss_cap_gib": args.rss_cap_gib, "config": config.read_text()},
                    "targets": {"peak_rss_mib_max": 8192}, "summary": summary, "stages": stages})

    def synth_rows() -> dict:
        info = json.loads((raw / "summary.json").read_text())
        return {k: info[k] for k in ("admissions", "patients", "lab_rows", "notes", "diagnoses")}

    stage("synth", (raw / "summary.json").exists(),
          "import json; from pathlib import Path; from medfuse.data.synth import generate\n"
          f"s = generate(Path('{raw}'), 'mimic4', {args.admissions}, seed=0, note_fraction={args.note_fraction})\n"
          f"(Path('{raw}') / 'summary.json').write_text(json.dumps(s, default=str))\n", raw, synth_rows)

    def scan_rows(key: str):
        return lambda: {"lab_rows": int((logs / f"{key}.log").read_text().split("ROWS", 1)[1].split()[0])}

    prepared = (cohort / "manifest.json").exists()
    stage("scan_before", prepared, bare_scan(labevents), None, scan_rows("scan_before"))

    def cohort_rows() -> dict:
        m = json.loads((cohort / "manifest.json").read_text())
        return {"admissions": m["split_sizes"]["all"]["admissions"], "lab_rows_read": m["tables"]["labevents"]["read"],
                "lab_rows_used": m["tables"]["labevents"]["used"], "notes": m["tables"]["notes"]["used"],
                "lab_tests": pq.read_metadata(cohort / "lab_tests.parquet").num_rows,
                "memory_limit": m["config"]["memory_limit"]}

    stage("prepare", prepared, cli("prepare", str(raw), "--out", str(cohort), "--overwrite", "--config", str(config)),
          cohort, cohort_rows, watch=spill)
    stage("scan_after", "scan_after" in previous and prepared, bare_scan(labevents), None, scan_rows("scan_after"))

    def labs_rows() -> dict:
        h = json.loads((labs / "history.json").read_text())["summary"]
        return {"train_admissions": h["train_admissions"], "epochs": h["epochs_run"],
                "admissions_per_second": round(h["admissions_per_second"]), "best_val_loss": round(h["best_val_loss"], 4)}

    stage("pretrain-labs", (labs / "model.safetensors").exists(),
          cli("pretrain-labs", str(cohort), "--out", str(labs), "--config", str(config)), labs, labs_rows,
          bounded=f"{args.labs_epochs} epoch(s) of the default 100 with early stopping")

    def notes_rows() -> dict:
        c = json.loads((notes / "embed_config.json").read_text())
        return {k: c[k] for k in ("admissions", "embedded", "lines", "unique_lines", "computed", "cached", "dim")}

    stage("embed-notes", (notes / "note_embeddings.parquet").exists(),
          cli("embed-notes", str(cohort), "--out", str(notes), "--config", str(config)), notes, notes_rows)

    def train_rows() -> dict:
        h = json.loads((run / "history.json").read_text())
        meta = json.loads((run / "inputs" / "inputs.json").read_text())
        return {"epochs": len(h), "epoch_seconds": [round(e["seconds"], 1) for e in h],
                "val_macro_auprc": [round(e["val_macro_auprc"], 4) for e in h],
                "inputs_seconds": meta["seconds"], "inputs_bytes": meta["bytes"]}

    if (notes / "note_embeddings.parquet").exists():
        stage("train", (run / "model.safetensors").exists(),
              cli("train", str(cohort), "--out", str(run), "--config", str(config)), run, train_rows,
              bounded=f"{args.train_epochs} epoch(s) of the default 30 with early stopping")

        def eval_rows() -> dict:
            m = json.loads((run / "metrics_test.json").read_text())
            tuned = m["at_tuned_thresholds"]["macro"]
            return {"test_admissions": m["n"], "macro_auprc": round(tuned["auprc"], 4), "macro_f1": round(tuned["f1"], 4)}

        stage("evaluate", (run / "metrics_test.json").exists(), cli("evaluate", str(run), "--split", "test"), None,
              eval_rows)
    write()
    shutil.rmtree(spill, ignore_errors=True)
    print(table(stages))
    print(f"written {RESULTS / (name + '.json')}")


def device() -> dict:
    """The CPU model and whether a GPU was there (this machine's torch build)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
    gpu = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": model, "gpu": gpu, "disk_free_gib": round(shutil.disk_usage(CACHE).free / 2**30, 1)}


if __name__ == "__main__":
    main()
