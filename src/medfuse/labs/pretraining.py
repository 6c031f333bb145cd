"""Pre-training of the MLTM lab embedder on a cohort's training split.

``pretrain(cohort, out_dir, cfg)`` trains with AdamW, linear warm-up + cosine decay, early stopping on
the validation reconstruction error (a fixed validation masking, so epochs are comparable) and writes
the run folder described in docs/labs.md.

Under ``torchrun`` (:mod:`medfuse.distributed`) the model is wrapped in ``DistributedDataParallel``: every
rank draws the single-process shuffling and masking of each global batch, trains on its share of the rows
with a loss weight that makes the averaged gradient the whole batch's, evaluates its share of the
validation set; rank 0's validation loss decides early stopping and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from medfuse import distributed
from medfuse.config import LabsConfig
from medfuse.data.cohort import Cohort
from medfuse.labs.model import MLTM, MLTMConfig, masked_mse, random_masking
from medfuse.progress import ProgressFn, no_progress
from medfuse.torch_utils import resolve_device, warmup_cosine
from medfuse.trainer import StopRule, train

MODEL_FILE, CONFIG_FILE, VOCAB_FILE, HISTORY_FILE = "model.safetensors", "config.json", "vocab.json", "history.json"
CHECKPOINT_FILE = "checkpoint.safetensors"  # while training: the last epoch's state, for ``resume``
VAL_MASK_SEED_OFFSET = 7919


@dataclass
class PretrainResult:
    run_dir: str
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    train_seconds: float
    train_admissions: int
    admissions_per_second: float
    peak_memory_mb: float
    device: str
    history: dict = field(repr=False, default_factory=dict)


def cohort_values(cohort: Cohort, split: str | None, aggregates: list[str], normalized: bool = True) -> np.ndarray:
    """[N, T * A] float32, aggregate-major (all tests' ``aggregates[0]``, then ``aggregates[1]``...)."""
    return np.concatenate([cohort.lab_values(split, a, normalized=normalized) for a in aggregates], axis=1)


def lab_vocab(cohort: Cohort, aggregates: list[str]) -> dict:
    """Everything the embedder needs to map original-unit values to tokens without the cohort."""
    t = cohort.lab_tests
    col = {name: t.column(name).to_pylist() for name in t.column_names}
    return {
        "keys": col["key"],
        "itemids": col.get("itemid", [None] * t.num_rows),
        "labels": col.get("label", [None] * t.num_rows),
        "units": col.get("unit", [None] * t.num_rows),
        "median": [float(v) for v in col["median"]],
        "scale": [float(v) for v in col["scale"]],
        "clip": float(cohort.manifest["lab_normalization"]["clip"]),
        "aggregates": list(aggregates),
        "source": cohort.manifest.get("source"),
        "cohort": str(cohort.path),
    }


def model_config(n_tests: int, cfg: LabsConfig) -> MLTMConfig:
    return MLTMConfig(
        n_tests=n_tests, n_aggregates=len(cfg.aggregates), d_model=cfg.d_model, encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
    )


@torch.no_grad()
def evaluate(model: MLTM, x: torch.Tensor, mask_ratio: float, seed: int, batch_size: int = 1024) -> float:
    """Reconstruction MSE (normalised units) on the hidden observed values, with a masking fixed by ``seed``.

    Under torchrun each rank evaluates its share of the rows and the sums are added over ranks.
    """
    model.eval()
    observed = ~torch.isnan(x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    visible = random_masking(observed, mask_ratio, gen)  # drawn once for the whole set: same mask every epoch
    share = distributed.shard_slice(len(x))
    total, count = 0.0, 0
    for i in range(share.start, share.stop, batch_size):
        sl = slice(i, min(i + batch_size, share.stop))
        pred, _, hidden = model(x[sl], observed[sl], visible=visible[sl])
        loss, n = masked_mse(pred, x[sl], hidden)
        total, count = total + float(loss) * n, count + n
    if distributed.is_distributed():
        total, count = distributed.all_reduce_sum([total, count])
    return total / max(count, 1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class MLTMTask:
    """MLTM pre-training as a :class:`~medfuse.trainer.Task`: AdamW (no decay on embeddings, biases and
    norms), linear warm-up + cosine decay, a fresh 75% masking of every batch; validation reconstruction
    error with a masking fixed for the whole run, so epochs are comparable.

    Under torchrun every rank draws the single-process shuffling and masking of each global batch and
    trains on its share of the rows with a loss weight that makes the averaged gradient the whole batch's."""

    def __init__(self, model: MLTM, x_train: torch.Tensor, eval_set: torch.Tensor, cfg: LabsConfig,
                 device: torch.device):
        self.model, self.x_train, self.eval_set, self.cfg = model, x_train, eval_set, cfg
        is_matrix = {n: p.ndim == 2 and n.endswith(".weight") for n, p in model.named_parameters()}  # Linear weights
        decay = [p for n, p in model.named_parameters() if is_matrix[n]]
        no_decay = [p for n, p in model.named_parameters() if not is_matrix[n]]  # embeddings, biases, norms
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.95),
        )
        self.steps = math.ceil(len(x_train) / cfg.batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(self.steps * cfg.epochs,
                                                                               cfg.warmup_fraction))
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.masking = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # the same draws on every rank
        self.ddp = distributed.wrap(model, device)
        self.val_seed = cfg.seed + VAL_MASK_SEED_OFFSET
        self.step_loss: list[float] = []
        self.best_state = self._weights()

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def train_epoch(self, epoch: int, tick) -> dict[str, float]:
        cfg, world, x_train = self.cfg, distributed.world_size(), self.x_train
        self.model.train()
        perm = torch.randperm(len(x_train), generator=self.shuffle).to(x_train.device)
        total, count = 0.0, 0
        for step, i in enumerate(range(0, len(x_train), cfg.batch_size)):
            xb = x_train[perm[i : i + cfg.batch_size]]
            observed = ~torch.isnan(xb)
            visible = random_masking(observed, cfg.mask_ratio, self.masking)  # the whole batch's masking
            n = int((observed & ~visible).sum())  # hidden values of the whole batch
            part = distributed.shard_slice(len(xb))
            real = part.stop > part.start
            if not real:  # a rank left without rows takes the first one with weight 0
                part = slice(0, 1)
            pred, _, hidden = self.ddp(xb[part], observed[part], visible=visible[part])
            loss, n_part = masked_mse(pred, xb[part], hidden)
            n_part *= real
            weight = world * n_part / n if n else 0.0
            self.opt.zero_grad(set_to_none=True)
            if n:
                (loss * weight).backward()  # DDP averages over ranks: the gradient of the whole batch's mean
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.opt.step()
            self.sched.step()
            loss_value = float(loss.detach())
            if world > 1:
                loss_value = float(distributed.all_reduce_sum([loss_value * n_part])[0]) / max(n, 1)
            total, count = total + loss_value * n, count + n
            self.step_loss.append(loss_value)
            tick((step + 1) / self.steps, f"epoch {epoch + 1} loss {total / max(count, 1):.4f}")
        return {"train_loss": total / max(count, 1)}

    def validate(self) -> dict[str, float]:
        return {"val_loss": evaluate(self.model, self.eval_set, self.cfg.mask_ratio, self.val_seed),
                "lr": self.sched.get_last_lr()[0]}

    def keep_best(self) -> None:
        self.best_state = self._weights()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "best": self.best_state, "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "shuffle_rng": self.shuffle.get_state(),
                "mask_rng": self.masking.get_state(), "step_loss": torch.tensor(self.step_loss, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.best_state = state["best"]
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.shuffle.set_state(state["shuffle_rng"])
        self.masking.set_state(state["mask_rng"])
        self.step_loss = state["step_loss"].tolist()


def pretrain(
    cohort: Cohort | str | Path,
    out_dir: str | Path,
    cfg: LabsConfig | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> PretrainResult:
    """Train MLTM on the training split, early-stop on validation, save the run folder.

    ``progress(stage, fraction, info)`` reports the share of the epoch budget done and the running loss.
    With ``resume`` a run killed after an epoch continues from ``out_dir/checkpoint.safetensors``.
    """
    t_start = time.perf_counter()
    cfg = cfg or LabsConfig()
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = distributed.rank_device(resolve_device(cfg.device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    progress = progress or no_progress
    progress("MLTM: loading labs", 0.0)
    x_train = torch.from_numpy(cohort_values(cohort, "train", cfg.aggregates))
    x_val = torch.from_numpy(cohort_values(cohort, "val", cfg.aggregates))
    x_train = x_train[(~torch.isnan(x_train)).any(1)].to(device)  # admissions without labs have no targets
    x_val = x_val[(~torch.isnan(x_val)).any(1)].to(device)
    if len(x_train) == 0:
        raise ValueError(f"{cohort.path}: no training admission has a lab value")
    progress("MLTM: loading labs", 1.0)

    torch.manual_seed(cfg.seed)
    model = MLTM(model_config(len(cohort.lab_keys), cfg)).to(device)
    eval_set = x_val if len(x_val) else x_train  # no validation admissions: fall back to the training set
    task = MLTMTask(model, x_train, eval_set, cfg, device)
    initial_val = evaluate(model, eval_set, cfg.mask_ratio, task.val_seed)
    run = train(task, StopRule(cfg.epochs, cfg.patience, "val_loss", higher_is_better=False), stage="MLTM: training",
                progress=progress, initial_best=initial_val, checkpoint=out / CHECKPOINT_FILE, resume=resume,
                describe=lambda r: f"loss {r['train_loss']:.4f} val {r['val_loss']:.4f}")
    model.load_state_dict(task.best_state)

    history = {key: [r[key] for r in run.history] for key in ("epoch", "train_loss", "val_loss", "lr", "seconds")}
    history.update(step_loss=task.step_loss, initial_val_loss=initial_val)
    result = PretrainResult(
        run_dir=str(out), best_epoch=run.best_epoch, best_val_loss=run.best, epochs_run=run.epochs,
        stopped_early=run.stopped_early, seconds=time.perf_counter() - t_start, train_seconds=run.seconds,
        train_admissions=len(x_train), admissions_per_second=run.epochs * len(x_train) / max(run.seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(device), device=str(device),
    )
    history["summary"] = {k: v for k, v in asdict(result).items() if k != "history"}
    history["val_admissions"] = len(x_val)
    result.history = history
    if distributed.is_main():
        save_run(out, model, cfg, lab_vocab(cohort, cfg.aggregates), history)
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete
    distributed.barrier()
    return result


def save_run(out: Path, model: MLTM, cfg: LabsConfig, vocab: dict, history: dict | None = None) -> None:
    """Write ``model.safetensors``, ``config.json``, ``vocab.json`` (and ``history.json``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / MODEL_FILE), metadata={"format": "pt", "model": "medfuse.labs.MLTM"})
    config = {"model": model.cfg.to_dict(), "train": cfg.model_dump(mode="json"), "mask_ratio": cfg.mask_ratio}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (out / VOCAB_FILE).write_text(json.dumps(vocab, indent=2) + "\n")
    if history is not None:
        (out / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
