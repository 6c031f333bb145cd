"""The ``medfuse`` command line: a thin layer over the Python API.

Heavy libraries (torch, transformers, duckdb) are imported inside the commands so ``--help`` is fast.
Every option left unset falls back to the ``--config`` file, then to ``configs/default.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="medfuse: predict diseases from lab tests and clinical notes (MEDFuse).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see configs/default.toml).")]


def _fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _config(path: Path | None, **overrides):
    from medfuse.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as e:
        _fail(str(e))


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the raw MIMIC-style files (or the MEDS dataset) into.")],
    format: Annotated[str | None, typer.Option(
        "--format", "-f", help="mimic3 or mimic4 file layout, or meds (the mimic4 hospital as a MEDS dataset).")] = None,
    admissions: Annotated[int | None, typer.Option("--admissions", "-n", help="Number of admissions.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a synthetic hospital in the exact file layout of MIMIC-III or MIMIC-IV, or as a MEDS dataset."""
    from medfuse.data.raw import InputError
    from medfuse.data.synth import generate
    from medfuse.data.synth.meds import generate_meds
    from medfuse.progress import stage_progress

    cfg = _config(config, synth={"format": format, "admissions": admissions, "seed": seed}).synth
    write = generate_meds if cfg.format == "meds" else lambda out, *a, **k: generate(out, cfg.format, *a, **k)
    try:
        with stage_progress() as progress:
            summary = write(out, cfg.admissions, seed=cfg.seed, note_fraction=cfg.note_fraction, progress=progress)
    except InputError as e:
        _fail(str(e))
    from medfuse.console import print_mapping

    print_mapping(f"synthetic {cfg.format} data in {out}", summary)


