"""NoteEmbedder on tiny offline models: loading, poolings, decoder padding, windowing, cache, cohort output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfuse.notes import NoteEmbedder, embed_cohort, load_note_embeddings
from medfuse.notes.backbone import detect_family, load_backbone, resolve_model_path
from medfuse.notes.embed import tokenize_windows

F32 = "float32"  # exact comparisons with hand-made forward passes
LONG = ("history of present illness: 67 year old woman admitted with dyspnea, edema of the legs, "
        "elevated bnp and reduced ejection fraction; ") * 12


def _forward(bb, text: str):
    """Token states of one unpadded, untruncated sequence."""
    enc = bb.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return bb.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[0]


def test_load_by_path_and_family(tiny_bert, tiny_llama):
    bert, llama = load_backbone(tiny_bert, dtype=F32), load_backbone(tiny_llama, dtype=F32)
    assert (bert.family, llama.family) == ("encoder", "decoder")
    assert (bert.max_length, llama.max_length) == (64, 128)
    assert bert.hidden_size == llama.hidden_size == 32
    # Llama tokenizer has no pad token: EOS pads, on the right even though it was saved with left padding
    assert llama.tokenizer.pad_token == "</s>" and llama.tokenizer.padding_side == "right"
    assert NoteEmbedder(tiny_bert, cache_dir=False, dtype=F32).pooling == "mean"
    assert NoteEmbedder(tiny_llama, cache_dir=False, dtype=F32).pooling == "last"
    assert detect_family({"model_type": "mistral"}) == "decoder"
    assert detect_family({"model_type": "roberta", "architectures": ["RobertaModel"]}) == "encoder"
    with pytest.raises(FileNotFoundError):
        resolve_model_path(tiny_bert / "nope")


@pytest.mark.parametrize("which", ["bert", "llama"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_poolings_match_manual(which, pooling, tiny_bert, tiny_llama):
    path = tiny_bert if which == "bert" else tiny_llama
    texts = ["chest pain radiating to the left arm", "fever", "acute kidney injury with elevated creatinine"]
    emb = NoteEmbedder(path, pooling=pooling, normalize=False, cache_dir=False, dtype=F32)
    x = emb.embed(texts)
    bb = emb.backbone
    for i, t in enumerate(texts):
        h = _forward(bb, t)
        want = h.mean(0) if pooling == "mean" else h[-1]
        np.testing.assert_allclose(x[i], want.numpy(), rtol=1e-4, atol=1e-5)
    xn = NoteEmbedder(path, pooling=pooling, cache_dir=False, dtype=F32).embed(texts)
    np.testing.assert_allclose(np.linalg.norm(xn, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(xn, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-5)


def test_decoder_embedding_independent_of_batch_padding(tiny_llama):
    short = "fever and cough"
    alone = NoteEmbedder(tiny_llama, cache_dir=False, dtype=F32).embed([short])
    padded = NoteEmbedder(tiny_llama, cache_dir=False, batch_size=8, dtype=F32).embed([short, LONG[:300], "chest pain"])
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    # a left-padding setup would have pooled a padding token: the last real token is what we want
    bb = load_backbone(tiny_llama, dtype=F32)
    h = _forward(bb, short)[-1]
    np.testing.assert_allclose(alone[0], (h / h.norm()).numpy(), atol=1e-5)


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_windowing_long_text_covers_every_token(which, tiny_bert, tiny_llama):
    path = tiny_bert if which == "bert" else tiny_llama
    bb = load_backbone(path, dtype=F32)
    full = bb.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(full) > 3 * bb.max_length  # far over the limit
    stride = 8
    ids, doc = tokenize_windows(bb.tokenizer, [LONG, "fever"], bb.max_length, stride)
    special = bb.tokenizer.num_special_tokens_to_add()
    windows = [w for w, d in zip(ids, doc, strict=True) if d == 0]
    assert len(windows) > 3 and all(len(w) <= bb.max_length for w in windows)
    # strip special tokens and overlaps: the windows re-assemble the whole text, nothing cut
    body = [w[1:-1] if special == 2 else w[1:] for w in windows]
    rebuilt = list(body[0])
    for b in body[1:]:
        assert b[:stride] == rebuilt[-stride:]
        rebuilt += b[stride:]
    assert rebuilt == full
    # the text vector is the token-weighted mean of the window vectors
    emb = NoteEmbedder(path, stride=stride, normalize=False, cache_dir=False, dtype=F32)
    x = emb.embed([LONG])[0]
    assert emb.last_stats["windows"] == len(windows) and emb.last_stats["long_texts"] == 1
    pooled = []
    for w in windows:
        with torch.inference_mode():
            h = bb.model(input_ids=torch.tensor([w])).last_hidden_state[0]
        pooled.append((h.mean(0) if emb.pooling == "mean" else h[-1]).numpy())
    lens = np.array([len(w) for w in windows], dtype=np.float64)
    np.testing.assert_allclose(x, (np.array(pooled) * lens[:, None]).sum(0) / lens.sum(), rtol=1e-4, atol=1e-5)


def test_auto_dtype():
    from medfuse.notes.backbone import cpu_native_bf16, resolve_dtype_name

    assert resolve_dtype_name("auto", "cpu", training=True) == "float32"
    assert resolve_dtype_name("auto", "cpu") == ("bfloat16" if cpu_native_bf16() else "float32")
    assert resolve_dtype_name("bf16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype_name("int8", "cpu")


def test_bfloat16_close_to_float32(tiny_bert):
    texts = ["chest pain radiating to the left arm", LONG]
    x = NoteEmbedder(tiny_bert, cache_dir=False, dtype=F32).embed(texts)
    emb = NoteEmbedder(tiny_bert, cache_dir=False, dtype="bfloat16")
    y = emb.embed(texts)
    assert emb.settings()["dtype"] == "bfloat16" and y.dtype == np.float32
    assert (x * y).sum(1).min() > 0.999


def test_empty_text_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="empty"):
        NoteEmbedder(tiny_bert, cache_dir=False, dtype=F32).embed(["fever", "  "])


def test_cache_hits_compute_nothing(tiny_bert, tmp_path):
    texts = ["chest pain", "fever and cough", LONG, "chest pain"]
    first = NoteEmbedder(tiny_bert, cache_dir=tmp_path)
    a = first.embed(texts)
    assert first.last_stats["computed"] == 3 and first.last_stats["cached"] == 0  # duplicate embedded once
    again = NoteEmbedder(tiny_bert, cache_dir=tmp_path)
    b = again.embed(texts)
    assert again.last_stats == {**again.last_stats, "computed": 0, "cached": 4}
    assert again._backbone is None  # the model was never even loaded
    np.testing.assert_array_equal(a, b)
    # partly new texts: only the new one is computed
    c = again.embed(["fever and cough", "acute kidney injury"])
    assert again.last_stats["computed"] == 1 and again.last_stats["cached"] == 1
    np.testing.assert_array_equal(c[0], a[1])
    # other pooling or window settings live in another namespace
    other = NoteEmbedder(tiny_bert, pooling="last", cache_dir=tmp_path)
    other.embed(texts[:1])
    assert other.last_stats["computed"] == 1 and other.identity != first.identity
    assert NoteEmbedder(tiny_bert, stride=4, cache_dir=tmp_path).identity != first.identity
    shards = list(tmp_path.rglob("*.safetensors"))
    assert shards and not list(tmp_path.rglob("*.pkl"))


def test_cache_keeps_its_own_writes_in_memory(tmp_path):
    """A put is added to the loaded index (no re-read of every shard per chunk); lookups span the blocks and
    survive a merge; another process's instance reads everything from disk."""
    from medfuse.notes.embed import EmbeddingCache

    def block(i: int, n: int = 5):
        keys = [f"text-{i}-{j}".encode().ljust(32, b"_") for j in range(n)]
        return keys, np.full((n, 4), i, np.float32) + np.arange(n, dtype=np.float32)[:, None]

    cache = EmbeddingCache(tmp_path, "ns")
    cache.MAX_SHARDS = 3
    assert cache.get(block(0)[0])[0].sum() == 0  # loaded (empty) before the first write
    for i in range(6):
        cache.put(*block(i))
    assert len(cache._blocks) == 6 and len(cache._shards()) <= 3  # merged on disk, kept as written in memory
    keys = block(5)[0][::-1] + [b"absent".ljust(32, b"_")] + block(0)[0][:2]
    for reader in (cache, EmbeddingCache(tmp_path, "ns")):
        found, vectors = reader.get(keys)
        assert found.tolist() == [True] * 5 + [False, True, True]
        np.testing.assert_array_equal(vectors[:, 0], [9, 8, 7, 6, 5, 0, 1])


