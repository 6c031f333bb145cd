"""Evaluation: metrics with patient-level bootstrap intervals, decision thresholds, subgroups, plots and the
HTML report's sections. It reads no run folder (:mod:`medfuse.runs` does)."""
