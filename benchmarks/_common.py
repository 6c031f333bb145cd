"""Helpers shared by the benchmark scripts: cached synthetic data, timing a child process, results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"


def offline() -> None:
    """Nothing downloaded, no tokenizer thread pools: call before medfuse imports transformers."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def synthetic_raw(fmt: str, admissions: int, seed: int = 0) -> Path:
    """A synthetic raw dataset, generated once and kept under benchmarks/.cache."""
    from medfuse.data.synth import generate

    out = CACHE / f"synth-{fmt}-{admissions}-{seed}"
    if not (out / ".complete").exists():
        generate(out, fmt, admissions, seed=seed)
        (out / ".complete").touch()
    return out


def run_child(code: str) -> dict:
    """Run Python ``code`` in a fresh process; wall seconds, CPU seconds (user + system, all threads)
    and that process's own peak RSS in MiB."""
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child of a large parent would
    # report the parent's size
    report = ("\nimport resource, sys; u = resource.getrusage(resource.RUSAGE_SELF); "
              "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
              "print('PEAK_RSS_KIB', hwm, 'CPU_S', u.ru_utime + u.ru_stime, file=sys.stderr)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    peak_kib, _, cpu = proc.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[:3]
    return {"seconds": round(wall, 2), "cpu_seconds": round(float(cpu), 1), "peak_rss_mib": round(int(peak_kib) / 1024, 1),
            "stdout": proc.stdout}


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": psutil.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), **result}, indent=2))
    return path


def demo_bundle() -> Path:
    """The demo's model as a bundle: ``make demo``'s settings (demo.toml: synthetic seed 1, 2,000 admissions,
    the default text model), trained once and exported under benchmarks/.cache/demo-model/model."""
    from importlib import resources

    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.runs.export import export_bundle
    from medfuse.runs.stages import train_run

    out = CACHE / "demo-model"
    if (out / "model" / "bundle.json").exists():
        return out / "model"
    with resources.as_file(resources.files("medfuse.resources").joinpath("demo.toml")) as path:
        cfg = load_config(path)
    raw = synthetic_raw(cfg.synth.format, cfg.synth.admissions, cfg.synth.seed)
    prepare_cohort(raw, out / "cohort", cfg.prepare.model_copy(update={"source": cfg.synth.format}), overwrite=True)
    train_run(out / "cohort", out / "run", cfg)
    return export_bundle(out / "run", out / "model", overwrite=True)


def new_patient_records(fmt: str, admissions: int, seed: int) -> Path:
    """Patient records (JSON Lines) of a synthetic hospital of another seed, made once under .cache."""
    from medfuse.serving.raw_records import records_from_raw

    out = CACHE / f"records-{fmt}-{admissions}-{seed}.jsonl"
    if not out.exists():
        rows = records_from_raw(synthetic_raw(fmt, admissions, seed), fmt)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        tmp.rename(out)
    return out
