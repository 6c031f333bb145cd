"""Fusion inputs assembled from a real cohort (the MIMIC-III demo): chunked, written to a memory-mapped store."""

import json
import os

import numpy as np
import pytest
import torch

from medfuse.config import LabsConfig
from medfuse.data.cohort import LAB_AGGREGATES, Cohort
from medfuse.training import inputs
from medfuse.training.inputs import STORE_META, lab_value_channels, load_fusion_data


def labs_columns(cohort: Cohort) -> dict[str, np.ndarray]:
    t = cohort.table("labs")
    return {c: t.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in t.column_names if "__" in c}


def test_lab_value_channels_follow_the_given_key_order(mimic3_cohort):
    cohort = Cohort(mimic3_cohort)
    rare, common = cohort.lab_keys[-1], cohort.lab_keys[0]  # least / most often measured selected test
    keys = [rare, "lab_not_in_this_cohort", common]
    stats = {k: i for i, k in enumerate(cohort.lab_keys)}
    take = [stats.get(k, 0) for k in keys]

    def normalize(x):  # the cohort's own statistics, per test of ``keys``
        full = np.full((len(x), len(cohort.lab_keys)), np.nan)
        return np.stack([cohort.normalize(np.where(np.arange(len(cohort.lab_keys)) == take[t], x[:, [t]], full))[:, take[t]]
                         for t in range(len(keys))], axis=1)

    v = lab_value_channels(labs_columns(cohort), len(cohort.hadm_ids), keys, set(cohort.lab_keys), normalize)
    assert v.shape == (len(cohort.hadm_ids), 3, 5) and v.dtype == np.float32
    for slot, key in ((0, rare), (2, common)):
        col = cohort.lab_keys.index(key)
        for a, agg in enumerate(LAB_AGGREGATES):
            z = cohort.lab_values(None, agg)[:, col]
            np.testing.assert_allclose(v[:, slot, a], np.nan_to_num(z, nan=0.0))
        measured = ~np.isnan(cohort.lab_values(None, "last")[:, col])
        np.testing.assert_array_equal(v[:, slot, 4], measured)
    assert 0 < v[:, 0, 4].sum() < len(v)  # the rare test: admissions with and without it
    assert not v[:, 1].any()  # a test the cohort lacks: never measured
    spread = v[:, 0, 3] - v[:, 0, 2]
    assert (spread >= 0).all() and (spread > 0).any()  # max >= min, and some admissions vary


@pytest.fixture(scope="module")
def runs(mimic3_cohort, tmp_path_factory):
    """A small MLTM run and a note-embedding run (random vectors, some admissions missing, rows shuffled)."""
    from medfuse.labs import pretrain
    from medfuse.notes.embeddings import write_note_embeddings

    root = tmp_path_factory.mktemp("inputs")
    cohort = Cohort(mimic3_cohort)
    cfg = LabsConfig(d_model=16, encoder_layers=1, decoder_layers=1, heads=2, epochs=1, batch_size=32,
                     aggregates=["last", "max"], device="cpu")
    pretrain(cohort, root / "labs", cfg)
    rng = np.random.default_rng(0)
    n = len(cohort.hadm_ids)
    vectors = (rng.normal(size=(n, 24)) * rng.uniform(0.01, 2, size=24)).astype(np.float32)
    missing = rng.random(n) < 0.2
    vectors[missing] = 0.0
    order = rng.permutation(n)  # the store scatters rows of any order into cohort order
    write_note_embeddings(root / "notes", cohort.hadm_ids[order], vectors[order], missing[order])
    return root, vectors, missing


def old_inputs(cohort: Cohort, labs_run, vectors, missing, batch_size):
    """The inputs as they were computed before the store: whole arrays in one go."""
    from medfuse.labs import LabEmbedder

    emb = LabEmbedder.load(labs_run, device="cpu")
    raw = emb.cohort_values(cohort)
    pooled, tokens = emb.embed(raw, batch_size=batch_size, numpy=True)
    z = emb.normalize(raw).astype(np.float32)
    fit = (cohort.split == "train") & ~missing
    mean, std = vectors[fit].mean(axis=0), vectors[fit].std(axis=0) + np.float32(1e-6)
    table = cohort.table("labs")
    columns = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in table.column_names
               if "__" in c}
    return {"note": np.where(missing[:, None], 0.0, (vectors - mean) / std).astype(np.float32),
            "lab_x": np.nan_to_num(z, nan=0.0), "lab_observed": ~np.isnan(z), "lab_tokens": tokens,
            "lab_pooled": pooled, "lab_values": lab_value_channels(columns, len(raw), emb.keys, set(cohort.lab_keys),
                                                                 emb.normalize_tests),
            "note_mean": mean, "note_std": std}


