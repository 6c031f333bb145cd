"""Train a fusion model (MEDFuse or a neural baseline) on :class:`FusionData`.

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
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfuse import distributed
from medfuse.config import TrainConfig
from medfuse.progress import ProgressFn, no_progress
from medfuse.torch_utils import resolve_device, warmup_cosine
from medfuse.training.checkpoint import atomic_save_tensors, load_checkpoint, save_checkpoint
from medfuse.training.inputs import FusionData

CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
MODEL_CONFIG_FILE = "model_config.json"


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


def fusion_config(cfg: TrainConfig):
    """The fusion model's own config from the ``[train]`` section (same key names)."""
    from medfuse.fusion import FusionConfig

    names = {f.name for f in dataclasses.fields(FusionConfig)}
    return FusionConfig(**{k: v for k, v in cfg.model_dump().items() if k in names})


def build_net(cfg: TrainConfig, data: FusionData, lab_encoder: nn.Module | None = None) -> FusionNet:
    """A fresh :class:`FusionNet` for ``data``'s shapes, seeded by ``cfg.seed``."""
    from medfuse.fusion import build_model

    torch.manual_seed(cfg.seed)
    _, t, v = data.lab_values.shape if cfg.lab_values else (0, 0, 0)
    fusion = build_model(fusion_config(cfg), d_note=data.note.shape[1], d_lab=data.lab_tokens.shape[2] + v,
                         n_lab_tokens=data.lab_tokens.shape[1], n_labels=data.y.shape[1],
                         d_lab_pooled=data.lab_pooled.shape[1] + t * v)
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


