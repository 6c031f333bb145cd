"""Does fine-tuning the default note model on a CPU beat its frozen vectors? (issue 15, point 2)

For each fine-tuning setting: ``finetune-notes`` on the training split within a time budget, then
``embed-notes --adapter``, then the same notes-only MLP as ``compare``'s "Note embedding + MLP" row
(``kind = "notes_only"``, demo.toml's training settings, training seeds 0, 1, 2) on the fine-tuned and
on the frozen vectors; beside them the fine-tuned model's own head and TF-IDF + logistic regression.

Protocol (docs/protocol.md): ``--mode dev`` runs on the development cohort (synthetic seed 0) and scores
the **validation** split only; settings are chosen there. ``--mode confirm`` runs the chosen setting once
on the demo's reporting cohort (synthetic seed 1), which no choice looked at, and scores its **test**
split. Results: benchmarks/results/finetune.json (one entry per mode and setting).

    python benchmarks/bench_finetune.py --mode dev --setting lines-lora
    python benchmarks/bench_finetune.py --mode confirm --setting lines-lora
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, offline

offline()
os.environ.setdefault("OMP_NUM_THREADS", "2")

from medfuse.config import MedfuseConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "finetune"
SEEDS = (0, 1, 2)
COHORT_SEED = {"dev": 0, "confirm": 1}
SCORED_SPLIT = {"dev": "val", "confirm": "test"}

# name -> [notes] overrides (on top of demo.toml + defaults). Chosen on the development cohort's validation.
SETTINGS: dict[str, dict] = {
    # the old path: whole templated texts, windowed, the shipped LoRA settings
    "text-lora": {"unit": "text", "epochs": 3},
    # lines: distinct lines encoded once per step, max-pooled per field; LoRA rank 16 on query/value
    "lines-lora": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                   "train_batch_size": 16, "epochs": 8, "patience": 3},
    # the validated procedure of lines-lora as a fixed number of epochs: 3 epochs (what fits 10 minutes on
    # 2 cores) of the 8-epoch cosine, so the result does not depend on the machine's load
    "lines-lora-3of8": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                        "train_batch_size": 16, "epochs": 3, "schedule_epochs": 8, "patience": 3},
    # as lines-lora, with the cosine ending at epoch 3
    "lines-lora-3ep": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                       "train_batch_size": 16, "epochs": 3, "patience": 3},
    # as lines-lora, 32 admissions a step: more lines shared within a step, fewer steps
    "lines-lora-b32": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                       "train_batch_size": 32, "epochs": 8, "patience": 3},
    # as lines-lora, LoRA on every linear layer of the top 3 of 6 layers only: cheaper steps, more of them
    "lines-lora-top3": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                        "train_batch_size": 16, "epochs": 8, "patience": 3, "lora_layers": 3,
                        "target_modules": ["query", "key", "value", "dense"]},
    # as lines-lora, LoRA on every linear layer of the attention and feed-forward blocks
    "lines-lora-all": {"unit": "lines", "lora_rank": 16, "lora_alpha": 32, "lr": 1e-3, "head_lr": 3e-3,
                       "train_batch_size": 16, "epochs": 8, "patience": 3,
                       "target_modules": ["query", "key", "value", "dense"]},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def config() -> MedfuseConfig:
    demo = Path(str(resources.files("medfuse.resources").joinpath("demo.toml")))
    return load_config(demo)


def cohort(cfg: MedfuseConfig, seed: int) -> Path:
    """The demo-size synthetic cohort of ``seed`` (mimic3 layout, default prepare); made once."""
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate

    raw, out = WORK / f"seed{seed}" / "raw", WORK / f"seed{seed}" / "cohort"
    if not (raw / ".complete").exists():
        generate(raw, "mimic3", cfg.synth.admissions, seed=seed, note_fraction=cfg.synth.note_fraction)
        (raw / ".complete").touch()
    if not (out / "manifest.json").is_file():
        prepare_cohort(raw, out, cfg.prepare.model_copy(update={"source": "mimic3"}), overwrite=True)
    return out


def labs_run(cohort_dir: Path, cfg: MedfuseConfig) -> Path:
    from medfuse.labs import pretrain

    run = cohort_dir.parent / "labs"
    if not (run / "config.json").is_file():
        log("pretrain-labs (the notes-only rows ignore it; load_fusion_data needs one)")
        pretrain(cohort_dir, run, cfg.labs)
    return run


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    from medfuse.trainer import macro_auprc

    return {"macro_auprc": round(float(macro_auprc(y, p)), 4),
            "macro_f1_at_0.5": round(float(f1_score(y.astype(int), (p >= 0.5).astype(int), average="macro",
                                                    zero_division=0)), 4)}


def notes_mlp(cohort_dir: Path, labs: Path, notes: Path, cfg: MedfuseConfig, split: str, out: Path) -> dict:
    """compare's "Note embedding + MLP (notes)" row: kind notes_only, demo settings, seeds 0-2."""
    from medfuse.torch_utils import resolve_device
    from medfuse.training.fusion import fit, load_net, predict
    from medfuse.training.inputs import load_fusion_data

    data = load_fusion_data(cohort_dir, labs, notes)
    rows = data.rows(split)
    runs = []
    for seed in SEEDS:
        tcfg = cfg.train.model_validate({**cfg.train.model_dump(), "kind": "notes_only", "seed": seed})
        run = out / f"mlp-seed{seed}"
        fit(data, run, tcfg)
        device = resolve_device(tcfg.device)
        runs.append(scores(data.y[rows], predict(load_net(run).to(device), data, rows, device)))
    auprc = [r["macro_auprc"] for r in runs]
    return {"per_seed": runs, "macro_auprc_mean": round(float(np.mean(auprc)), 4),
            "macro_auprc_sd": round(float(np.std(auprc)), 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(COHORT_SEED), required=True)
    ap.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    ap.add_argument("--minutes", type=float, default=10.0, help="fine-tuning budget (notes.max_minutes; 0 = none)")
    ap.add_argument("--out", type=Path, default=RESULTS / "finetune.json")
    ap.add_argument("--reuse", action="store_true", help="score the setting's finished fine-tuning run again")
    args = ap.parse_args(argv)

    import torch

    from medfuse.data import Cohort
    from medfuse.notes.embeddings import embed_cohort
    from medfuse.notes.finetune import finetune_notes, head_probabilities
    from medfuse.notes.text import build_texts
    from medfuse.runs.baselines import tfidf_logreg

    cfg = config()
    split = SCORED_SPLIT[args.mode]
    cohort_dir = cohort(cfg, COHORT_SEED[args.mode])
    labs = labs_run(cohort_dir, cfg)
    c = Cohort(cohort_dir)
    rows = np.flatnonzero(c.split == split)
    y = c.labels()
    nt = build_texts(c, cfg.notes.template)
    work = cohort_dir.parent / args.setting
    ft_cfg = cfg.notes.model_copy(update={**SETTINGS[args.setting], "max_minutes": args.minutes})

    result: dict = {"mode": args.mode, "setting": args.setting, "overrides": SETTINGS[args.setting],
                    "cohort": f"synthetic seed {COHORT_SEED[args.mode]}, {len(c.split)} admissions (mimic3)",
                    "scored_split": split, "scored_admissions": len(rows), "budget_minutes": args.minutes,
                    "machine": {**machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "cpu": platform.processor() or platform.machine()},
                    "load_average_start": os.getloadavg()}
    log(f"frozen note vectors ({cfg.notes.unit})")
    frozen = embed_cohort(cohort_dir, cohort_dir.parent / "notes-frozen", cfg.notes)
    done = work / "ft" / "finetune_config.json"
    if args.reuse and done.is_file():  # a finished fine-tuning run of this setting: score it again
        meta = json.loads(done.read_text())
    else:
        log(f"fine-tune: {args.setting}, budget {args.minutes} min")
        cpu0 = time.process_time()
        meta = finetune_notes(cohort_dir, work / "ft", ft_cfg)
        meta["cpu_seconds"] = round(time.process_time() - cpu0, 1)  # / threads = wall time on idle cores
        done.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    result["finetune"] = {"seconds": meta["seconds"], "cpu_seconds": meta.get("cpu_seconds"),
                          "history": meta["history"],
                          "best_epoch": meta["best_epoch"], "best_val_macro_auprc": meta.get("best_val_macro_auprc"),
                          "train_admissions": meta["train_admissions"]}
    log(f"  {result['finetune']['seconds']} s, best epoch {meta['best_epoch']}: {meta['history']}")
    t0 = time.perf_counter()
    tuned = embed_cohort(cohort_dir, work / "notes-ft", ft_cfg, adapter=work / "ft")
    result["embed_adapter_seconds"] = round(time.perf_counter() - t0, 1)
    result["embed_frozen_seconds"] = frozen["seconds"]
    log("notes-only MLP, frozen vectors")
    result["frozen_mlp"] = notes_mlp(cohort_dir, labs, cohort_dir.parent / "notes-frozen", cfg, split,
                                     cohort_dir.parent / "frozen-mlp")
    log("notes-only MLP, fine-tuned vectors")
    result["finetuned_mlp"] = notes_mlp(cohort_dir, labs, work / "notes-ft", cfg, split, work / "ft-mlp")
    result["finetuned_head"] = scores(y[rows], head_probabilities(work / "ft", nt, c.label_names, ft_cfg)[rows])
    result["tfidf_logreg"] = scores(y[rows], tfidf_logreg(c, nt.texts, seed=0)[rows])
    result["delta_finetuned_minus_frozen_mlp"] = round(
        result["finetuned_mlp"]["macro_auprc_mean"] - result["frozen_mlp"]["macro_auprc_mean"], 4)
    result["tuned_dim"], result["frozen_dim"] = tuned["dim"], frozen["dim"]
    result["load_average_end"] = os.getloadavg()
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    log(json.dumps({k: result[k] for k in ("frozen_mlp", "finetuned_mlp", "finetuned_head", "tfidf_logreg",
                                           "delta_finetuned_minus_frozen_mlp")}, indent=1))
    all_results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    all_results[f"{args.mode}/{args.setting}"] = result
    args.out.write_text(json.dumps(all_results, indent=2) + "\n")


if __name__ == "__main__":
    main()