def test_embed_cohort_writes_all_admissions(cohort_dir, tiny_bert, tmp_path):
    from medfuse.config import NotesConfig

    cfg = NotesConfig(model=str(tiny_bert), cache_dir=str(tmp_path / "cache"), unit="text")
    summary = embed_cohort(cohort_dir, tmp_path / "run", cfg)
    assert summary["admissions"] == 60 and summary["missing"] == 1 and summary["embedded"] == 59
    hadm, x, missing = load_note_embeddings(tmp_path / "run")
    assert x.shape == (60, 32) and x.dtype == np.float32 and hadm.dtype == np.int64
    assert list(hadm[:3]) == [100, 101, 102] and missing.tolist() == [i == 2 for i in range(60)]
    assert not x[2].any() and np.allclose(np.linalg.norm(x[~missing], axis=1), 1, atol=1e-5)
    meta = json.loads((tmp_path / "run" / "embed_config.json").read_text())
    assert meta["pooling"] == "mean" and meta["family"] == "encoder" and meta["model_identity"]
    rerun = embed_cohort(cohort_dir, tmp_path / "run2", cfg)
    assert rerun["computed"] == 0 and rerun["cached"] == 59
    np.testing.assert_array_equal(load_note_embeddings(tmp_path / "run2")[1], x)


