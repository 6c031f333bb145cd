"""Run the whole pipeline on the real public MIMIC-III and MIMIC-IV demo extracts (../shared/data).

prepare -> pretrain-labs -> embed-notes -> train -> evaluate with the default configuration (MEDFuse,
seed 0). The demos have no note text, so every admission takes the missing-note path (its abnormal-lab
text is still embedded). Writes benchmarks/results/real_demos.json with test metrics and their
patient-level bootstrap 95% intervals. Usage: python benchmarks/real_demos.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import ROOT, offline, save

DEMOS = {"mimic-iii-demo": "mimic3", "mimic-iv-demo": "mimic4"}
DESCRIPTION = ("medfuse prepare -> train (pretrain-labs, embed-notes) -> evaluate, default configuration (MEDFuse, "
               "seed 0), on the real public MIMIC demo extracts. They have no note text, so every admission takes the "
               "missing-note path (its abnormal-lab text is still embedded). Test split at the validation-tuned "
               "thresholds, with 95% patient-level bootstrap intervals. Tiny cohorts: a check of the real-data path, "
               "not a measure of quality.")


def main() -> None:
    offline()
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort
    from medfuse.evaluation.comparison import HEADLINE
    from medfuse.runs.compare import headline
    from medfuse.runs.stages import evaluate_run, train_run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    runs = {}
    try:
        for name, source in DEMOS.items():
            cfg = load_config(overrides={"prepare": {"source": source}, "notes": {"cache": False}})
            manifest = prepare_cohort(args.data / name, work / name / "cohort", cfg.prepare)
            summary = train_run(work / name / "cohort", work / name / "run", cfg)
            metrics = evaluate_run(work / name / "run", "test", cfg.evaluate.n_resamples)
            tuned = metrics["at_tuned_thresholds"]
            runs[name] = {
                "admissions": manifest["split_sizes"]["all"]["admissions"],
                "test_admissions": metrics["n"],
                "test_patients": manifest["split_sizes"]["test"]["patients"],
                "best_epoch": summary["best_epoch"],
                **{m: {"value": value, **tuned["bootstrap"][m]} for m, value in headline(tuned).items()},
                "subgroups": {g: s["n"] for g, s in metrics["subgroups"]["modality"].items()},
            }
            print(name, {m: round(runs[name][m]["value"], 3) for m in HEADLINE})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(save("real_demos", {"description": DESCRIPTION, "runs": runs}))


if __name__ == "__main__":
    main()
