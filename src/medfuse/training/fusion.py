"""Fusion training: MEDFuse or a neural baseline on :class:`FusionData`, as a task of the shared loop (:mod:`medfuse.trainer`).

Two optimizers alternate on every batch, as in CLUB: the vCLUB estimator first takes a step on its
log-likelihood of the (detached) shared feature, then the main model takes a step on
BCE + lambda * vCLUB upper bound. AdamW with linear warm-up and cosine decay; early stopping on
validation macro-AUPRC. After every epoch a checkpoint (weights, both optimizers, scheduler, RNG
states, history) is written atomically, so ``resume=True`` continues a killed run to the same result.

Under ``torchrun`` (:mod:`medfuse.distributed`) the main model and the estimator are each wrapped in
``DistributedDataParallel``; every global batch (the single-process one: same shuffling) is split over the
ranks and each rank's loss weighted so that the averaged gradient is the whole batch's; validation is
predicted in shards and gathered; rank 0's score decides early stopping and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfuse import distributed
from medfuse.checkpoint import atomic_save_tensors
from medfuse.config import TrainConfig
from medfuse.progress import ProgressFn
from medfuse.torch_utils import resolve_device, warmup_cosine
from medfuse.trainer import StopRule, macro_auprc, train
from medfuse.training.inputs import FusionData, InputSizes

CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
MODEL_CONFIG_FILE = "model_config.json"
STANDARDISATION_FILE = "note_standardisation.safetensors"


class FusionNet(nn.Module):
    """A fusion model over FusionData batches; with ``lab_encoder`` the MLTM encoder trains too.

    With ``lab_values`` every lab token also carries its test's value channels (``FusionData.lab_values``)
    and the pooled lab vector all of them, flattened: a skip connection around the MLTM encoder.
    """

    def __init__(self, fusion: nn.Module, lab_encoder: nn.Module | None = None, lab_values: bool = False):
        super().__init__()
        self.fusion = fusion
        self.lab_encoder = lab_encoder
        self.lab_values = lab_values

    def forward(self, batch: dict[str, torch.Tensor]):
        if self.lab_encoder is not None:
            pooled, tokens = self.lab_encoder.embed(batch["lab_x"], batch["lab_observed"])
        else:
            pooled, tokens = batch["lab_pooled"], batch["lab_tokens"]
        if self.lab_values:
            values = batch["lab_values"]  # [N, T, V]; tokens are aggregate-major: A blocks of T tests
            tokens = torch.cat([tokens, values.repeat(1, tokens.shape[1] // values.shape[1], 1)], -1)
            pooled = torch.cat([pooled, values.flatten(1)], -1)
        return self.fusion(batch["note"], batch["note_missing"], tokens, pooled, batch["lab_missing"],
                           batch["lab_observed"])

    def main_parameters(self) -> list[nn.Parameter]:
        extra = list(self.lab_encoder.parameters()) if self.lab_encoder is not None else []
        return list(self.fusion.main_parameters()) + extra

    def estimator_parameters(self) -> list[nn.Parameter]:
        return list(self.fusion.estimator_parameters())


class EstimatorLoss(nn.Module):
    """The vCLUB estimator's own loss as a module holding the estimator's parameters only, so that
    ``DistributedDataParallel`` averages its gradients apart from the main model's."""

    def __init__(self, fusion: nn.Module):
        super().__init__()
        self.club = fusion.club
        self.loss = fusion.estimator_loss  # a bound method: the fusion model is not registered here

    def forward(self, out):
        return self.loss(out)


def build_net(cfg: TrainConfig, sizes: InputSizes, lab_encoder: nn.Module | None = None) -> FusionNet:
    """A fresh :class:`FusionNet` for inputs of ``sizes``, seeded by ``cfg.seed``."""
    from medfuse.fusion import build_model

    torch.manual_seed(cfg.seed)
    t, v = (sizes.n_tests, sizes.n_values) if cfg.lab_values else (0, 0)
    fusion = build_model(cfg.fusion, d_note=sizes.d_note, d_lab=sizes.d_lab + v,
                         n_lab_tokens=sizes.n_lab_tokens, n_labels=sizes.n_labels, d_lab_pooled=sizes.d_lab + t * v)
    return FusionNet(fusion, lab_encoder, cfg.lab_values)


