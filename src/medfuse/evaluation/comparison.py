"""The comparison table (``compare.json``) as text: Markdown, the Δ and tuning cells of the report's table."""

from __future__ import annotations

HEADLINE = ("macro_f1", "micro_f1", "macro_auprc", "macro_auroc")
BASELINE_GROUPS = ("labs only", "notes only", "fusion")  # rows MEDFuse's "vs best baseline" is taken among


def best_baseline(table: dict) -> dict | None:
    """The row of :data:`BASELINE_GROUPS` with the best mean test macro-AUPRC (``None`` without one)."""
    rows = [r for r in table["models"] if r["group"] in BASELINE_GROUPS]
    return max(rows, key=lambda r: r["summary"]["macro_auprc"]["mean"]) if rows else None


def delta_text(d: dict | None) -> str:
    """``"+0.003 [-0.010, +0.020], p = 0.230"`` for a paired difference; ``"–"`` when there is none."""
    if not d or d.get("diff") is None or d.get("low") is None:
        return "–"
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], p = {d['p_one_sided']:.3f}"


def delta_cells(row: dict, table: dict, metric: str) -> str:
    """A row's Δ cell: MEDFuse minus the row, or for MEDFuse itself, MEDFuse minus the best baseline."""
    if row["name"] != "MEDFuse":
        return delta_text((row.get("vs_medfuse") or {}).get(metric))
    best = best_baseline(table)
    d = (best.get("vs_medfuse") or {}).get(metric) if best else None
    return f"vs {best['name']}: {delta_text(d)}" if d and d.get("low") is not None else "–"


def settings_text(settings: dict) -> str:
    """``{"dropout": 0.3}`` -> ``"dropout=0.3"``."""
    return ", ".join(f"{k}={v:g}" for k, v in settings.items()) or "defaults"


def tuned_text(row: dict) -> str:
    """What a comparison row's hyper-parameters are: its validation choice, MEDFuse's, or the classical search."""
    t = row.get("tuning")
    if not t:
        return "own validation search"
    return settings_text(t["settings"]) + (f" (as {t['inherited_from']})" if t["inherited_from"] else "")


def comparison_markdown(table: dict) -> str:
    """The comparison as a Markdown table: mean ± sd over seeds, seed 0's bootstrap 95% interval, the paired
    Δ against MEDFuse (when the table has them) and the settings chosen on validation."""
    paired = any("vs_medfuse" in r for r in table["models"])
    extra = ["Δ macro-AUPRC, MEDFuse − row [95% CI], p", "Δ macro-F1, MEDFuse − row [95% CI], p"] if paired else []
    lines = ["| model | group | " + " | ".join([*HEADLINE, *extra]) + " | tuned on validation |",
             "|---|---|" + "---|" * (len(HEADLINE) + len(extra) + 1)]
    for r in table["models"]:
        cells = []
        for m in HEADLINE:
            s, b = r["summary"][m], r["bootstrap_seed0"].get(m) or {}
            ci = f" [{b['low']:.3f}, {b['high']:.3f}]" if b else ""
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}{ci}")
        if paired:
            cells += [delta_cells(r, table, m) for m in ("macro_auprc", "macro_f1")]
        lines.append(f"| {r['name']} | {r['group']} | " + " | ".join(cells) + f" | {tuned_text(r)} |")
    seeds = table["seeds"]
    lines += ["", (f"Test split, mean ± sd over {len(seeds)} training seed{'s' * (len(seeds) > 1)} "
                   f"({', '.join(map(str, seeds))}); bracketed: seed {seeds[0]}'s patient-level bootstrap 95% "
                   f"interval ({table['n_resamples']} resamples).")]
    if paired:
        lines += ["", (f"Δ: paired patient-level bootstrap of the first seed's test predictions "
                       f"({table['n_resamples']} resamples, the same for every row); p = one-sided "
                       "(1 + #{Δ ≤ 0}) / (1 + resamples). MEDFuse's row: MEDFuse minus the best baseline "
                       "(labs only, notes only or fusion row with the best mean macro-AUPRC).")]
    return "\n".join(lines) + "\n"