def test_embed_cohort_lines_max_pools_and_counts_line_clusters(cohort_dir, tiny_bert, tmp_path):
    """unit = "lines": per template field a max-pool block and a log-count block over line clusters."""
    from medfuse.config import NotesConfig
    from medfuse.notes.lines import CODEBOOK_FILE
    from medfuse.notes.text import FIELDS, build_texts, segments

    cfg = NotesConfig(model=str(tiny_bert), cache_dir=str(tmp_path / "cache"), dtype="float32", line_clusters=4)
    assert cfg.unit == "lines"
    summary = embed_cohort(cohort_dir, tmp_path / "run", cfg)
    _, x, missing = load_note_embeddings(tmp_path / "run")
    assert x.shape == (60, 5 * (32 + 4)) and summary["fields"] == list(FIELDS) and summary["dim"] == 180
    assert missing.tolist() == [i == 2 for i in range(60)] and not x[2].any()
    assert summary["unique_lines"] < summary["lines"]  # repeated list items are embedded once
    assert (tmp_path / "run" / CODEBOOK_FILE).is_file()

    nt = build_texts(cohort_dir)
    plain = NoteEmbedder(tiny_bert, cache_dir=False, dtype="float32")
    maxes, bags = x[:, :160].reshape(60, 5, 32), np.expm1(x[:, 160:].reshape(60, 5, 4))
    for i in (0, 5, 17):
        for j, field in enumerate(FIELDS):
            lines = segments(nt.values[i][field], field)
            if lines:
                np.testing.assert_allclose(maxes[i, j], plain.embed(lines).max(0), atol=1e-5)
            else:
                assert not maxes[i, j].any()
            assert round(bags[i, j].sum()) == len(lines)  # every line lands in exactly one cluster
    assert (np.abs(maxes[~missing]).sum(2) > 0).any(0).all()  # every field is present somewhere

    from medfuse.notes.lines import LineEncoder  # the saved codebook encodes a new admission the same way

    again = LineEncoder(plain, list(FIELDS), clusters=4).load(tmp_path / "run")
    np.testing.assert_allclose(again.transform([nt.values[i] for i in (0, 5, 17)]), x[[0, 5, 17]], atol=1e-5)