@app.command()
def prepare(
    raw: Annotated[Path, typer.Argument(help="Folder with the raw MIMIC files, or a MEDS dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cohort folder to create.")],
    source: Annotated[str | None, typer.Option(
        "--source", "-s", help="mimic3, mimic4 or meds ([prepare.meds] maps its codes; docs/meds.md).")] = None,
    diseases: Annotated[Path | None, typer.Option(help="Diseases TOML (default: configs/diseases.toml).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the patient-level split.")] = None,
    notes_dir: Annotated[Path | None, typer.Option(
        help="MIMIC-IV-Note folder (holds note/discharge.csv.gz) when it is not under RAW.")] = None,
    window_hours: Annotated[float | None, typer.Option(
        help="Use labs charted up to this many hours after admission (0 = the whole stay).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing cohort folder.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Build a leakage-safe cohort (Parquet + manifest.json) from raw MIMIC-III/IV files or a MEDS dataset."""
    from medfuse.console import print_cohort_summary
    from medfuse.data.prepare import InputError, prepare_cohort
    from medfuse.progress import stage_progress

    cfg = _config(config, prepare={"source": source, "diseases": str(diseases) if diseases else None, "seed": seed,
                                   "notes_dir": str(notes_dir) if notes_dir else None, "window_hours": window_hours})
    try:
        with stage_progress() as progress:
            manifest = prepare_cohort(raw, out, cfg.prepare, overwrite=overwrite, progress=progress)
    except InputError as e:
        _fail(str(e))
    print_cohort_summary(out, manifest)


@app.command("audit-notes")
def audit_notes(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder made by `medfuse prepare`.")],
    all_headers: Annotated[bool, typer.Option("--all", help="Show every header in the census, not the top 40.")] = False,
) -> None:
    """Print the note-header census: every section header seen, its count and whether it was kept or dropped."""
    from rich.console import Console
    from rich.table import Table

    from medfuse.data.audit import audit_notes as read_audit

    try:
        audit = read_audit(cohort)
    except FileNotFoundError as e:
        _fail(str(e))
    console = Console()
    census = audit.census
    if census is None:
        console.print(f"{cohort}: no discharge summaries were sectioned (notes {audit.notes_status})")
        return
    table = Table(title=f"note headers in {cohort}")
    for name, justify in (("header", "left"), ("count", "right"), ("action", "left")):
        table.add_column(name, justify=justify)
    rows = audit.rows if all_headers else audit.rows[:40]
    for header, count, action in rows:
        table.add_row(header, f"{count:,}", action, style="green" if action.startswith("kept") else None)
    console.print(table)
    more, rare = len(audit.rows) - len(rows), census["other_headers"]
    console.print(
        f"notes read {audit.notes_read:,}, sectioned {census['notes_sectioned']:,}, without an allowed section "
        f"{census['notes_without_allowed_section']:,}; headers kept {census['kept']:,}, dropped {census['dropped']:,}, "
        f"distinct {census['distinct_headers']:,}" + (f"; {more:,} more with --all" if more else "")
        + (f"; {rare['distinct']:,} rarer headers ({rare['count']:,} seen) are not kept in the manifest"
           if rare["distinct"] else ""), highlight=False)


@app.command("embed-notes")
def embed_notes(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder made by `medfuse prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for note_embeddings.parquet.")],
    model: Annotated[str | None, typer.Option(help="'default' (all-MiniLM-L6-v2) or a local HF model folder.")] = None,
    adapter: Annotated[Path | None, typer.Option(help="A `finetune-notes` run folder to embed with.")] = None,
    pooling: Annotated[str | None, typer.Option(help="auto, mean or last.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per window (0 = the model's limit).")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per forward pass (0 = auto).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help="Use the embedding cache.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Embed the note + abnormal-lab text of every admission of every split with a language model."""
    from medfuse import distributed
    from medfuse.console import print_mapping
    from medfuse.notes.embeddings import embed_cohort

    cfg = _config(config, notes={"model": model, "pooling": pooling, "max_length": max_length,
                                 "batch_tokens": batch_tokens, "device": device, "cache": cache}).notes
    with distributed.session(cfg.device):  # under torchrun: the texts to compute are shared out over the ranks
        try:
            with _stage_progress() as progress:
                summary = embed_cohort(cohort, out, cfg, model=model if adapter else cfg.model, adapter=adapter,
                                       progress=progress)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        if distributed.is_main():
            print_mapping(f"note embeddings in {out}", {
                k: summary[k] for k in ("model", "unit", "pooling", "max_length", "dim", "admissions", "embedded",
                                        "missing", "cached", "computed", "lines", "unique_lines", "long_texts",
                                        "device", "seconds")
                if k in summary})


@app.command("finetune-notes")
def finetune_notes(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder made by `medfuse prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for the LoRA adapter and head.")],
    model: Annotated[str | None, typer.Option(help="'default' or a local HF model folder.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping on val macro-AUPRC).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of the LoRA weights.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune a note model with LoRA + a linear multi-label head on the training split."""
    from medfuse.console import print_mapping
    from medfuse.notes.finetune import finetune_notes as run_finetune
    from medfuse.progress import stage_progress

    cfg = _config(config, notes={"model": model, "epochs": epochs, "lr": lr, "lora_rank": rank,
                                 "device": device}).notes
    try:
        with stage_progress() as progress:
            meta = run_finetune(cohort, out, cfg, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    f1 = meta["best_val_macro_f1"]
    print_mapping(f"LoRA fine-tuning in {out}", {
        "base model": meta["base_model"], "family": meta["family"], "pooling": meta["pooling"],
        "target modules": ", ".join(meta["lora"]["target_modules"]), "train admissions": meta["train_admissions"],
        "epochs run": len(meta["history"]), "best epoch": meta["best_epoch"],
        "best val macro-F1": "-" if f1 is None else f"{f1:.4f}", "seconds": meta["seconds"]})


@app.command("pretrain-labs")
def pretrain_labs(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder made by `medfuse prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for weights, config, lab vocabulary, history.")],
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping on val reconstruction).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation, shuffling and masking.")] = None,
    mask_ratio: Annotated[float | None, typer.Option(
        help="Share of observed values hidden per step (0.75 for the embedder; 0.3 imputes better).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from OUT/checkpoint.safetensors.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Pre-train the masked lab-test model (MLTM), the lab embedder and imputer, on the training split."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from medfuse import distributed
    from medfuse.console import print_mapping
    from medfuse.data.cohort import Cohort
    from medfuse.labs import pretrain

    cfg = _config(config, labs={"epochs": epochs, "seed": seed, "mask_ratio": mask_ratio}).labs
    try:
        data = Cohort(cohort)
    except FileNotFoundError as e:
        _fail(str(e))
    columns = (TextColumn("{task.description:<20}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[metrics]}"), TimeElapsedColumn())
    with distributed.session(cfg.device), Progress(*columns, disable=not distributed.is_main()) as bar:
        task = bar.add_task("MLTM", total=1.0, metrics="")

        def progress(stage: str, fraction: float, info: str = "") -> None:
            bar.update(task, description=stage, completed=fraction, metrics=info)

        try:
            result = pretrain(data, out, cfg, progress=progress, resume=resume)
        except ValueError as e:
            _fail(str(e))
        main = distributed.is_main()
    if not main:
        return
    print_mapping(f"MLTM lab embedder in {out}", {
        "best val reconstruction MSE": f"{result.best_val_loss:.4f} (epoch {result.best_epoch})",
        "initial val MSE": f"{result.history['initial_val_loss']:.4f}", "epochs run": result.epochs_run,
        "stopped early": result.stopped_early, "train admissions": result.train_admissions,
        "admissions / s": f"{result.admissions_per_second:,.0f}", "peak memory": f"{result.peak_memory_mb:,.0f} MB",
        "device": result.device, "seconds": f"{result.seconds:.1f}", "run folder": str(out)})


@app.command()
def train(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder from `medfuse prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to create or continue.")],
    kind: Annotated[str | None, typer.Option(help="medfuse, concat, tfn, notes_only or labs_only.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping on val macro-AUPRC).")] = None,
    mi_weight: Annotated[float | None, typer.Option("--lambda", help="Weight of the vCLUB MI loss.")] = None,
    labs_run: Annotated[Path | None, typer.Option(help="Reuse this pretrain-labs run.")] = None,
    notes_run: Annotated[Path | None, typer.Option(help="Reuse this embed-notes run.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    finetune_notes: Annotated[bool | None, typer.Option(
        "--finetune-notes/--frozen-notes", help="LoRA-fine-tune the note model on the training split first.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN/checkpoint.safetensors.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train MEDFuse (pretraining labs and embedding notes first when their runs are missing)."""
    from medfuse import distributed
    from medfuse.console import print_mapping
    from medfuse.runs.stages import train_run

    cfg = _config(config, train={"kind": kind, "epochs": epochs, "mi_weight": mi_weight, "seed": seed,
                                 "labs_run": str(labs_run) if labs_run else None,
                                 "notes_run": str(notes_run) if notes_run else None},
                  notes={"finetune": finetune_notes})
    _require_cohort(cohort)
    with distributed.session(cfg.train.device):  # under torchrun: DistributedDataParallel, rank 0 writes
        with _stage_progress() as progress:
            summary = train_run(cohort, out, cfg, resume=resume, progress=progress)
        if distributed.is_main():
            print_mapping(f"trained {cfg.train.kind} in {out}", summary)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder from `medfuse train`.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n_resamples: Annotated[int | None, typer.Option(help="Patient-level bootstrap resamples.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write RUN/metrics_<split>.json (with bootstrap 95% intervals) and RUN/predictions_<split>.parquet."""
    from medfuse.console import print_metrics
    from medfuse.progress import stage_progress
    from medfuse.runs.layout import RunFolder
    from medfuse.runs.stages import evaluate_run

    cfg = _config(config, evaluate={"n_resamples": n_resamples})
    try:
        RunFolder(run).info()
    except FileNotFoundError as e:
        _fail(str(e))
    with stage_progress() as progress:
        metrics = evaluate_run(run, split, cfg.evaluate.n_resamples, progress=progress)
    print_metrics(metrics)


@app.command()
def compare(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder from `medfuse prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the comparison.")],
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    labs_run: Annotated[Path | None, typer.Option(help="Reuse this pretrain-labs run.")] = None,
    notes_run: Annotated[Path | None, typer.Option(help="Reuse this embed-notes run.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Train every baseline, ablation and lambda of the sweep; write compare.json and compare.md."""
    from medfuse.console import print_comparison
    from medfuse.progress import stage_progress
    from medfuse.runs.compare import compare as run_compare

    cfg = _config(config, compare={"seeds": [int(s) for s in seeds.split(",")] if seeds else None},
                  train={"labs_run": str(labs_run) if labs_run else None,
                         "notes_run": str(notes_run) if notes_run else None})
    _require_cohort(cohort)
    with stage_progress() as progress:
        table = run_compare(cohort, out, cfg, progress=progress)
    print_comparison(table)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A trained and evaluated run folder.")],
    compare_dir: Annotated[Path | None, typer.Option("--compare", help="A `medfuse compare` folder to include.")] = None,
    split: Annotated[str, typer.Option(help="The evaluated split to show.")] = "test",
) -> None:
    """Write RUN/report.html: cohort, metrics with intervals, comparison, curves, configuration."""
    from medfuse.runs.layout import RunFolder
    from medfuse.runs.report import build_report_with_explanations as build_report

    if not RunFolder(run).metrics(split).exists():
        _fail(f"{run}: no metrics_{split}.json; run `medfuse evaluate {run} --split {split}` first")
    typer.echo(build_report(run, compare_dir, split))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A trained run folder (`medfuse train`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model bundle folder to create.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle folder.")] = False,
) -> None:
    """Write a self-contained model bundle: weights, vocabulary, thresholds, metrics and a model card."""
    from medfuse.console import print_model_card
    from medfuse.runs.export import export_bundle
    from medfuse.serving.bundle import BundleError, read_bundle
    from medfuse.serving.card import card

    try:
        path = export_bundle(run, out, overwrite=overwrite)
    except (BundleError, FileNotFoundError) as e:
        _fail(str(e))
    print_model_card(card(read_bundle(path, verify=False)), path)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="A model bundle folder (`medfuse export`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole model card as JSON.")] = False,
) -> None:
    """Print a model bundle's card: labels, training data, metrics with intervals, settings."""
    import json

    from medfuse.console import print_model_card
    from medfuse.serving.bundle import BundleError, read_bundle
    from medfuse.serving.card import card

    try:
        model_card = card(read_bundle(model))
    except BundleError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(model_card, indent=2, default=str))
    else:
        print_model_card(model_card, model)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A model bundle folder (`medfuse export`).")],
    input: Annotated[Path, typer.Option(
        "--input", "-i", help="patients.jsonl, patients.parquet, a cohort folder or a MEDS dataset.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Predictions file to write, .parquet or .csv (a folder with --format meds).")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="parquet, or meds: one MEDS-Evaluation prediction file per label (MEDS input; "
        "docs/meds.md).")] = "parquet",
    explain: Annotated[bool, typer.Option(help="Add the labs and note lines behind each positive label.")] = False,
    split: Annotated[str | None, typer.Option(help="With a cohort folder: only this split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per prediction chunk (memory is bounded by it).")] = 256,
    cache_dir: Annotated[Path | None, typer.Option(help="Line-embedding cache folder (default: the user cache).")] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the line-embedding cache.")] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    config: ConfigOpt = None,
) -> None:
    """Predict new patients (docs/predict.md): one output row per record; unreadable records go to errors.jsonl.

    Exit code 0: every record predicted; 3: predictions written, but some records were refused (errors.jsonl);
    2: nothing written (bad input, model or option)."""
    from medfuse.console import print_mapping
    from medfuse.progress import stage_progress
    from medfuse.serving.batch import predict_file
    from medfuse.serving.bundle import BundleError
    from medfuse.serving.predict import Predictor
    from medfuse.torch_utils import available_device

    try:
        available_device(device)
        predictor = Predictor.load(model, device=device, cache_dir=cache_dir if cache else False)
        meds = _config(config).prepare.meds if config else predictor.meds_config()
        with stage_progress() as progress:
            s = predict_file(predictor, input, out, explain=explain, batch_size=batch_size, split=split,
                             progress=progress, format=format, meds=meds)
    except (BundleError, FileNotFoundError, ValueError) as e:  # InputError is a ValueError
        _fail(str(e))
    print_mapping(f"predictions in {s.output}", {
        "records read": f"{s.read:,}", "predicted": f"{s.predicted:,}", "with warnings": f"{s.with_warnings:,}",
        "unreadable (errors.jsonl)": f"{s.errors:,}" + (f" -> {s.errors_file}" if s.errors_file else ""),
        "positive decisions": ", ".join(f"{k} {v:,}" for k, v in s.positives.items()),
        "seconds": f"{s.seconds:.1f}", "records / s": f"{s.per_second:.1f}"})
    if s.errors:  # exit code 3: predictions written, but some records were refused (docs/predict.md)
        raise typer.Exit(3)


@app.command()
def records(
    raw: Annotated[Path, typer.Argument(help="Folder with raw MIMIC-style files (e.g. from `medfuse synth`), "
                                              "or a MEDS dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="patients.jsonl to write.")],
    source: Annotated[str, typer.Option("--source", "-s", help="mimic3, mimic4 or meds.")] = "mimic3",
    limit: Annotated[int | None, typer.Option(help="At most this many admissions.")] = None,
    notes_dir: Annotated[Path | None, typer.Option(
        help="The notes' own folder (MIMIC-IV-Note is downloaded apart from MIMIC-IV), as for `prepare`.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Turn raw MIMIC-style files or a MEDS dataset into patient records (JSON Lines) for `predict` and the service."""
    import json

    from medfuse.data.raw import InputError
    from medfuse.serving.raw_records import RawRecords

    if source not in ("mimic3", "mimic4", "meds"):
        _fail(f"--source {source!r}: expected mimic3, mimic4 or meds")
    meds = _config(config).prepare.meds
    try:
        with RawRecords(raw, source, limit=limit, meds=meds, notes_dir=notes_dir) as read:
            rows = [record for chunk in read.chunks() for record in chunk.records]
            notes_found = read.adapter.file("notes") is not None
    except InputError as e:
        _fail(str(e))
    if not notes_found:
        hint = " (MIMIC-IV-Note ships apart: pass its folder with --notes-dir)" if source == "mimic4" else ""
        typer.echo(f"warning: no notes table in {notes_dir or raw}: the records carry labs only{hint}", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    typer.echo(f"{len(rows):,} records in {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("runs/demo"),
    admissions: Annotated[int | None, typer.Option(help="Synthetic admissions.")] = None,
    config: ConfigOpt = None,
) -> None:
    """The whole pipeline on synthetic data, offline: synth, prepare, pretrain-labs, embed-notes,
    train, evaluate, compare, report, then export the model and predict 3 new patients with it."""
    from medfuse.console import print_comparison, print_metrics, print_predictions
    from medfuse.demo import demo as run_demo
    from medfuse.progress import stage_progress

    cfg = _config(config or _demo_config(), synth={"admissions": admissions})
    with stage_progress() as progress:
        result = run_demo(out, cfg, progress=progress)
    print_metrics(result["metrics"])
    print_comparison(result["compare"])
    print_predictions(result["new_patients"])
    typer.echo(f"model bundle: {out / 'run' / 'model'} (medfuse info / predict / serve)")
    typer.echo(f"report: {result['report']}")


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="A model bundle folder (from `medfuse export`).")],
    host: Annotated[str | None, typer.Option(help="Address to bind; default 127.0.0.1 (loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; 0 = any free port (the log says which).")] = None,
    allow_insecure: Annotated[bool, typer.Option(
        "--allow-insecure", help="Bind a non-loopback host although MEDFUSE_API_TOKEN is not set.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, GET /v1/model, /healthz, /readyz, /docs (docs/serving.md)."""
    from medfuse.serving.service import TOKEN_ENV, bind_error
    from medfuse.serving.service import serve as run_service

    cfg = _config(config, serve={"host": host, "port": port}).serve
    token = os.environ.get(TOKEN_ENV) or None
    if problem := bind_error(cfg.host, token, allow_insecure):
        _fail(problem)
    if not bundle.is_dir():
        _fail(f"{bundle}: not a model bundle folder; run `medfuse export` first")
    from medfuse.torch_utils import available_device

    try:
        available_device(cfg.device)
    except ValueError as e:
        _fail(f"[serve] {e}")
    raise typer.Exit(run_service(bundle, cfg, token))


def _demo_config() -> Path:
    from importlib import resources

    return Path(str(resources.files("medfuse.resources").joinpath("demo.toml")))


def _stage_progress():
    """:func:`medfuse.progress.stage_progress` on rank 0; the other ranks of a torchrun job report nothing."""
    from contextlib import nullcontext

    from medfuse import distributed
    from medfuse.progress import no_progress, stage_progress

    return stage_progress() if distributed.is_main() else nullcontext(no_progress)


def _require_cohort(path: Path) -> None:
    if not (path / "manifest.json").exists():
        _fail(f"{path}: not a cohort folder (no manifest.json); run `medfuse prepare` first")


if __name__ == "__main__":
    app()
