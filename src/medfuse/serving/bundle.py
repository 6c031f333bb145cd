"""The model bundle: one self-contained, versioned folder that holds everything prediction needs.

``medfuse export RUN --out MODEL`` writes it from a trained and evaluated run (:mod:`medfuse.runs.export`)::

    MODEL/bundle.json                     versions, hashes, labels and definitions, thresholds, settings,
                                          validation and test metrics, the text model's identity
    MODEL/README.md                       the model card (Hugging Face style)
    MODEL/vocabulary/lab_tests.parquet    lab tests: itemid, label, unit, train-split median and scale
    MODEL/labs/                           the MLTM encoder (config.json, vocab.json, model.safetensors)
    MODEL/notes/                          embed_config.json, line_codebook.safetensors, finetune/ (LoRA adapter, head)
    MODEL/fusion/                         model.safetensors, model_config.json (settings and input sizes),
                                          note_standardisation.safetensors, thresholds.json

Loading reads JSON, Parquet and safetensors only (nothing is unpickled) and never touches the cohort or
the runs the bundle came from. docs/predict.md describes the format.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FORMAT = "medfuse-bundle"
FORMAT_VERSION = 2  # 2: fusion/ carries its input sizes and note standardisation (medfuse 0.2)
BUNDLE_FILE = "bundle.json"
CARD_FILE = "README.md"


class BundleError(ValueError):
    """A folder that is not a usable model bundle; the message says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bundle(path: str | Path, verify: bool = True) -> dict:
    """``bundle.json`` of a bundle folder, after checking the format and (with ``verify``) every file's hash."""
    path = Path(path)
    file = path / BUNDLE_FILE
    if not file.is_file():
        raise BundleError(f"{path}: not a medfuse model bundle (no {BUNDLE_FILE}); make one with `medfuse export`")
    try:
        bundle = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{file}: not valid JSON ({e})") from None
    if bundle.get("format") != FORMAT:
        raise BundleError(f"{file}: format {bundle.get('format')!r} is not {FORMAT}")
    if bundle.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{file}: {FORMAT} format v{bundle.get('format_version')} (medfuse "
                          f"{bundle.get('medfuse_version')}); this medfuse reads v{FORMAT_VERSION}: export the model again "
                          "from its run with this version")
    if verify:
        for rel, digest in bundle["files"].items():
            f = path / rel
            if not f.is_file():
                raise BundleError(f"{f}: missing from the bundle")
            if sha256_file(f) != digest:
                raise BundleError(f"{f}: content differs from the hash in {BUNDLE_FILE} (modified or corrupt)")
    return bundle
