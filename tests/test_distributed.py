"""torchrun / DistributedDataParallel: 2 gloo processes on this machine against one process.

The ranks are started with ``torch.multiprocessing`` and join through torchrun's variables (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``...) and :func:`medfuse.distributed.session`, one torch thread each; the CLI test
goes through ``python -m torch.distributed.run`` itself. One spawned job answers the first three checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException
from torch.optim.optimizer import register_optimizer_step_pre_hook

from medfuse.config import LabsConfig, TrainConfig, load_config
from training.test_fusion import make_data

WORLD = 2
GRAD_STEPS = 3  # first optimizer steps compared


# ---------------------------------------------------------------------------------------------------------
# launching ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from medfuse import distributed

    with distributed.session("cpu"):
        assert distributed.world_size() == world and distributed.rank() == rank
        assert distributed.backend() == "gloo"
        fn(rank, *args)


def launch(fn, *args) -> None:
    """``fn(rank, *args)`` in WORLD processes of one gloo job (raises when a rank fails)."""
    mp.start_processes(_rank_main, args=(WORLD, _free_port(), fn, args), nprocs=WORLD, start_method="spawn")


# ---------------------------------------------------------------------------------------------------------
# what the ranks (and the single-process reference) run


def fusion_config(**kw) -> TrainConfig:
    """No dropout of any kind, no MI term in the loss: a deterministic function of the batch. A small learning
    rate: Adam turns last-bit differences of near-zero gradients into whole steps, which later gradients inherit."""
    return TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 3e-4, "device": "cpu", "dropout": 0.0,
                          "modality_dropout": 0.0, "mi_weight": 0.0, "mi_sample": False, **kw})


def labs_config(**kw) -> LabsConfig:
    return LabsConfig(**{"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 4, "epochs": 1,
                         "batch_size": 50, "lr": 3e-3, "device": "cpu", "aggregates": ["last"], **kw})


def train_config(**kw) -> TrainConfig:
    """The full-training comparison: the default model, vCLUB term included, without dropout and modality
    dropout, whose masks each rank draws from its own stream (that alone moves this validation macro-AUPRC
    by up to 0.02, as another seed does in one process)."""
    return TrainConfig(**{"epochs": 8, "batch_size": 64, "lr": 3e-3, "device": "cpu", "patience": 20,
                          "dropout": 0.0, "modality_dropout": 0.0, **kw})


def train_data():
    """800 admissions, half of them validation (a steadier macro-AUPRC than make_data's 10%)."""
    data = make_data(800)
    data.split[:] = np.where(np.arange(800) % 2 == 0, "train", "val")
    return data


def record_grads(run) -> list[np.ndarray]:
    """Every parameter gradient (flattened) at each of the first optimizer steps taken while ``run()`` runs."""
    seen: list[np.ndarray] = []

    def hook(opt, args, kwargs):
        if len(seen) < 2 * GRAD_STEPS:
            seen.append(torch.cat([p.grad.flatten() for g in opt.param_groups for p in g["params"]
                                   if p.grad is not None]).numpy().copy())

    handle = register_optimizer_step_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen


def lab_encoder():
    """A small MLTM encoder that trains with the fusion model (its decoder is unused: find_unused_parameters)."""
    from medfuse.labs.model import MLTM, MLTMConfig

    torch.manual_seed(0)
    return MLTM(MLTMConfig(n_tests=6, n_aggregates=1, d_model=8, encoder_layers=1, decoder_layers=1, heads=2))


def embed_texts() -> list[str]:
    words = ["dyspnea", "edema", "creatinine", "fever", "cough", "infiltrate", "troponin", "chest", "pain",
             "hypertension", "diabetes", "furosemide", "lisinopril", "sepsis", "lactate", "anemia", "hemoglobin"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 40))) for _ in range(40)]
    return texts + texts[:5]  # duplicates are embedded once


def embedder(tiny_bert, cache):
    from medfuse.notes import NoteEmbedder

    # short windows (long texts span several) and small batches (many batches to deal out)
    return NoteEmbedder(tiny_bert, max_length=16, stride=4, batch_size=4, cache_dir=cache, device="cpu",
                        dtype="float32")


def notes_config(tiny_bert: Path):
    return load_config(overrides={"notes": {"model": str(tiny_bert), "cache": False, "unit": "text",
                                            "device": "cpu", "dtype": "float32"}}).notes


def without_dropout(model: Path, out: Path) -> Path:
    """A copy of a model folder whose config turns the model's own dropout off."""
    shutil.copytree(model, out)
    config = json.loads((out / "config.json").read_text())
    config.update({k: 0.0 for k in config if "dropout" in k and isinstance(config[k], float)})
    (out / "config.json").write_text(json.dumps(config))
    return out