@torch.inference_mode()
def predict(net: FusionNet, data: FusionData, rows: np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Probabilities ``[len(rows), L]`` (eval mode: no dropout, no modality dropout)."""
    was_training = net.training
    net.eval()
    out = [torch.sigmoid(net(data.tensors(rows[i : i + batch_size], device)).logits).float().cpu().numpy()
           for i in range(0, len(rows), batch_size)]
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, data.y.shape[1]), dtype=np.float32)


class FusionTask:
    """Fusion training as a :class:`~medfuse.trainer.Task`. Two optimizers alternate on every batch, as in
    CLUB: the vCLUB estimator steps on its log-likelihood of the (detached) shared feature, then the main
    model on BCE + lambda * vCLUB upper bound; AdamW with linear warm-up and cosine decay."""

    def __init__(self, data: FusionData, run_dir: Path, cfg: TrainConfig, lab_encoder: nn.Module | None):
        self.data, self.run_dir, self.cfg, self.main = data, run_dir, cfg, distributed.is_main()
        self.world = distributed.world_size()
        self.device = device = distributed.rank_device(resolve_device(cfg.device))
        self.net = net = build_net(cfg, data.sizes(), lab_encoder).to(device)
        self.main_opt = torch.optim.AdamW(net.main_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        est_params = net.estimator_parameters()
        self.est_opt = torch.optim.AdamW(est_params, lr=cfg.estimator_lr) if est_params else None
        self.train_rows, self.val_rows = data.rows("train"), data.rows("val")
        self.steps = math.ceil(len(self.train_rows) / cfg.batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.main_opt,
                                                       warmup_cosine(cfg.epochs * self.steps, cfg.warmup_fraction))
        self.y = torch.from_numpy(data.y).to(device)
        self.pos_weight = None
        if cfg.pos_weight:
            pos = data.y[self.train_rows].sum(0)
            self.pos_weight = torch.tensor(np.clip((len(self.train_rows) - pos) / np.maximum(pos, 1), 1, 100),
                                           dtype=torch.float32, device=device)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # the global order: the same on every rank
        # DDP: the main model without the estimator, which has its own optimizer and its own DDP module
        self.model = distributed.wrap(net, device, ignore=est_params, find_unused_parameters=lab_encoder is not None)
        self.estimator = distributed.wrap(EstimatorLoss(net.fusion), device) if self.est_opt is not None else None

    def train_epoch(self, epoch: int, tick) -> dict[str, float]:
        net, cfg, world = self.net, self.cfg, self.world
        net.train()
        order = self.train_rows[torch.randperm(len(self.train_rows), generator=self.shuffle).numpy()]
        sums = {"bce": 0.0, "mi": 0.0, "estimator": 0.0}  # batch means, summed over steps (and ranks)
        for step in range(self.steps):
            rows, weight = distributed.batch_part(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            share = weight / world  # this rank's share of the batch mean
            out = self.model(self.data.tensors(rows, self.device))
            if self.est_opt is not None:
                est_loss = self.estimator(out)
                self.est_opt.zero_grad(set_to_none=True)
                (est_loss * weight).backward()
                self.est_opt.step()
                sums["estimator"] += est_loss.item() * share
            loss, parts = net.fusion.main_loss(out, self.y[rows], self.pos_weight)
            sums["bce"] += parts["bce"] * share
            sums["mi"] += parts.get("mi", 0.0) * share
            self.main_opt.zero_grad(set_to_none=True)
            (loss * weight).backward()
            nn.utils.clip_grad_norm_(net.main_parameters(), cfg.grad_clip)
            self.main_opt.step()
            self.sched.step()
            tick((step + 1) / self.steps, f"epoch {epoch + 1} bce {sums['bce'] * world / (step + 1):.4f}")
        if world > 1:
            sums = dict(zip(sums, map(float, distributed.all_reduce_sum(list(sums.values())))))
        return {f"train_{k}": v / self.steps for k, v in sums.items()}

    def validate(self) -> dict[str, float]:
        shard = self.val_rows[distributed.shard_slice(len(self.val_rows))]
        prob = distributed.gather_rows(predict(self.net, self.data, shard, self.device))
        return {"val_macro_auprc": macro_auprc(self.data.y[self.val_rows], prob), "lr": self.sched.get_last_lr()[0]}

    def keep_best(self) -> None:
        if self.main:
            atomic_save_tensors(self.net.state_dict(), self.run_dir / MODEL_FILE)

    def state_dict(self) -> dict:
        return {"model": self.net.state_dict(), "main_opt": self.main_opt.state_dict(),
                "est_opt": self.est_opt.state_dict() if self.est_opt is not None else {},
                "sched": self.sched.state_dict(), "shuffle_rng": self.shuffle.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.main_opt.load_state_dict(state["main_opt"])
        if self.est_opt is not None:
            self.est_opt.load_state_dict(state["est_opt"])
        self.sched.load_state_dict(state["sched"])
        self.shuffle.set_state(state["shuffle_rng"])


def describe(record: dict) -> str:
    return (f"bce {record['train_bce']:.4f} mi {record['train_mi']:.3f} val AUPRC {record['val_macro_auprc']:.3f}")


def fit(data: FusionData, run_dir: str | Path, cfg: TrainConfig, lab_encoder: nn.Module | None = None,
        resume: bool = False, progress: ProgressFn | None = None, stage: str = "train") -> dict:
    """Train, keep the best epoch's weights in ``run_dir/model.safetensors``; returns a summary.

    Early stopping on validation macro-AUPRC; after every epoch a checkpoint (weights, both optimizers,
    scheduler, RNG states, history) is written atomically, so ``resume=True`` continues a killed run to the
    same result. Under torchrun every rank calls it with the same arguments; only rank 0 writes ``run_dir``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = FusionTask(data, run_dir, cfg, lab_encoder)
    if distributed.is_main():
        save_model_config(run_dir, cfg, data)
    result = train(task, StopRule(cfg.epochs, cfg.patience, "val_macro_auprc"), stage=stage, progress=progress,
                   checkpoint=run_dir / CHECKPOINT_FILE, resume=resume, rank_seeds=cfg.seed, describe=describe)
    if distributed.is_main():
        (run_dir / HISTORY_FILE).write_text(json.dumps(result.history, indent=2))
    distributed.barrier()
    return {"best_val_macro_auprc": result.best, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "seconds": result.seconds}


def save_model_config(folder: Path, cfg: TrainConfig, data: FusionData) -> None:
    """``model_config.json`` (the settings and the input sizes the weights are built for) and
    ``note_standardisation.safetensors`` (the training split's note statistics): a fusion model folder
    loads from these and its weights alone."""
    from safetensors.numpy import save_file

    config = {"train": cfg.model_dump(mode="json"), "inputs": dataclasses.asdict(data.sizes())}
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file({"mean": np.ascontiguousarray(data.note_mean, np.float32),
               "std": np.ascontiguousarray(data.note_std, np.float32)}, str(folder / STANDARDISATION_FILE))


def read_model_config(folder: str | Path) -> tuple[TrainConfig, InputSizes]:
    """The settings and input sizes of a fusion model folder (see :func:`save_model_config`)."""
    path = Path(folder) / MODEL_CONFIG_FILE
    config = json.loads(path.read_text())
    if "inputs" not in config:
        raise ValueError(f"{path}: written before models described their inputs (medfuse 0.1); "
                         "train the run again with this version")
    return TrainConfig.model_validate(config["train"]), InputSizes(**config["inputs"])


def load_net(folder: str | Path, lab_encoder: nn.Module | None = None) -> FusionNet:
    """The best weights of a trained fusion model folder (a run, or a bundle's ``fusion/``), ready for
    :func:`predict`; nothing but the folder is read."""
    from safetensors.torch import load_file

    cfg, sizes = read_model_config(folder)
    net = build_net(cfg, sizes, lab_encoder)
    net.load_state_dict(load_file(str(Path(folder) / MODEL_FILE)))
    return net.eval()


def load_note_standardisation(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` the note vectors of a fusion model folder are standardised with."""
    from safetensors.numpy import load_file

    stats = load_file(str(Path(folder) / STANDARDISATION_FILE))
    return stats["mean"], stats["std"]


def lab_encoder(mode: str, labs_run: Path, seed: int):
    """The MLTM encoder the fusion model trains with: None (frozen), the pretrained one, or a fresh one."""
    if mode == "frozen":
        return None
    import torch

    from medfuse.labs import LabEmbedder
    from medfuse.labs.model import MLTM

    model = LabEmbedder.load(labs_run, device="cpu").model
    if mode == "scratch":
        torch.manual_seed(seed)
        model = MLTM(model.cfg)
    return model.train()