def macro_auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean average precision over labels that have a positive (the early-stopping metric)."""
    from sklearn.metrics import average_precision_score

    scores = [average_precision_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if y[:, j].any()]
    return float(np.mean(scores)) if scores else float("nan")


def rank_seed(seed: int, epoch: int) -> int:
    """The global torch seed of a rank other than 0 (dropout, modality dropout, vCLUB negatives) from
    ``epoch`` on: rank 0 continues the single-process stream, the others get their own."""
    return int(np.random.SeedSequence([seed, distributed.rank(), epoch]).generate_state(1)[0])


def fit(data: FusionData, run_dir: str | Path, cfg: TrainConfig, lab_encoder: nn.Module | None = None,
        resume: bool = False, progress: ProgressFn | None = None, stage: str = "train") -> dict:
    """Train, keep the best epoch's weights in ``run_dir/model.safetensors``; returns a summary.

    Under torchrun every rank calls it with the same arguments; only rank 0 writes ``run_dir``.
    """
    progress = progress or no_progress
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world, main = distributed.world_size(), distributed.is_main()
    device = distributed.rank_device(resolve_device(cfg.device))
    net = build_net(cfg, data, lab_encoder).to(device)
    main_opt = torch.optim.AdamW(net.main_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    est_params = net.estimator_parameters()
    est_opt = torch.optim.AdamW(est_params, lr=cfg.estimator_lr) if est_params else None
    train_rows, val_rows = data.rows("train"), data.rows("val")
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(main_opt, warmup_cosine(cfg.epochs * steps_per_epoch, cfg.warmup_fraction))
    y = torch.from_numpy(data.y).to(device)
    pos_weight = None
    if cfg.pos_weight:
        pos = data.y[train_rows].sum(0)
        pos_weight = torch.tensor(np.clip((len(train_rows) - pos) / np.maximum(pos, 1), 1, 100), dtype=torch.float32,
                                  device=device)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # the global order: the same on every rank
    state = {"epoch": 0, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if main:
        (run_dir / MODEL_CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))

    ckpt_path = run_dir / CHECKPOINT_FILE
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        net.load_state_dict(ck["model"])
        main_opt.load_state_dict(ck["main_opt"])
        if est_opt is not None:
            est_opt.load_state_dict(ck["est_opt"])
        sched.load_state_dict(ck["sched"])
        shuffle.set_state(ck["shuffle_rng"])
        state = ck["state"]
        if ck.get("world_size", 1) == world and "torch_rng_ranks" in ck:
            torch.set_rng_state(ck["torch_rng_ranks"][distributed.rank()])
        elif main:
            torch.set_rng_state(ck["torch_rng"])
        else:  # another world size: rank 0 resumes the saved stream, the others start their own
            torch.manual_seed(rank_seed(cfg.seed, state["epoch"]))
    elif not main:
        torch.manual_seed(rank_seed(cfg.seed, 0))

    # DDP: the main model without the estimator, which has its own optimizer and its own DDP module
    model = distributed.wrap(net, device, ignore=est_params, find_unused_parameters=lab_encoder is not None)
    estimator = distributed.wrap(EstimatorLoss(net.fusion), device) if est_opt is not None else None
    net.train()
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch, t0 = state["epoch"], time.perf_counter()
        order = train_rows[torch.randperm(len(train_rows), generator=shuffle).numpy()]
        sums = {"bce": 0.0, "mi": 0.0, "estimator": 0.0}  # batch means, summed over steps (and ranks)
        for step in range(steps_per_epoch):
            rows, weight = distributed.batch_part(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            share = weight / world  # this rank's share of the batch mean
            out = model(data.tensors(rows, device))
            if est_opt is not None:
                est_loss = estimator(out)
                est_opt.zero_grad(set_to_none=True)
                (est_loss * weight).backward()
                est_opt.step()
                sums["estimator"] += est_loss.item() * share
            loss, parts = net.fusion.main_loss(out, y[rows], pos_weight)
            sums["bce"] += parts["bce"] * share
            sums["mi"] += parts.get("mi", 0.0) * share
            main_opt.zero_grad(set_to_none=True)
            (loss * weight).backward()
            nn.utils.clip_grad_norm_(net.main_parameters(), cfg.grad_clip)
            main_opt.step()
            sched.step()
            done = (epoch + (step + 1) / steps_per_epoch) / cfg.epochs
            progress(stage, done, f"epoch {epoch + 1} bce {sums['bce'] * world / (step + 1):.4f}")
        if world > 1:
            sums = dict(zip(sums, map(float, distributed.all_reduce_sum(list(sums.values())))))
        shard = val_rows[distributed.shard_slice(len(val_rows))]
        val_prob = distributed.gather_rows(predict(net, data, shard, device))
        score = distributed.broadcast_object(macro_auprc(data.y[val_rows], val_prob))  # rank 0's decides
        record = {"epoch": epoch + 1, **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
                  "val_macro_auprc": score, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        state["history"].append(record)
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch + 1, bad_epochs=0)
            if main:
                atomic_save_tensors(net.state_dict(), run_dir / MODEL_FILE)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        rng = {"torch_rng_ranks": distributed.all_gather_object(torch.get_rng_state())} if world > 1 else {}
        if main:
            save_checkpoint(ckpt_path, {
                "model": net.state_dict(), "main_opt": main_opt.state_dict(),
                "est_opt": est_opt.state_dict() if est_opt is not None else {}, "sched": sched.state_dict(),
                "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(), "state": state,
                "world_size": world, **rng,
            })
        distributed.barrier()  # the other ranks go on once the checkpoint is complete
        progress(stage, state["epoch"] / cfg.epochs,
                 f"epoch {epoch + 1} bce {record['train_bce']:.4f} mi {record['train_mi']:.3f} "
                 f"val AUPRC {score:.3f} (best {state['best']:.3f})")
    progress(stage, 1.0)
    if main:
        (run_dir / HISTORY_FILE).write_text(json.dumps(state["history"], indent=2))
    distributed.barrier()
    return {"best_val_macro_auprc": state["best"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
            "seconds": sum(r["seconds"] for r in state["history"])}


def load_net(run_dir: str | Path, data: FusionData, lab_encoder: nn.Module | None = None) -> FusionNet:
    """The best weights of a trained run, ready for :func:`predict`."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    cfg = TrainConfig.model_validate(json.loads((run_dir / MODEL_CONFIG_FILE).read_text()))
    net = build_net(cfg, data, lab_encoder)
    net.load_state_dict(load_file(str(run_dir / MODEL_FILE)))
    return net.eval()
