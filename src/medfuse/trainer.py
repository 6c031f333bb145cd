"""The one training loop: MLTM pre-training, LoRA fine-tuning and fusion training all run through :func:`train`.

A :class:`Task` owns its model, its optimisers and the steps of one epoch. :func:`train` owns the rest:

- the epoch budget, validation after every epoch, and early stopping on a validation score (``patience``
  epochs without a better one); the best epoch is kept (:meth:`Task.keep_best`);
- an optional time budget: after each epoch, stop when the mean epoch time says the next would not fit;
- an atomic checkpoint after every epoch (the task's state, the loop's state and the RNG streams) and
  ``resume`` from it, also under another world size;
- progress, a line per epoch;
- under ``torchrun``: rank 0's validation record is broadcast, so every rank takes the same decisions, and
  rank 0 alone writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medfuse import distributed
from medfuse.checkpoint import load_checkpoint, save_checkpoint
from medfuse.progress import ProgressFn, no_progress

Record = dict[str, float]
Tick = Callable[[float, str], None]  # (fraction of the epoch done, detail) for progress


class Task(Protocol):
    def train_epoch(self, epoch: int, tick: Tick) -> Record:
        """Train one epoch (``epoch`` counts from 0); the epoch's training figures."""

    def validate(self) -> Record:
        """The validation figures after an epoch (the same on every rank once broadcast)."""

    def keep_best(self) -> None:
        """Keep the current weights as the best so far."""

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to continue: weights, optimisers, schedules, generators."""

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class StopRule:
    """When training ends: ``epochs`` at most, ``patience`` epochs without a better ``score``."""

    epochs: int
    patience: int
    score: str | Callable[[Record], float]  # a record's key, or a function of the record
    higher_is_better: bool = True
    max_minutes: float = 0.0  # 0 = no time budget

    def value(self, record: Record) -> float:
        return self.score(record) if callable(self.score) else record[self.score]

    def better(self, score: float, best: float) -> bool:
        return score > best if self.higher_is_better else score < best


@dataclass
class TrainResult:
    history: list[Record]
    best: float
    best_epoch: int  # 0: no epoch beat the initial score
    epochs: int
    stopped_early: bool
    seconds: float = field(default=0.0)  # training and validation time of the epochs run here and before a resume


def macro_auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean average precision over labels that have a positive: the validation score of fusion training and
    LoRA fine-tuning."""
    from sklearn.metrics import average_precision_score

    scores = [average_precision_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if y[:, j].any()]
    return float(np.mean(scores)) if scores else float("nan")


def rank_seed(seed: int, epoch: int) -> int:
    """The global torch seed of a rank other than 0 from ``epoch`` on: rank 0 continues the single-process
    stream, the others get their own."""
    return int(np.random.SeedSequence([seed, distributed.rank(), epoch]).generate_state(1)[0])


def train(task: Task, rule: StopRule, *, stage: str, progress: ProgressFn | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, initial_best: float | None = None,
          rank_seeds: int | None = None, describe: Callable[[Record], str] | None = None,
          started: float | None = None) -> TrainResult:
    """Run ``task`` until ``rule`` stops it; returns the history and the best epoch.

    ``initial_best``: the score before training (epoch 0), which an epoch must beat to be kept (default: none).
    ``rank_seeds``: under torchrun, ranks other than 0 draw their own global torch stream seeded from it.
    ``started``: when the time budget started (default: now).
    """
    progress = progress or no_progress
    describe = describe or (lambda r: "")
    started = time.perf_counter() if started is None else started
    world, main = distributed.world_size(), distributed.is_main()
    best = initial_best if initial_best is not None else (-math.inf if rule.higher_is_better else math.inf)
    state = {"epoch": 0, "best": best, "best_epoch": 0 if initial_best is not None else -1, "bad_epochs": 0,
             "history": []}
    path = Path(checkpoint) if checkpoint else None
    if resume and path is not None and path.exists():
        ck = load_checkpoint(path)
        task.load_state_dict(ck.get("task", ck))  # checkpoints before the shared loop: flat
        state = ck["state"]
        if ck.get("world_size", 1) == world and "torch_rng_ranks" in ck:
            torch.set_rng_state(ck["torch_rng_ranks"][distributed.rank()])
        elif main:
            torch.set_rng_state(ck["torch_rng"])
        elif rank_seeds is not None:  # another world size: rank 0 resumes the saved stream, the others start their own
            torch.manual_seed(rank_seed(rank_seeds, state["epoch"]))
    elif not main and rank_seeds is not None:
        torch.manual_seed(rank_seed(rank_seeds, 0))

    plan = rule.epochs  # epochs to run: shrunk to what the time budget allows after each epoch
    while state["epoch"] < plan and state["bad_epochs"] < rule.patience:
        epoch, t0 = state["epoch"], time.perf_counter()

        def tick(fraction: float, detail: str = "", epoch: int = epoch, plan: int = plan) -> None:
            progress(stage, (epoch + fraction) / plan, detail)

        record = {"epoch": epoch + 1, **task.train_epoch(epoch, tick)}
        record.update(task.validate())
        record["seconds"] = time.perf_counter() - t0
        record = distributed.broadcast_object(record)  # rank 0's scores and clock decide on every rank
        state["history"].append(record)
        score = rule.value(record)
        if rule.better(score, state["best"]):
            state.update(best=score, best_epoch=epoch + 1, bad_epochs=0)
            task.keep_best()
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if path is not None:
            rng = {"torch_rng_ranks": distributed.all_gather_object(torch.get_rng_state())} if world > 1 else {}
            if main:
                save_checkpoint(path, {"task": task.state_dict(), "state": state, "torch_rng": torch.get_rng_state(),
                                       "world_size": world, **rng})
            distributed.barrier()  # the other ranks go on once the checkpoint is complete
        progress(stage, state["epoch"] / plan, f"epoch {epoch + 1} {describe(record)} (best {state['best']:.3f})")
        if rule.max_minutes:  # the next epoch must fit: stop when the mean epoch time says it would not
            elapsed = time.perf_counter() - started
            plan = max(state["epoch"], min(rule.epochs, int(60 * rule.max_minutes // (elapsed / state["epoch"]))))
    progress(stage, 1.0)
    return TrainResult(history=state["history"], best=state["best"], best_epoch=state["best_epoch"],
                       epochs=state["epoch"], stopped_early=state["bad_epochs"] >= rule.patience,
                       seconds=sum(r["seconds"] for r in state["history"]))
