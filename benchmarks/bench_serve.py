"""Throughput and latency of ``medfuse serve``: 1, 8 and 32 concurrent clients against one server on 127.0.0.1.

    python benchmarks/bench_serve.py                                    # the demo's model, 30 s per level
    python benchmarks/bench_serve.py runs/serve/model --duration 5      # another bundle, a quick run

BUNDLE is a model bundle with the demo's settings and the default text model (by default the one
``_common.demo_bundle`` trains once under benchmarks/.cache), or made by hand::

    medfuse synth runs/serve/raw --admissions 2000 --seed 1 && medfuse prepare runs/serve/raw --out runs/serve/cohort
    medfuse train runs/serve/cohort --out runs/serve/run --config src/medfuse/resources/demo.toml
    medfuse export runs/serve/run --out runs/serve/model

Each request carries one realistic record: an admission of a synthetic hospital of another seed (7) in
the bundle's source layout, turned into a record by ``medfuse.serving.raw_records.records_from_raw``, with a
300-600 word note and its first 30-80 lab results. Every level is warmed up, then runs for ``--duration``
seconds (and at most ``--max-requests`` requests). Prints and writes benchmarks/results/serve.json:
requests/s, latency p50 / p95 / p99, the mean batch size (from ``/v1/stats``), CPU seconds of the server
(also per request: less sensitive than latency to other work on the machine, whose load average is
recorded) and of this client, and errors (targets: none; p99 <= 250 ms at 8 clients; 32 clients >= 2x 1
client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
from _common import demo_bundle, offline, save, synthetic_raw

LEVELS = (1, 8, 32)
HEADERS = {"Content-Type": "application/json"}
RECORD_SEED = 7  # the synthetic hospital the records come from; the demo's model is trained on seed 1


def realistic_records(source: str, admissions: int = 400) -> list[bytes]:
    """Request bodies of one record each: notes of 300-600 words and the first 30-80 lab results."""
    from medfuse.serving.raw_records import records_from_raw

    rng = np.random.default_rng(0)
    bodies = []
    for r in records_from_raw(synthetic_raw(source, admissions, RECORD_SEED), source):
        words = sum(len(n.split()) for n in r.get("note") or [])
        if 300 <= words <= 600 and len(r["labs"]) >= 30:
            r["labs"] = sorted(r["labs"], key=lambda lab: lab["time"] or "")[:int(rng.integers(30, 81))]
            bodies.append(json.dumps({"record": r}).encode())
    return bodies


class Server:
    """``medfuse serve BUNDLE --port 0`` in a subprocess; the port is read from its log."""

    def __init__(self, bundle: Path, config: Path | None):
        env = {k: v for k, v in os.environ.items() if k != "MEDFUSE_API_TOKEN"}
        cmd = [sys.executable, "-m", "medfuse.cli", "serve", str(bundle), "--port", "0"]
        self.proc = subprocess.Popen(cmd + (["--config", str(config)] if config else []), env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.port is None and (m := re.search(r"running on http://127\.0\.0\.1:(\d+)", line)):
                self.port = int(m.group(1))

    def wait_ready(self, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready:\n" + "".join(self.lines[-30:]))
            if self.port is not None and httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                return f"http://127.0.0.1:{self.port}"
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


async def drive(url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int,
                server_cpu: Callable[[], float], warmup: int = 3) -> dict:
    """``clients`` users, each on its own connection, posting the next body as soon as its last answer came
    back; each first sends ``warmup`` requests that are not counted."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    warmed, go = asyncio.Barrier(clients + 1), asyncio.Event()
    end = 0.0

    async def user(k: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=HEADERS) as client:
            for i in range(warmup):
                (await client.post("/v1/predict", content=bodies[(k + i) % len(bodies)])).raise_for_status()
            await warmed.wait()
            await go.wait()
            while time.perf_counter() < end and sent < max_requests:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", content=body)
                    key = None if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as e:
                    key = type(e).__name__
                latencies.append(time.perf_counter() - t0)
                if key:
                    errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as admin:
        users = [asyncio.create_task(user(k)) for k in range(clients)]
        await warmed.wait()
        before, cpu, own = (await admin.get("/v1/stats")).json(), server_cpu(), time.process_time()
        started = time.perf_counter()
        end = started + seconds
        go.set()
        await asyncio.gather(*users)
        elapsed = time.perf_counter() - started
        after, cpu, own = (await admin.get("/v1/stats")).json(), server_cpu() - cpu, time.process_time() - own
    ok = len(latencies) - sum(errors.values())
    ms = np.array(latencies) * 1000
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies), "errors": errors,
            "requests_per_s": round(ok / elapsed, 2),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "mean_batch": round((after["records"] - before["records"]) / max(batches, 1), 2),
            "server_cpu_s": round(cpu, 1), "server_cpu_ms_per_request": round(1000 * cpu / max(ok, 1), 1),
            "client_cpu_s": round(own, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?",
                        help="A model bundle folder (medfuse export); default: the demo's model (_common.demo_bundle).")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per concurrency level.")
    parser.add_argument("--max-requests", type=int, default=100_000, help="Requests per level at most.")
    parser.add_argument("--config", type=Path, help="A TOML file with [serve] settings for the server.")
    parser.add_argument("--name", default="serve", help="Results file: benchmarks/results/NAME.json.")
    args = parser.parse_args()
    offline()
    args.bundle = args.bundle or demo_bundle()
    bundle = json.loads((args.bundle / "bundle.json").read_text())
    bodies = realistic_records(bundle["transform"]["source"])
    words = [sum(len(n.split()) for n in json.loads(b)["record"]["note"]) for b in bodies]
    labs = [len(json.loads(b)["record"]["labs"]) for b in bodies]
    print(f"{len(bodies)} records: note words {min(words)}-{max(words)} (median {int(np.median(words))}), "
          f"labs {min(labs)}-{max(labs)} (median {int(np.median(labs))})", flush=True)
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every figure
    server = Server(args.bundle, args.config)
    try:
        url = server.wait_ready()
        stats = httpx.get(f"{url}/v1/stats").json()
        levels = []
        for clients in LEVELS:
            levels.append(asyncio.run(drive(url, bodies, clients, args.duration, args.max_requests, server.cpu_seconds)))
            print(json.dumps(levels[-1]), flush=True)
    finally:
        rc = server.stop()
    by = {lv["clients"]: lv for lv in levels}
    targets = {
        "no_errors": all(not lv["errors"] for lv in levels),
        "p99_ms_at_8_clients_le_250": by[8]["p99_ms"] <= 250,
        "throughput_32_over_1_ge_2": round(by[32]["requests_per_s"] / by[1]["requests_per_s"], 2) >= 2,
    }
    result = {
        "bundle": {"model_version": bundle["model_version"], "text_model": bundle["text_model"]["model"],
                   "unit": bundle["text_model"]["unit"], "source": bundle["transform"]["source"]},
        "serve": {k: stats[k] for k in ("max_batch", "max_wait_ms")}, "duration_s": args.duration,
        "records": {"n": len(bodies), "seed": RECORD_SEED, "note_words_median": int(np.median(words)),
                    "labs_median": int(np.median(labs))},
        "levels": levels, "throughput_32_over_1": round(by[32]["requests_per_s"] / by[1]["requests_per_s"], 2),
        "targets_met": targets, "server_exit": rc,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }
    print(f"32 clients / 1 client throughput: {result['throughput_32_over_1']}x; targets: {targets}")
    print(f"wrote {save(args.name, result)}")


if __name__ == "__main__":
    main()