def finetune_config(cohort: Path):
    """LoRA fine-tuning on lines of the tiny BERT without any dropout (model, LoRA) or autocast: a deterministic
    function of the batch; one epoch."""
    return load_config(overrides={"notes": {"model": str(cohort / "bert-no-dropout"), "cache": False, "device": "cpu",
                                            "dtype": "float32", "cpu_autocast": "off", "lora_rank": 4,
                                            "lora_dropout": 0.0, "epochs": 1, "train_batch_size": 16,
                                            "lr": 3e-4, "head_lr": 3e-4}}).notes


def stress_key(rank: int, i: int, j: int) -> bytes:
    return hashlib.sha256(f"{rank}-{i}-{j}".encode()).digest()


def run_config(cohort: Path, epochs: int):
    return load_config(overrides={"train": {"labs_run": str(cohort / "labs"), "notes_run": str(cohort / "notes"),
                                            "epochs": epochs, "patience": 20, "device": "cpu"},
                                  "evaluate": {"n_resamples": 10}})


def _job(rank: int, out: Path, cohort: Path, tiny_bert: Path) -> None:
    """Gradients (fusion, MLTM), a full fusion training, sharded embedding, concurrent cache writes, and last
    a ``train`` run that rank 1 leaves after epoch 2 (which ends the job)."""
    from medfuse import distributed
    from medfuse.labs import pretrain
    from medfuse.notes import embed_cohort
    from medfuse.notes.embed import EmbeddingCache
    from medfuse.notes.finetune import finetune_notes
    from medfuse.runs.stages import train_run
    from medfuse.training.fusion import fit

    grads = record_grads(lambda: fit(make_data(190), out / "fusion_grads", fusion_config()))
    np.savez(out / f"fusion_grads_{rank}.npz", *grads)
    grads = record_grads(lambda: fit(make_data(190), out / "encoder_grads", fusion_config(), lab_encoder()))
    np.savez(out / f"encoder_grads_{rank}.npz", *grads)
    grads = record_grads(lambda: pretrain(cohort / "cohort", out / "mltm_grads", labs_config(epochs=2)))
    np.savez(out / f"mltm_grads_{rank}.npz", *grads)

    summary = fit(train_data(), out / "fusion_full", train_config())
    (out / f"fusion_full_{rank}.json").write_text(json.dumps(summary))

    texts = embed_texts()
    first = embedder(tiny_bert, out / "cache")
    vectors = first.embed(texts)
    again = embedder(tiny_bert, out / "cache")
    np.savez(out / f"embed_{rank}.npz", first=vectors, again=again.embed(texts))
    (out / f"embed_{rank}.json").write_text(json.dumps({"first": first.last_stats, "again": again.last_stats}))
    embed_cohort(cohort / "cohort", out / "notes_ddp", notes_config(tiny_bert), chunk=64)  # 5 chunks; rank 0 writes
    grads = record_grads(lambda: finetune_notes(cohort / "cohort", out / "finetune_ddp", finetune_config(cohort)))
    np.savez(out / f"finetune_grads_{rank}.npz", *grads)

    cache = EmbeddingCache(out / "stress", "ns")
    cache.MAX_SHARDS = 3  # both ranks write and merge shards at the same time
    for i in range(12):
        keys = [stress_key(rank, i, j) for j in range(4)]
        cache.put(keys, np.stack([np.frombuffer(k, np.uint8)[:8].astype(np.float32) for k in keys]))
    distributed.barrier()
    (out / f"done_{rank}").touch()

    def progress(stage, fraction, info=""):
        if rank == 1 and info.startswith("epoch 2 bce") and "val AUPRC" in info:
            os._exit(3)  # rank 1 dies after epoch 2

    train_run(cohort / "cohort", out / "killed", run_config(cohort, 4), progress=progress)


