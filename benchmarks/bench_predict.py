"""Batch prediction speed and memory: ``medfuse predict`` on 2,000 and 10,000 new synthetic patients.

The demo's model (benchmarks/_common.demo_bundle: demo.toml, default text model) predicts records made
from a synthetic hospital of another seed (5), each run in a fresh process with an EMPTY line-embedding
cache. Peak RSS is the child process's own. Target (issue 14): >= 20 patients/s on 2 cores, and a peak
that does not grow with the number of patients (prediction streams in chunks).

    python benchmarks/bench_predict.py            # writes benchmarks/results/predict.json
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from _common import demo_bundle, new_patient_records, offline, run_child, save

offline()

CHILD = """
import json, time, sys
t0 = time.perf_counter()
from medfuse.serving import Predictor
from medfuse.serving.batch import predict_file
p = Predictor.load({model!r}, cache_dir={cache!r})
t1 = time.perf_counter()
s = predict_file(p, {records!r}, {out!r}, batch_size={batch})
print(json.dumps({{"load_seconds": round(t1 - t0, 2), "predict_seconds": s.seconds, "predicted": s.predicted,
                   "errors": s.errors, "lines_computed": p.embedder.last_stats.get("computed")}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-cache", action="store_true",
                    help="no line-embedding cache at all (shows memory without the cache's own growth)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = demo_bundle()
    source = new_patient_records("mimic3", max(sizes), seed=5)
    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            records = Path(tmp) / "records.jsonl"
            with source.open() as f, records.open("w") as g:
                g.writelines(itertools.islice(f, n))
            cache = False if args.no_cache else str(Path(tmp) / "cache")
            child = run_child(CHILD.format(model=str(model), cache=cache, records=str(records),
                                           out=str(Path(tmp) / "pred.parquet"), batch=args.batch_size))
        import json

        r = {"patients": n, **json.loads(child["stdout"].strip().splitlines()[-1]),
             "wall_seconds": child["seconds"], "cpu_seconds": child["cpu_seconds"],
             "peak_rss_mib": child["peak_rss_mib"]}
        r["patients_per_second"] = round(n / r["predict_seconds"], 1)
        r["patients_per_second_with_load"] = round(n / r["wall_seconds"], 1)
        print(r, flush=True)
        runs.append(r)
    result = {"model": "demo.toml (synthetic mimic3 seed 1, 2,000 admissions, all-MiniLM-L6-v2 lines)",
              "records": "synthetic mimic3 seed 5 via medfuse.serving.raw_records.records_from_raw",
              "cache": "none" if args.no_cache else "empty at start", "batch_size": args.batch_size, "runs": runs,
              "target_patients_per_second": 20}
    if len(runs) > 1:
        result["peak_rss_ratio_largest_to_smallest"] = round(runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 3)
    print(save("predict_no_cache" if args.no_cache else "predict", result))


if __name__ == "__main__":
    main()
