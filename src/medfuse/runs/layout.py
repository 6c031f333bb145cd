"""The run folder, named in one place. ``medfuse train COHORT --out RUN`` writes::

    RUN/run.json                      cohort, lab and note runs used, the full configuration, world size, device
    RUN/labs/                         the MLTM run (pretrain-labs), unless train.labs_run names one
    RUN/finetune/                     the LoRA run (finetune-notes), with notes.finetune
    RUN/notes/                        the note-embedding run (embed-notes), unless train.notes_run names one
    RUN/inputs/                       the fusion inputs (.npy files, inputs.json), rebuilt when a run they came from changes
    RUN/model.safetensors             best weights
    RUN/model_config.json             the fusion settings and the input sizes the weights are built for
    RUN/note_standardisation.safetensors  the training split's note statistics
    RUN/checkpoint.safetensors        the last epoch's full state (``--resume``)
    RUN/history.json                  per-epoch losses and validation macro-AUPRC
    RUN/thresholds.json               per-label decision thresholds tuned on validation
    RUN/predictions_<split>.parquet, RUN/metrics_<split>.json   written by evaluate
    RUN/report.html                   written by report
    RUN/model/                        the run's model bundle, where the demo exports it
    COMPARE/compare.json, COMPARE/<row>/...   written by compare

The stage runs inside keep their own files (:mod:`medfuse.labs.pretraining`, :mod:`medfuse.notes.embeddings`,
:mod:`medfuse.notes.finetune`); this module names them for everything that reads a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medfuse.labs.pretraining import CONFIG_FILE as LABS_CONFIG_FILE
from medfuse.labs.pretraining import HISTORY_FILE as LABS_HISTORY_FILE
from medfuse.labs.pretraining import MODEL_FILE as LABS_MODEL_FILE
from medfuse.labs.pretraining import VOCAB_FILE as LABS_VOCAB_FILE
from medfuse.notes.embeddings import CONFIG_FILE as EMBED_CONFIG_FILE
from medfuse.notes.embeddings import EMBEDDINGS_FILE
from medfuse.notes.finetune import FINETUNE_CONFIG
from medfuse.notes.lines import CODEBOOK_FILE
from medfuse.training.fusion import (
    HISTORY_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    STANDARDISATION_FILE,
)
from medfuse.training.inputs import STORE_DIR

RUN_FILE = "run.json"
THRESHOLDS_FILE = "thresholds.json"
REPORT_FILE = "report.html"
COMPARE_FILE = "compare.json"
RECONSTRUCTION_FILE = "reconstruction.json"  # in the MLTM run: imputation error against simple imputers
LABS_FILES = (LABS_CONFIG_FILE, LABS_VOCAB_FILE, LABS_MODEL_FILE)  # what a model needs of an MLTM run
NOTES_FILES = (EMBED_CONFIG_FILE, CODEBOOK_FILE)  # what a model needs of a note-embedding run
FUSION_FILES = (MODEL_FILE, MODEL_CONFIG_FILE, STANDARDISATION_FILE, THRESHOLDS_FILE)  # and of the fusion run


@dataclass(frozen=True)
class RunFolder:
    """The paths of one training run (``medfuse train --out RUN``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def info_file(self) -> Path:
        return self.root / RUN_FILE

    def info(self) -> dict:
        """``run.json``: the cohort, the stage runs and the configuration of a trained run."""
        if not self.info_file.is_file() or not self.model.is_file():
            raise FileNotFoundError(f"{self.root}: not a trained run (no {MODEL_FILE} / {RUN_FILE}); "
                                    "run `medfuse train` first")
        return json.loads(self.info_file.read_text())

    @property
    def labs(self) -> Path:
        return self.root / "labs"

    @property
    def notes(self) -> Path:
        return self.root / "notes"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    @property
    def inputs(self) -> Path:
        return self.root / STORE_DIR

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def thresholds(self) -> Path:
        return self.root / THRESHOLDS_FILE

    @property
    def bundle(self) -> Path:
        """``RUN/model``: where ``medfuse demo`` exports the run's model bundle."""
        return self.root / "model"

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    def metrics(self, split: str) -> Path:
        return self.root / f"metrics_{split}.json"

    def predictions(self, split: str) -> Path:
        return self.root / f"predictions_{split}.parquet"


def labs_history(labs_run: Path) -> Path:
    return Path(labs_run) / LABS_HISTORY_FILE


def labs_reconstruction(labs_run: Path) -> Path:
    return Path(labs_run) / RECONSTRUCTION_FILE


def is_labs_run(path: Path) -> bool:
    return (Path(path) / LABS_MODEL_FILE).is_file()


def is_notes_run(path: Path) -> bool:
    return (Path(path) / EMBEDDINGS_FILE).is_file()


def is_finetune_run(path: Path) -> bool:
    return (Path(path) / FINETUNE_CONFIG).is_file()


def embed_config(notes_run: Path) -> dict:
    """A note-embedding run's ``embed_config.json``."""
    return json.loads((Path(notes_run) / EMBED_CONFIG_FILE).read_text())
