"""Terminal summaries (rich tables) printed by the CLI at the end of each command."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def print_mapping(title: str, values: dict) -> None:
    """A two-column key/value table."""
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in values.items():
        table.add_row(str(key), f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


def print_cohort_summary(out: Path, manifest: dict) -> None:
    """Split sizes, label prevalence and row accounting of a prepared cohort."""
    sizes, prev = manifest["split_sizes"], manifest["prevalence"]
    splits = [s for s in sizes if s != "all"]
    table = Table(title=f"cohort {out} ({manifest['source']}, notes: {manifest['notes_status']})",
                  title_justify="left")
    table.add_column("")
    for s in [*splits, "all"]:
        table.add_column(s, justify="right")
    table.add_row("patients", *[f"{sizes[s]['patients']:,}" for s in [*splits, "all"]])
    table.add_row("admissions", *[f"{sizes[s]['admissions']:,}" for s in [*splits, "all"]], end_section=True)
    for label in manifest["labels"]:
        table.add_row(label, *[f"{prev[s][label]:.1%}" for s in [*splits, "all"]])
    console.print(table)

    rows = Table(title="raw rows", title_justify="left")
    for col in ("table", "read", "used", "dropped (by reason)"):
        rows.add_column(col, justify="left" if col in ("table", "dropped (by reason)") else "right")
    for name, acc in manifest["tables"].items():
        dropped = ", ".join(f"{k} {v:,}" for k, v in acc["dropped"].items()) or "-"
        rows.add_row(name, f"{acc['read']:,}", f"{acc['used']:,}", dropped)
    console.print(rows)
    console.print(f"{len(manifest['outputs'])} tables written in {manifest['timings']['total']:.1f} s "
                  f"({manifest['outputs']['lab_tests.parquet']} lab tests selected)")


def print_metrics(metrics: dict) -> None:
    """Headline test metrics with their bootstrap 95% intervals, and the per-label table."""
    tuned = metrics["at_tuned_thresholds"]
    boot = tuned.get("bootstrap", {})

    def cell(key: str, value) -> str:
        b = boot.get(key) or {}
        ci = f" [{b['low']:.3f}, {b['high']:.3f}]" if b.get("low") is not None else ""
        return "-" if value is None else f"{value:.3f}{ci}"

    table = Table(title=f"{metrics['split']} split: {metrics['n']:,} admissions, thresholds tuned on val",
                  title_justify="left")
    for col in ("metric", "value [95% CI]"):
        table.add_column(col)
    for label, group, key in (("macro-F1", "macro", "f1"), ("micro-F1", "micro", "f1"),
                              ("macro-AUPRC", "macro", "auprc"), ("macro-AUROC", "macro", "auroc")):
        table.add_row(label, cell(f"{group}_{key}", tuned[group][key]))
    console.print(table)


def print_comparison(table: dict) -> None:
    """The comparison table: mean ± sd over seeds per model."""
    out = Table(title=f"test split, mean ± sd over seeds {table['seeds']}", title_justify="left")
    out.add_column("model")
    for m in ("macro-F1", "micro-F1", "macro-AUPRC", "macro-AUROC"):
        out.add_column(m, justify="right")
    for r in table["models"]:
        s = r["summary"]
        out.add_row(r["name"], *[f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"
                                 for k in ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")])
    console.print(out)


def print_predictions(results: list[dict], explained: int = 1) -> None:
    """New patients' positive labels with probabilities, and the explanation of the first ``explained``."""
    table = Table(title="new patients, predicted through the model bundle", title_justify="left")
    for name in ("id", "positive labels (probability)", "warnings"):
        table.add_column(name)
    for r in results:
        positive = [f"{n} {p:.2f}" for n, p in r["probabilities"].items() if r["decisions"][n]]
        table.add_row(str(r["id"]), ", ".join(positive) or "-", str(len(r["warnings"])))
    console.print(table)
    for r in results[:explained]:
        for label, e in list(r.get("explanations", {}).items())[:1]:
            console.print(f"why {label} for patient {r['id']} (p = {e['probability']:.2f}):", highlight=False)
            for lab in e.get("labs", [])[:3]:
                console.print(f"  lab  {lab['score']:+.3f}  {lab['label']} {lab['value']:.4g} {lab['unit']}",
                              highlight=False)
            for line in e.get("note_lines", [])[:3]:
                console.print(f"  note {line['score']:+.3f}  [{line['field']}] {line['text'].strip()[:90]}", highlight=False)


def print_model_card(card: dict, path: Path) -> None:
    """The terminal summary of a model bundle's card (``medfuse export`` / ``medfuse info``)."""
    from medfuse.serving.card import interval_text

    sizes = card["training_cohort"]["split_sizes"]
    tm = card["text_model"]
    print_mapping(f"model {card['model_version']} in {path}", {
        "model": card["model"]["kind"], "labels": ", ".join(card["labels"]),
        "text model": f"{tm['model']} ({tm['unit']}, {tm['pooling']} pooling)",
        "training cohort": f"{card['training_cohort']['source']}: " + ", ".join(
            f"{s} {sizes[s]['admissions']:,}" for s in ("train", "val", "test")),
        **{f"test {m}": interval_text(e) for m, e in card["metrics"]["test"]["headline"].items()},
        "prediction window": card["prediction_window"], "created": card["created"]})
