"""Data stage: raw MIMIC files and synthetic data -> a prepared cohort (see docs/data.md)."""

from medfuse.data.cohort import Cohort

__all__ = ["Cohort"]
