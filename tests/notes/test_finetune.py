"""LoRA fine-tuning on a tiny BERT / Llama: adapter changes, loss falls, save/load round trip, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from medfuse.config import NotesConfig
from medfuse.notes import NoteEmbedder, build_texts, load_note_embeddings
from medfuse.notes.backbone import load_backbone
from medfuse.notes.finetune import default_target_modules, finetune_notes, load_head, train_lora


def _cfg(model, tmp_path, **kw) -> NotesConfig:
    base = {"model": str(model), "epochs": 8, "lr": 2e-2, "head_lr": 0.1, "patience": 10, "train_batch_size": 8,
            "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "cache_dir": str(tmp_path / "cache")}
    return NotesConfig(**{**base, **kw})


def test_default_target_modules(tiny_bert, tiny_llama):
    assert default_target_modules(load_backbone(tiny_bert).model, "encoder") == ["query", "value"]
    assert default_target_modules(load_backbone(tiny_llama).model, "decoder") == ["q_proj", "k_proj", "v_proj",
                                                                                 "o_proj"]


def test_finetune_bert_round_trip(cohort_dir, tiny_bert, tmp_path):
    """unit = "text": whole texts, windowed; the head reads the pooled text vector."""
    run = tmp_path / "ft"
    meta = finetune_notes(cohort_dir, run, _cfg(tiny_bert, tmp_path, unit="text"))
    hist = [h["train_loss"] for h in meta["history"]]
    assert len(hist) == 8 and np.mean(hist[-2:]) < hist[0] * 0.85, hist
    assert all("val_macro_f1" in h and 0 < h["val_macro_auprc"] <= 1 for h in meta["history"])
    assert meta["best_val_macro_auprc"] == max(h["val_macro_auprc"] for h in meta["history"])
    assert meta["unit"] == "text" and meta["fields"] is None
    assert 1 <= meta["best_epoch"] <= len(hist) and meta["train_admissions"] == 39 and meta["val_admissions"] == 10
    # only adapter + head are saved, as safetensors
    files = sorted(p.name for p in (run / "adapter").iterdir())
    assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert weights and all("lora_" in k for k in weights)
    assert sum(v.size for v in weights.values()) < 20_000  # not the whole model
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(np.abs(v).max() > 0 for v in lora_b)  # B starts at zero: training changed it
    w, b, labels = load_head(run)
    assert w.shape == (3, 32) and b.shape == (3,) and labels == ["heart_failure", "pneumonia", "kidney"]
    saved = json.loads((run / "finetune_config.json").read_text())
    assert saved["lora"]["target_modules"] == ["query", "value"] and saved["pooling"] == "mean"

    texts = [t for t in build_texts(cohort_dir).texts if t][:12]
    base = NoteEmbedder(tiny_bert, cache_dir=False).embed(texts)
    tuned = NoteEmbedder(tiny_bert, adapter=run, cache_dir=False)
    x1 = tuned.embed(texts)
    x2 = NoteEmbedder(None, adapter=run, cache_dir=False).embed(texts)  # base model taken from the run
    np.testing.assert_array_equal(x1, x2)
    assert np.abs(x1 - base).max() > 1e-3
    # the cache keeps adapters apart
    cache = tmp_path / "c2"
    NoteEmbedder(tiny_bert, cache_dir=cache).embed(texts)
    with_adapter = NoteEmbedder(tiny_bert, adapter=run, cache_dir=cache)
    np.testing.assert_array_equal(with_adapter.embed(texts), x1)
    assert with_adapter.last_stats["computed"] == len(set(texts))


def test_finetune_lines(cohort_dir, tiny_bert, tmp_path):
    """unit = "lines" (the default): the head reads the per-field max of normalised line vectors, the
    training-time vectors equal LineEncoder's max blocks, and embed-notes with the adapter embeds lines."""
    from medfuse.notes.embeddings import embed_cohort
    from medfuse.notes.finetune import head_probabilities, model_inputs
    from medfuse.notes.lines import LineEncoder
    from medfuse.notes.text import template_fields

    cfg = _cfg(tiny_bert, tmp_path, epochs=6, dtype="float32", cpu_autocast="off")
    run = tmp_path / "ft"
    meta = finetune_notes(cohort_dir, run, cfg)
    fields = template_fields(cfg.template)
    assert meta["unit"] == "lines" and meta["fields"] == fields == list(fields)
    hist = [h["train_loss"] for h in meta["history"]]
    assert np.mean(hist[-2:]) < hist[0] * 0.9, hist
    w, b, _ = load_head(run)
    assert w.shape == (3, len(fields) * 32)
    lora_b = [v for k, v in load_file(str(run / "adapter" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and all(np.abs(v).max() > 0 for v in lora_b)

    nt = build_texts(cohort_dir)
    rows = np.flatnonzero(nt.has_text)
    values = [nt.values[i] for i in rows]
    tuned = NoteEmbedder(None, adapter=run, cache_dir=False, dtype="float32")
    blocks = LineEncoder(tuned, fields, clusters=0).transform(values)
    import torch

    bb = tuned.backbone
    inputs = model_inputs(bb, values, "lines", tuned.max_length, tuned.stride, fields)
    with torch.inference_mode():
        x = inputs.vectors(bb.model, np.arange(len(values)), bb.tokenizer.pad_token_id, tuned.pooling, bb.device, False)
    np.testing.assert_allclose(x.numpy(), blocks, atol=1e-5)  # what the head was trained on == what is embedded
    assert (np.abs(blocks).reshape(len(rows), len(fields), 32).max(2) > 0).sum() > len(rows)  # several fields each

    prob = head_probabilities(run, nt, ["heart_failure", "pneumonia", "kidney"], cfg)
    np.testing.assert_allclose(prob[rows], 1 / (1 + np.exp(-(blocks @ w.T + b))), atol=1e-5)
    np.testing.assert_allclose(prob[~nt.has_text], np.broadcast_to(1 / (1 + np.exp(-b)), prob[~nt.has_text].shape),
                               atol=1e-6)

    out = embed_cohort(cohort_dir, tmp_path / "emb", cfg, adapter=run)
    assert out["unit"] == "lines" and out["dim"] == len(fields) * (32 + cfg.line_clusters)
    _, emb, missing = load_note_embeddings(tmp_path / "emb")
    np.testing.assert_allclose(emb[~missing][:, :len(fields) * 32], blocks, atol=1e-5)  # the max blocks come first


def test_in_memory_equals_saved_adapter(cohort_dir, tiny_bert, tmp_path):
    """Embeddings of the fine-tuned model in memory == embeddings after save + reload (both poolings path)."""
    from medfuse.notes.backbone import folder_identity
    from medfuse.notes.finetune import save_finetuned

    nt = build_texts(cohort_dir)
    y = np.zeros((len(nt), 3), np.float32)
    y[:, 0] = np.arange(len(nt)) % 2
    rows = np.flatnonzero(nt.has_text)[:24]
    bb = load_backbone(tiny_bert, training=True)
    cfg = NotesConfig(unit="text", epochs=2, lr=1e-2, lora_rank=4, lora_alpha=8, lora_dropout=0.0, pooling="last")
    res = train_lora(bb, cfg, [nt.texts[i] for i in rows], y[rows])
    save_finetuned(res, tmp_path / "run", {"base_model": str(tiny_bert), "base_identity": folder_identity(tiny_bert),
                                           "pooling": res.pooling, "max_length": res.max_length})
    texts = [nt.texts[i] for i in rows[:10]]
    mem = res.embedder().embed(texts)
    loaded = NoteEmbedder(tiny_bert, adapter=tmp_path / "run", cache_dir=False, dtype="float32")
    assert loaded.pooling == "last"
    np.testing.assert_allclose(loaded.embed(texts), mem, atol=2e-6)
    probs = res.predict_proba(texts)
    assert probs.shape == (10, 3) and ((probs > 0) & (probs < 1)).all()


def test_adapter_of_other_base_is_refused(cohort_dir, tiny_bert, tiny_llama, tmp_path):
    run = tmp_path / "ft"
    finetune_notes(cohort_dir, run, _cfg(tiny_bert, tmp_path, epochs=1))
    with pytest.raises(ValueError, match="another base model"):
        NoteEmbedder(tiny_llama, adapter=run, cache_dir=False)


def test_finetune_llama_and_cli(cohort_dir, tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from medfuse.cli import app

    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(f'[notes]\nlora_rank = 4\nlora_dropout = 0.0\nhead_lr = 0.02\npatience = 5\n'
                        f'cache_dir = "{tmp_path / "cache"}"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["finetune-notes", str(cohort_dir), "--model", str(tiny_llama), "--out",
                              str(tmp_path / "ft"), "--epochs", "3", "--lr", "0.005", "--config", str(cfg_file)])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "ft" / "finetune_config.json").read_text())
    assert meta["family"] == "decoder" and meta["pooling"] == "last"
    assert meta["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert meta["history"][-1]["train_loss"] < meta["history"][0]["train_loss"]
    res = runner.invoke(app, ["embed-notes", str(cohort_dir), "--adapter", str(tmp_path / "ft"), "--out",
                              str(tmp_path / "emb"), "--config", str(cfg_file)])
    assert res.exit_code == 0, res.output
    _, x, missing = load_note_embeddings(tmp_path / "emb")
    assert x.shape == (60, 5 * (32 + 64)) and missing.sum() == 1  # unit = "lines": 5 fields x (hidden + clusters)
    emb_cfg = json.loads((tmp_path / "emb" / "embed_config.json").read_text())
    assert emb_cfg["adapter_identity"] and emb_cfg["family"] == "decoder"
    res = runner.invoke(app, ["embed-notes", str(cohort_dir), "--adapter", str(tmp_path / "ft"), "--out",
                              str(tmp_path / "emb2"), "--config", str(cfg_file)])
    assert res.exit_code == 0 and json.loads((tmp_path / "emb2" / "embed_config.json").read_text())["computed"] == 0


def test_cpu_autocast_setting(tiny_bert):
    """auto: bfloat16 autocast only for a float32 model on a CPU with native bfloat16; on/off force it."""
    from medfuse.notes.backbone import cpu_native_bf16
    from medfuse.notes.finetune import wants_cpu_autocast

    fp32 = load_backbone(tiny_bert, "cpu", "float32", training=True)
    bf16 = load_backbone(tiny_bert, "cpu", "bfloat16")
    assert wants_cpu_autocast(fp32, "auto") == cpu_native_bf16()
    assert not wants_cpu_autocast(bf16, "auto")  # already bfloat16: nothing to autocast
    assert wants_cpu_autocast(fp32, "on") and not wants_cpu_autocast(fp32, "off")
