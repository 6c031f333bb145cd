"""Shared fixtures: the real MIMIC demo extracts and cohorts prepared from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data() -> Path:
    """The public MIMIC-III / MIMIC-IV demo extracts (``../shared/data`` beside the checkout)."""
    path = Path(os.environ.get("MEDFUSE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "mimic-iii-demo").is_dir():
        raise RuntimeError(f"real demo data not found at {path}; set MEDFUSE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def mimic3_demo() -> Path:
    return shared_data() / "mimic-iii-demo"


@pytest.fixture(scope="session")
def mimic4_demo() -> Path:
    return shared_data() / "mimic-iv-demo"


@pytest.fixture(scope="session")
def mimic3_cohort(mimic3_demo, tmp_path_factory) -> Path:
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort

    out = tmp_path_factory.mktemp("cohorts") / "mimic3"
    prepare_cohort(mimic3_demo, out, load_config(overrides={"prepare": {"source": "mimic3"}}).prepare)
    return out


@pytest.fixture(scope="session")
def mimic4_cohort(mimic4_demo, tmp_path_factory) -> Path:
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort

    out = tmp_path_factory.mktemp("cohorts") / "mimic4"
    prepare_cohort(mimic4_demo, out, load_config(overrides={"prepare": {"source": "mimic4"}}).prepare)
    return out
