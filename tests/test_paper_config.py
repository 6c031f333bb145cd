"""configs/paper.toml loads, says what docs/publishing.md says it does, and its workflow runs end to end
(finetune-notes -> embed-notes --adapter -> train -> evaluate) with a tiny local Llama in place of
Medical-Llama3-8B."""

from pathlib import Path

from medfuse.config import load_config

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper.toml"


def test_paper_config_loads_with_the_paper_settings():
    cfg = load_config(PAPER)
    default = load_config()
    assert cfg.notes.model == "models/Medical-Llama3-8B" and cfg.notes.unit == "text"
    assert (cfg.train.lab_values, cfg.train.skip_connections, cfg.train.mi_floor) == (False, False, False)
    assert cfg.train.modality_dropout == 0.0 and cfg.train.mi_weight == 0.1 and cfg.train.use_kronecker
    assert cfg.labs.mask_ratio == 0.75 and cfg.labs.aggregates == ["last"]
    # everything the file does not set is the shipped default
    assert cfg.compare == default.compare and cfg.train.epochs == default.train.epochs


def test_paper_workflow_runs_with_a_local_llama(mimic3_cohort, tiny_llama, tmp_path):
    import json

    from medfuse.notes.embeddings import embed_cohort
    from medfuse.notes.finetune import finetune_notes
    from medfuse.runs.stages import evaluate_run, train_run

    cfg = load_config(PAPER, {"notes": {"model": str(tiny_llama), "epochs": 1, "cache": False, "device": "cpu"},
                              "labs": {"epochs": 2, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1},
                              "train": {"epochs": 2, "device": "cpu"}})
    finetune_notes(mimic3_cohort, tmp_path / "ft", cfg.notes)
    embed_cohort(mimic3_cohort, tmp_path / "notes", cfg.notes, model=cfg.notes.model, adapter=tmp_path / "ft")
    embedded = json.loads((tmp_path / "notes" / "embed_config.json").read_text())
    assert embedded["unit"] == "text" and embedded["pooling"] == "last" and embedded["adapter"]
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"notes_run": str(tmp_path / "notes")})})
    summary = train_run(mimic3_cohort, tmp_path / "run", cfg)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["train"]
    assert run["lab_values"] is False and run["skip_connections"] is False and run["mi_floor"] is False
    metrics = evaluate_run(tmp_path / "run", "test", n_resamples=0)
    assert summary["best_epoch"] >= 1 and 0.0 <= metrics["at_tuned_thresholds"]["macro"]["auroc"] <= 1.0