def once(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` once per test session, pytest-xdist workers included (they share the folder; the
    others wait on a lock: pytest-xdist's recipe for session fixtures that must run once)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    out = root / name
    with FileLock(f"{out}.lock"):
        if not (out / "ready").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            make(out)
            (out / "ready").touch()
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, tiny_bert):
    """A synthetic MIMIC-IV cohort with a tiny MLTM run and a tiny-BERT note run (single process)."""
    return once(tmp_path_factory, "distributed-cohort", lambda root: make_cohort(root, tiny_bert))


def make_cohort(root: Path, tiny_bert: Path) -> None:
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.labs import pretrain
    from medfuse.notes import embed_cohort

    generate(root / "raw", "mimic4", 300, seed=3)
    prepare_cohort(root / "raw", root / "cohort", load_config(overrides={"prepare": {"source": "mimic4"}}).prepare)
    pretrain(root / "cohort", root / "labs", labs_config())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the reference embeddings are compared bit for bit
    embed_cohort(root / "cohort", root / "notes", notes_config(tiny_bert), chunk=64)  # 5 chunks, as the ranks
    torch.set_num_threads(threads)
    without_dropout(tiny_bert, root / "bert-no-dropout")


@pytest.fixture(scope="module")
def job(cohort, tiny_bert, tmp_path_factory) -> Path:
    return once(tmp_path_factory, "distributed-job", lambda out: run_job(out, cohort, tiny_bert))


def run_job(out: Path, cohort: Path, tiny_bert: Path) -> None:
    with pytest.raises(ProcessException) as ended:  # rank 1 leaves the last run: the job ends there
        launch(_job, out, cohort, tiny_bert)
    if not all((out / f"done_{r}").exists() for r in range(WORLD)):
        raise ended.value


def _grads(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b) == 2 * GRAD_STEPS and [x.shape for x in a] == [x.shape for x in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------------------
# 1. gradients, 2. full training, 3. embedding and cache


@pytest.mark.parametrize("model", ["fusion", "encoder", "mltm"])
def test_two_ranks_of_half_batches_give_the_single_process_gradients(job, cohort, tmp_path, model):
    """2 ranks x b/2 rows (an uneven last batch included) against one process with b rows: both the main
    model's and the vCLUB estimator's gradients of the first steps (fusion; with an MLTM encoder that trains
    along), MLTM's (pre-training)."""
    from medfuse.labs import pretrain
    from medfuse.training.fusion import fit

    if model == "fusion":
        single = record_grads(lambda: fit(make_data(190), tmp_path, fusion_config()))  # 133 train rows: 64, 64, 5
    elif model == "encoder":
        single = record_grads(lambda: fit(make_data(190), tmp_path, fusion_config(), lab_encoder()))
    else:
        single = record_grads(lambda: pretrain(cohort / "cohort", tmp_path, labs_config(epochs=2)))
    ranks = [_grads(job / f"{model}_grads_{r}.npz") for r in range(WORLD)]
    assert _max_diff(ranks[0], ranks[1]) == 0.0  # DDP leaves every rank the same averaged gradient
    diff = _max_diff(ranks[0], single)
    print(f"{model}: max |grad(2 ranks) - grad(1 process)| = {diff:.2e}")
    assert diff < 1e-5
    assert max(float(np.abs(g).max()) for g in single) > 1e-3  # real gradients, not zeros


def test_two_rank_training_matches_one_process(job, tmp_path):
    from medfuse.training.fusion import fit

    single = fit(train_data(), tmp_path, train_config())
    two = json.loads((job / "fusion_full_0.json").read_text())
    assert two == json.loads((job / "fusion_full_1.json").read_text()) | {"seconds": two["seconds"]}
    print(f"val macro-AUPRC: 2 ranks {two['best_val_macro_auprc']:.4f}, 1 process {single['best_val_macro_auprc']:.4f}")
    assert abs(two["best_val_macro_auprc"] - single["best_val_macro_auprc"]) < 0.01
    history = json.loads((job / "fusion_full" / "history.json").read_text())
    assert len(history) == 8 and history[-1]["train_bce"] < 0.8 * history[0]["train_bce"]
    assert two["best_val_macro_auprc"] > 0.6


def test_two_rank_finetuning_matches_one_process(job, cohort, tiny_bert, tmp_path):
    """finetune-notes under torchrun: the LoRA + head gradients of the first steps with 2 ranks of b/2
    admissions equal one process with b, and rank 0 writes the one run folder."""
    from medfuse.notes.finetune import finetune_notes

    single = record_grads(lambda: finetune_notes(cohort / "cohort", tmp_path / "ft", finetune_config(cohort)))
    ranks = [_grads(job / f"finetune_grads_{r}.npz") for r in range(WORLD)]
    assert _max_diff(ranks[0], ranks[1]) == 0.0
    diff = _max_diff(ranks[0], single)
    print(f"finetune: max |grad(2 ranks) - grad(1 process)| = {diff:.2e}")
    assert diff < 1e-5 and max(float(np.abs(g).max()) for g in single) > 1e-3
    two = json.loads((job / "finetune_ddp" / "finetune_config.json").read_text())
    one = json.loads((tmp_path / "ft" / "finetune_config.json").read_text())
    assert two["unit"] == "lines" and abs(two["history"][0]["train_loss"] - one["history"][0]["train_loss"]) < 1e-5
    assert abs(two["best_val_macro_auprc"] - one["best_val_macro_auprc"]) < 1e-3
    assert (job / "finetune_ddp" / "adapter" / "adapter_model.safetensors").is_file()


def test_sharded_embedding_is_bit_identical_and_the_cache_consistent(job, cohort, tiny_bert):
    from medfuse.notes import load_note_embeddings
    from medfuse.notes.embed import EmbeddingCache, text_key

    texts = embed_texts()
    single = embedder(tiny_bert, False)
    reference = single.embed(texts)
    unique = len(set(texts))
    assert single.last_stats["long_texts"] > 0 and single.last_stats["windows"] > 3 * 4  # several batches
    for r in range(WORLD):
        with np.load(job / f"embed_{r}.npz") as f:
            assert np.array_equal(f["first"], reference) and np.array_equal(f["again"], reference)
        stats = json.loads((job / f"embed_{r}.json").read_text())
        assert (stats["first"]["computed"], stats["again"]["computed"], stats["again"]["cached"]) == (
            unique, 0, len(texts))
    # a cohort's note embeddings (embed-notes) too, written once by rank 0
    for want, got in zip(load_note_embeddings(cohort / "notes"), load_note_embeddings(job / "notes_ddp"), strict=True):
        assert np.array_equal(want, got)
    assert sorted(p.name for p in (job / "notes_ddp").iterdir()) == ["embed_config.json", "note_embeddings.parquet"]
    # the shared cache: rank 0 wrote every text once, nothing half-written
    folder = next((job / "cache").iterdir())
    assert len(list(folder.glob("shard-*.safetensors"))) == 1 and not list(folder.glob(".*.tmp"))
    found, vectors = EmbeddingCache(job / "cache", folder.name).get([text_key(t) for t in texts])
    assert found.all() and np.array_equal(vectors, reference)
    # both ranks writing and merging shards at once: every vector is there once, exactly
    stress = EmbeddingCache(job / "stress", "ns")
    keys = [stress_key(r, i, j) for r in range(WORLD) for i in range(12) for j in range(4)]
    found, vectors = stress.get(keys)
    assert found.all() and not list(stress.dir.glob(".*.tmp"))
    assert np.array_equal(vectors, np.stack([np.frombuffer(k, np.uint8)[:8].astype(np.float32) for k in keys]))
    assert len(list(stress.dir.glob("shard-*.safetensors"))) <= 4


# ---------------------------------------------------------------------------------------------------------
# 4. a run killed at rank 1, resumed on another world size; 5. the CLI under torchrun


def test_run_killed_at_rank_1_resumes_on_one_process(job, cohort):
    from medfuse.checkpoint import load_checkpoint
    from medfuse.runs.stages import train_run

    run = job / "killed"
    info = json.loads((run / "run.json").read_text())
    assert (info["world_size"], info["backend"]) == (2, "gloo")
    ck = load_checkpoint(run / "checkpoint.safetensors")
    assert ck["world_size"] == 2 and ck["state"]["epoch"] == 2 and len(ck["torch_rng_ranks"]) == 2
    assert not (run / "thresholds.json").exists()

    summary = train_run(cohort / "cohort", run, run_config(cohort, 4), resume=True)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and summary["epochs"] == 4
    assert history[:2] == ck["state"]["history"]  # epochs 1-2 come from the killed run, not trained again
    assert json.loads((run / "run.json").read_text())["world_size"] == 1
    assert (run / "thresholds.json").exists()


def test_torchrun_cli_train_writes_one_run_folder(cohort, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"""
[labs]
epochs = 1
d_model = 32
encoder_layers = 1
decoder_layers = 1
device = "cpu"
[train]
notes_run = "{cohort / 'notes'}"
epochs = 2
device = "cpu"
""")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "medfuse.cli", "train", str(cohort / "cohort"), "--out", str(run), "--config",
                           str(config)], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert (info["world_size"], info["backend"]) == (2, "gloo")
    assert len(json.loads((run / "history.json").read_text())) == 2
    for name in ("model.safetensors", "checkpoint.safetensors", "thresholds.json", "labs/model.safetensors",
                 "labs/history.json", "labs/reconstruction.json"):
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob(".*") if p.is_file()]  # no temporary file left behind
    assert done.stdout.count("best_val_macro_auprc") == 1  # rank 0 alone reports
