"""Helpers shared by the benchmark scripts: cached synthetic data, timing a child process, results, and the
formatting and marker helpers of the scripts that render Markdown from results JSON (compare_cohort.py,
render_readme.py)."""

from __future__ import annotations

import json
import os
import platform
import re
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


# ---------------------------------------------------------------- rendering results JSON as Markdown

def load_result(name: str, results: Path = RESULTS) -> dict:
    """``results/<name>.json``."""
    return json.loads((Path(results) / f"{name}.json").read_text())


def duration(seconds: float) -> str:
    """``2 min 5 s``, or ``42 s`` under a minute."""
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def gib(mib: float) -> str:
    """MiB as ``1.50 GiB``."""
    return f"{mib / 1024:.2f} GiB"


def gib_bytes(n: float) -> str:
    """Bytes as ``9.95 GiB``."""
    return f"{n / 2**30:.2f} GiB"


MARKER = "<!-- rendered by {script}: {name} -->"
END = "<!-- end -->"


def marked_span(script: str, name: str) -> re.Pattern:
    """The text between ``<!-- rendered by SCRIPT: NAME -->`` and the next ``<!-- end -->``."""
    return re.compile(re.escape(MARKER.format(script=script, name=name)) + r"(.*?)" + re.escape(END), re.DOTALL)


def replace_marked(text: str, script: str, name: str, content: str) -> str:
    """``text`` with the span of fragment ``name`` replaced by ``content``.

    A block fragment (``content`` ending in a newline) sits on lines of its own between the markers; an inline
    one sits inside a line or a table cell. The markers must be there exactly once: a fragment that cannot be
    placed is an error, not a silent no-op."""
    pattern = marked_span(script, name)
    found = pattern.findall(text)
    if len(found) != 1:
        raise ValueError(f"{len(found)} marked spans '{MARKER.format(script=script, name=name)}' (need exactly 1)")
    body = f"\n{content}" if content.endswith("\n") else content
    return pattern.sub(lambda m: MARKER.format(script=script, name=name) + body + END, text)
