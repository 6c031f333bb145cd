"""medfuse.labs: Masked Lab-Test Modelling (MLTM), the lab embedder and imputer (docs/labs.md)."""

from medfuse.labs.embedder import LabEmbedder
from medfuse.labs.pretraining import PretrainResult, pretrain

__all__ = ["LabEmbedder", "PretrainResult", "pretrain"]