@pytest.mark.parametrize(("unit", "chunk"), [("lines", 7), ("text", 7), ("lines", 1)])
def test_embed_cohort_in_chunks_equals_one_pass(cohort_dir, tiny_bert, tmp_path, unit, chunk):
    """Admissions embedded 7 (or 1) at a time (the bounded-memory path MIMIC-IV size takes; chunk 1 holds row
    2 alone, which has no text): the same file, one row group per chunk, lines seen in an earlier chunk not
    embedded again, the same counts and codebook."""
    import pyarrow.parquet as pq
    from safetensors.numpy import load_file

    from medfuse.config import NotesConfig
    from medfuse.notes.lines import CODEBOOK_FILE

    cfg = NotesConfig(model=str(tiny_bert), cache=False, dtype="float32", line_clusters=4, unit=unit)
    whole = embed_cohort(cohort_dir, tmp_path / "whole", cfg)
    reported = []
    chunked = embed_cohort(cohort_dir, tmp_path / "chunked", cfg, chunk=chunk,
                           progress=lambda stage, f, info="": reported.append((stage, f)))
    assert pq.ParquetFile(tmp_path / "chunked" / "note_embeddings.parquet").num_row_groups == -(-60 // chunk)
    h1, x1, m1 = load_note_embeddings(tmp_path / "whole")
    h2, x2, m2 = load_note_embeddings(tmp_path / "chunked")
    np.testing.assert_array_equal(h1, h2)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(x2, x1, atol=1e-6)
    counts = ("admissions", "embedded", "missing", "without_note", "cached", "dim")
    counts += ("lines", "unique_lines", "computed") if unit == "lines" else ()
    assert {k: chunked[k] for k in counts} == {k: whole[k] for k in counts}
    if unit == "lines":  # a line is embedded once whichever chunk it comes back in
        assert chunked["computed"] == chunked["unique_lines"] < chunked["lines"]
    else:  # without the content cache a text repeated in another chunk is embedded again
        assert whole["computed"] < chunked["computed"] <= 59
    assert chunked["chunk_admissions"] == chunk and chunked["device"] == "cpu" and chunked["world_size"] == 1
    if unit == "lines":
        a, b = load_file(str(tmp_path / "whole" / CODEBOOK_FILE)), load_file(str(tmp_path / "chunked" / CODEBOOK_FILE))
        assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    embedding = [f for stage, f in reported if stage == "embed notes"]
    assert embedding == sorted(embedding) and embedding[-1] == 1.0  # one bar across chunks, never going back
    assert not list((tmp_path / "chunked").glob(".*.tmp"))


def test_embed_cohort_without_any_text(cohort_dir, tiny_bert, tmp_path):
    """A cohort with neither notes nor lab texts: every admission missing, nothing embedded, no centroids."""
    import shutil

    from safetensors.numpy import load_file

    from medfuse.config import NotesConfig
    from medfuse.notes.lines import CODEBOOK_FILE

    bare = tmp_path / "bare"
    shutil.copytree(cohort_dir, bare, ignore=shutil.ignore_patterns("notes.parquet", "lab_text.parquet"))
    summary = embed_cohort(bare, tmp_path / "run", NotesConfig(model=str(tiny_bert), cache=False, line_clusters=4),
                           chunk=16)
    _, x, missing = load_note_embeddings(tmp_path / "run")
    assert (summary["embedded"], summary["lines"], summary["computed"], summary["device"]) == (0, 0, 0, None)
    assert missing.all() and x.shape == (60, 5 * (32 + 4)) and not x.any()
    assert load_file(str(tmp_path / "run" / CODEBOOK_FILE)) == {}
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        embed_cohort(bare, tmp_path / "zero", NotesConfig(model=str(tiny_bert)), chunk=0)


def test_embed_cohort_error_leaves_no_file(cohort_dir, tiny_bert, tmp_path, monkeypatch):
    """A failure after the first chunk was written leaves neither a partial file nor its temporary."""
    from medfuse.config import NotesConfig
    from medfuse.notes import embeddings as pipeline

    calls = []

    def failing(self, texts, progress=None, stage="embed notes"):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("out of memory on chunk 2")
        return np.ones((len(texts), 32), np.float32)

    monkeypatch.setattr(pipeline.NoteEmbedder, "embed", failing)
    cfg = NotesConfig(model=str(tiny_bert), cache=False, unit="text")
    with pytest.raises(RuntimeError, match="chunk 2"):
        embed_cohort(cohort_dir, tmp_path / "run", cfg, chunk=20)
    assert calls == [19, 20] and not list((tmp_path / "run").iterdir())


def test_line_codebook_is_fitted_on_the_fit_rows_only(tiny_bert):
    """Training admissions hold 3 distinct past histories, the others 8 more: the codebook has 3 centroids
    and the others' lines are still counted, each in its nearest training cluster."""
    from medfuse.notes.lines import LineEncoder

    train = [{"past_history": f"- {d}"} for d in ("COPD", "atrial fibrillation", "diabetes")] * 2
    other = [{"past_history": f"- {d}\n- gout"} for d in ("CKD", "anemia", "CHF", "HTN", "CAD", "AKI", "HLD", "PE")]
    enc = LineEncoder(NoteEmbedder(tiny_bert, cache_dir=False, dtype="float32"), ["past_history"], clusters=5)
    x = enc.fit_transform(train + other, np.array([True] * 6 + [False] * 8))
    assert enc.centroids["past_history"].shape == (3, 32) and x.shape == (14, 32 + 5)
    counts = np.expm1(x[:, 32:])
    assert counts[:, 3:].sum() == 0 and np.allclose(counts.sum(1), [1] * 6 + [2] * 8)
    np.testing.assert_allclose(enc.transform(other), x[6:], atol=1e-6)


def test_line_vector_without_max_blocks_is_the_bag_blocks(tiny_bert):
    """``notes.line_max = false``: the same codebook and counts, without the max blocks; an empty vector is refused."""
    from pydantic import ValidationError

    from medfuse.config import NotesConfig
    from medfuse.notes.lines import LineEncoder

    values = [{"past_history": f"- {d}\n- gout"} for d in ("COPD", "CKD", "anemia", "CHF", "HTN", "CAD")]
    fit = np.array([True, True, True, False, False, False])
    embedder = NoteEmbedder(tiny_bert, cache_dir=False, dtype="float32")
    both = LineEncoder(embedder, ["past_history"], clusters=3).fit_transform(values, fit)
    bags = LineEncoder(embedder, ["past_history"], clusters=3, max_blocks=False)
    x = bags.fit_transform(values, fit)
    assert bags.dim == 3 and x.shape == (6, 3) and both.shape == (6, 32 + 3)
    np.testing.assert_allclose(x, both[:, 32:], atol=1e-6)
    np.testing.assert_allclose(np.expm1(x).sum(1), 2.0, atol=1e-5)  # two lines per admission, each in one cluster
    with pytest.raises(ValidationError, match="line_clusters > 0"):
        NotesConfig(line_clusters=0, line_max=False)


def test_memory_cache_keeps_the_most_recent_texts_only(tiny_bert):
    from medfuse.notes.embed import NoteEmbedder

    emb = NoteEmbedder(tiny_bert, cache_dir=False, device="cpu", dtype="float32")
    emb.keep_in_memory(2)
    texts = ["chest pain radiating to the left arm", "edema of the legs", "fever and productive cough"]
    first = emb.embed(texts)
    assert emb.last_stats["computed"] == 3 and len(emb.memory_cache) == 2
    again = emb.embed(texts[1:])
    assert emb.last_stats["computed"] == 0 and emb.last_stats["cached"] == 2
    np.testing.assert_array_equal(again, first[1:])
    emb.embed(texts[:1])  # evicted: computed again
    assert emb.last_stats["computed"] == 1
