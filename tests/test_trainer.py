"""The shared training loop on a scripted task: stopping, the best epoch, the time budget, checkpoints."""

from __future__ import annotations

import pytest
import torch

from medfuse.trainer import StopRule, train


class Scripted:
    """A task whose validation scores are given in advance; its 'weights' are the epoch count."""

    def __init__(self, scores: list[float], sleep=None):
        self.scores, self.sleep, self.done, self.kept = scores, sleep, 0, None
        self.ticks: list[float] = []

    def train_epoch(self, epoch, tick):
        for step in range(4):
            tick((step + 1) / 4, f"epoch {epoch + 1}")
        if self.sleep:
            self.sleep()
        self.done += 1
        return {"train_loss": 1.0 / self.done}

    def validate(self):
        return {"val": self.scores[self.done - 1]}

    def keep_best(self):
        self.kept = self.done

    def state_dict(self):
        return {"done": torch.tensor(self.done), "kept": torch.tensor(-1 if self.kept is None else self.kept)}

    def load_state_dict(self, state):
        self.done, self.kept = int(state["done"]), int(state["kept"])


def test_stops_after_patience_epochs_without_a_better_score_and_keeps_the_best():
    task = Scripted([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    result = train(task, StopRule(epochs=6, patience=3, score="val"), stage="t")
    assert (result.epochs, result.best_epoch, result.best, task.kept) == (5, 2, 0.7, 2)
    assert result.stopped_early and [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert all({"train_loss", "val", "seconds"} <= set(r) for r in result.history)


def test_lower_is_better_and_an_initial_score_to_beat():
    task = Scripted([1.2, 1.1, 0.8, 0.9])
    result = train(task, StopRule(4, 3, "val", higher_is_better=False), stage="t", initial_best=1.0)
    assert (result.best_epoch, result.best, task.kept, result.epochs) == (3, 0.8, 3, 4)
    never = train(Scripted([1.5, 1.6]), StopRule(4, 2, "val", higher_is_better=False), stage="t", initial_best=1.0)
    assert (never.best_epoch, never.epochs, never.stopped_early) == (0, 2, True)


def test_a_score_function_and_progress_that_never_goes_back():
    seen = []
    rule = StopRule(3, 5, lambda r: -r["train_loss"])
    result = train(Scripted([0, 0, 0]), rule, stage="t", progress=lambda s, f, info="": seen.append(f),
                   describe=lambda r: f"loss {r['train_loss']:.2f}")
    assert result.best_epoch == 3 and seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3 * 4 + 3 + 1


def test_time_budget_stops_when_the_next_epoch_would_not_fit():
    clock = iter(range(0, 10_000, 30))  # every call of perf_counter: 30 s later
    import medfuse.trainer as loop

    real = loop.time.perf_counter
    loop.time.perf_counter = lambda: float(next(clock))
    try:
        result = train(Scripted([0.1 * i for i in range(1, 11)]), StopRule(10, 10, "val", max_minutes=2.5), stage="t",
                       started=0.0)
    finally:
        loop.time.perf_counter = real
    assert 1 < result.epochs < 10 and not result.stopped_early  # stopped by the budget, not by patience


def test_resume_continues_from_the_checkpoint(tmp_path):
    ck = tmp_path / "checkpoint.safetensors"
    scores = [0.1, 0.3, 0.2, 0.4, 0.35, 0.3]
    whole = train(Scripted(scores), StopRule(6, 2, "val"), stage="t")

    def stop_after_three(stage, fraction, info=""):
        if "best" in info and fraction >= 0.5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(Scripted(scores), StopRule(6, 2, "val"), stage="t", checkpoint=ck, progress=stop_after_three)
    task = Scripted(scores)
    resumed = train(task, StopRule(6, 2, "val"), stage="t", checkpoint=ck, resume=True)
    assert [r["val"] for r in resumed.history] == [r["val"] for r in whole.history]
    assert (resumed.best_epoch, resumed.epochs, task.kept) == (whole.best_epoch, whole.epochs, 4)