def test_store_is_bit_identical_to_whole_array_assembly_and_is_reused(mimic3_cohort, runs, tmp_path, monkeypatch):
    root, vectors, missing = runs
    cohort = Cohort(mimic3_cohort)
    monkeypatch.setattr(inputs, "CHUNK_ROWS", 40)  # 129 admissions: four chunks of 32 (whole MLTM batches) + 1
    store = tmp_path / "run" / "inputs"
    data = load_fusion_data(cohort, root / "labs", root / "notes", device="cpu", batch_size=16, store=store)
    expected = old_inputs(cohort, root / "labs", vectors, missing, 16)
    for name, want in expected.items():
        got = getattr(data, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert isinstance(data.lab_tokens, np.memmap) and not data.lab_tokens.flags.writeable
    np.testing.assert_array_equal(data.note_missing, missing)
    in_memory = load_fusion_data(cohort, root / "labs", root / "notes", device="cpu", batch_size=16)
    assert not isinstance(in_memory.lab_tokens, np.memmap)
    assert all(np.array_equal(getattr(in_memory, k), getattr(data, k)) for k in expected)

    meta = json.loads((store / STORE_META).read_text())
    assert meta["admissions"] == len(cohort.hadm_ids) and meta["arrays"]["lab_tokens"]["shape"][0] == len(cohort.hadm_ids)
    stamp = (store / "lab_tokens.npy").stat().st_mtime_ns
    load_fusion_data(cohort, root / "labs", root / "notes", device="cpu", batch_size=16, store=store)
    assert (store / "lab_tokens.npy").stat().st_mtime_ns == stamp  # same inputs: reused, not rebuilt
    model = root / "labs" / "model.safetensors"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))  # "a new MLTM run"
    again = load_fusion_data(cohort, root / "labs", root / "notes", device="cpu", batch_size=16, store=store)
    assert (store / "lab_tokens.npy").stat().st_mtime_ns != stamp
    assert np.array_equal(again.lab_tokens, expected["lab_tokens"])
    assert not list(store.parent.glob(".inputs.tmp-*"))


def test_batches_read_any_row_order(mimic3_cohort, runs, tmp_path):
    root, _, _ = runs
    data = load_fusion_data(Cohort(mimic3_cohort), root / "labs", root / "notes", device="cpu", store=tmp_path / "s")
    rows = np.random.default_rng(1).permutation(len(data.hadm_ids))[:50]
    rows[10:20] = np.arange(40, 50)  # a run of consecutive rows: one read
    batch = data.tensors(rows, torch.device("cpu"))
    for name in ("note", "lab_x", "lab_observed", "lab_tokens", "lab_pooled", "lab_values", "note_missing"):
        assert torch.equal(batch[name], torch.from_numpy(np.asarray(getattr(data, name)[rows]))), name
    assert torch.equal(batch["lab_missing"], torch.from_numpy(data.lab_missing[rows]))


def rss_file_kib() -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("RssFile")))


def test_reading_batches_keeps_the_files_out_of_the_resident_set(tmp_path):
    """Batches come from the files (pread), not through the memory map, whose touched pages would count in
    the process's RSS: at MIMIC-IV size that was the whole 10 GB store after an epoch."""
    n, d = 20000, 1024
    big = np.lib.format.open_memmap(tmp_path / "note.npy", mode="w+", dtype=np.float32, shape=(n, d))
    big[:] = np.arange(n, dtype=np.float32)[:, None]
    del big
    note = np.load(tmp_path / "note.npy", mmap_mode="r")  # 80 MB, in the page cache: it was just written
    small = np.zeros((n, 2), np.float32)
    data = inputs.FusionData(
        hadm_ids=np.arange(n), subject_ids=np.arange(n), split=np.array(["train"] * n), y=np.zeros((n, 1), np.float32),
        label_names=["a"], note=note, note_missing=np.zeros(n, bool), lab_x=small, lab_observed=small > 0,
        lab_tokens=np.zeros((n, 2, 1), np.float32), lab_pooled=small, lab_values=np.zeros((n, 1, 5), np.float32),
        _files={"note": (note, inputs._RowFile(note))})
    order = np.random.default_rng(0).permutation(n)
    before = rss_file_kib()
    for start in range(0, n, 128):
        rows = order[start : start + 128]
        assert np.array_equal(data.tensors(rows, torch.device("cpu"))["note"][:, 0].numpy(), rows.astype(np.float32))
    assert rss_file_kib() - before < 8 * 1024
    for start in range(0, n, 128):  # the same through the map: the sanity check of the measure
        note[np.sort(order[start : start + 128])]
    assert rss_file_kib() - before > 40 * 1024


def test_a_note_run_without_some_cohort_admissions_is_refused(mimic3_cohort, runs, tmp_path):
    from medfuse.notes.embeddings import write_note_embeddings

    cohort = Cohort(mimic3_cohort)
    n = len(cohort.hadm_ids)
    write_note_embeddings(tmp_path / "notes", cohort.hadm_ids[1:], np.zeros((n - 1, 4), np.float32), np.zeros(n - 1, bool))
    with pytest.raises(ValueError, match=f"no note embedding for 1 cohort admissions \\(e.g. {cohort.hadm_ids[0]}\\)"):
        load_fusion_data(cohort, runs[0] / "labs", tmp_path / "notes", device="cpu", store=tmp_path / "s")
    assert not (tmp_path / "s").exists()
