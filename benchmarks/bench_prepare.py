"""Benchmark ``medfuse prepare`` on a MIMIC-III-size synthetic dataset against DuckDB's bare CSV scan.

Both run in fresh child processes so each peak RSS is its own. Prints a table and writes
benchmarks/results/prepare.json (``--format mimic4``: prepare_mimic4.json). Targets (issue 2): prepare / bare scan <= 3, peak RSS <= 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

from _common import run_child, save, synthetic_raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--admissions", type=int, default=58000)
    ap.add_argument("--format", default="mimic3", choices=["mimic3", "mimic4"])
    args = ap.parse_args()

    raw = synthetic_raw(args.format, args.admissions)
    labevents = raw / ("LABEVENTS.csv.gz" if args.format == "mimic3" else "hosp/labevents.csv.gz")
    scan_code = (f"import duckdb; con = duckdb.connect(); con.execute('SET enable_progress_bar = false'); "
                 f"print(con.execute(\"SELECT count(*) FROM read_csv('{labevents}')\").fetchone()[0])")
    load_before = [round(x, 2) for x in os.getloadavg()]
    scans = [run_child(scan_code)]  # measured before and after prepare: the mean of both is the reference
    lab_rows = int(scans[0]["stdout"].strip())
    out = tempfile.mkdtemp()
    try:
        prep = run_child(
            "import json; from medfuse.config import load_config; from medfuse.data.prepare import prepare_cohort; "
            f"m = prepare_cohort('{raw}', '{out}/cohort', load_config(overrides={{'prepare': {{'source': '{args.format}'}}}}).prepare); "
            "print(json.dumps({'timings': m['timings'], 'split_sizes': m['split_sizes'], 'labevents': m['tables']['labevents']}))"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    scans.append(run_child(scan_code))
    scan = {"seconds": round(sum(s["seconds"] for s in scans) / len(scans), 2),
            "cpu_seconds": round(sum(s["cpu_seconds"] for s in scans) / len(scans), 1),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in scans), "runs_seconds": [s["seconds"] for s in scans]}
    info = json.loads(prep["stdout"])
    result = {
        "dataset": {"format": args.format, "admissions": args.admissions, "lab_rows": lab_rows},
        "prepare": {"seconds": prep["seconds"], "cpu_seconds": prep["cpu_seconds"], "peak_rss_mib": prep["peak_rss_mib"],
                    "lab_rows_per_second": round(lab_rows / prep["seconds"]), "stage_seconds": info["timings"]},
        "bare_scan": scan,
        "ratio_prepare_to_bare_scan": round(prep["seconds"] / scan["seconds"], 2),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "targets": {"ratio_max": 3.0, "peak_rss_mib_max": 4096},
        "cohort": {"admissions": info["split_sizes"]["all"]["admissions"], "lab_rows_used": info["labevents"]["used"]},
    }
    path = save("prepare" if args.format == "mimic3" else f"prepare_{args.format}", result)
    print(f"lab rows            {lab_rows:,}")
    print(f"bare DuckDB scan    {scan['seconds']:.1f} s   {scan['cpu_seconds']:.1f} CPU-s   peak {scan['peak_rss_mib']:.0f} MiB")
    print(f"medfuse prepare     {prep['seconds']:.1f} s   {prep['cpu_seconds']:.1f} CPU-s   peak {prep['peak_rss_mib']:.0f} MiB   "
          f"{result['prepare']['lab_rows_per_second']:,} lab rows/s")
    print(f"ratio prepare/scan  {result['ratio_prepare_to_bare_scan']:.2f}  (target <= 3)")
    print(f"stages              {info['timings']}")
    print(f"written             {path}")


if __name__ == "__main__":
    main()
