"""Benchmark the patient-level bootstrap: 1,000 resamples of 12,000 admissions x 10 labels.

`medfuse evaluate` was designed to spend at most 20-30 s on this size. Prints and writes
benchmarks/results/bootstrap.json (seconds per run, their best, and the budget ratio).
"""

from __future__ import annotations

import time

import numpy as np
from _common import save

from medfuse.evaluation.metrics import bootstrap_metrics

BUDGET_S = 30.0


def main() -> None:
    rng = np.random.default_rng(11)
    n, labels = 12000, 10
    y = (rng.random((n, labels)) < np.linspace(0.03, 0.45, labels)).astype(int)
    p = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, labels)) + 1.6 * y - 1.4))), 3)
    groups = np.random.default_rng(0).integers(0, 5000, n)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        bootstrap_metrics(y, p, 0.5, groups, n_resamples=1000)
        runs.append(round(time.perf_counter() - t0, 2))
    best = min(runs)
    path = save("bootstrap", {"admissions": n, "labels": labels, "patients": len(np.unique(groups)),
                              "n_resamples": 1000, "runs_seconds": runs, "best_seconds": best,
                              "budget_seconds": BUDGET_S, "ratio_to_budget": round(best / BUDGET_S, 3)})
    print(f"1,000 resamples of {n:,} admissions x {labels} labels: {runs} s (best {best} s, "
          f"{best / BUDGET_S:.2f} of the {BUDGET_S:.0f} s budget)\n{path}")


if __name__ == "__main__":
    main()
