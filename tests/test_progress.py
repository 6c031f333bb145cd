"""Stage progress: rich bars on a terminal, one plain line per finished stage elsewhere."""

from __future__ import annotations

import io

import pytest

from medfuse import progress as progress_module
from medfuse.progress import stage_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake ``perf_counter``: ``clock.now`` seconds."""

    class Clock:
        now = 100.0

    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: Clock.now)
    return Clock


def test_plain_lines_when_not_a_terminal(clock):
    stream = io.StringIO()
    with stage_progress(stream=stream) as report:
        report("MLTM: training", 0.0)
        clock.now = 101.5
        report("MLTM: training", 0.5, "loss 0.8")
        report("labs: read", 0.4)  # never finishes: no line
        assert stream.getvalue() == ""  # nothing until a stage finishes
        clock.now = 104.0
        report("MLTM: training", 1.0)  # info: the last non-empty one
        report("MLTM: training", 1.0, "again")  # a repeated 1 is the same end
        report("compare 1/2", 0.0, "MEDFuse, seed 0")
        report("compare 2/2", 0.0, "MEDFuse, seed 1")  # a second stage running beside the first
        clock.now = 110.3
        report("compare 2/2", 1.0, "val macro-AUPRC 0.751")
        report("compare 1/2", 0.9, "epoch 9")
        clock.now = 112.0
        report("compare 1/2", 1.0)
        report("MLTM: training", 0.0)  # a stage reported again after its end is a new pass
        clock.now = 115.0
        report("MLTM: training", 1.0)
    assert stream.getvalue().splitlines() == [
        "[    4.0 s] MLTM: training: done in 4.0 s  (loss 0.8)",
        "[   10.3 s] compare 2/2: done in 6.3 s  (val macro-AUPRC 0.751)",
        "[   12.0 s] compare 1/2: done in 8.0 s  (epoch 9)",
        "[   15.0 s] MLTM: training: done in 3.0 s",
    ]


def test_rich_bars_on_a_terminal():
    stream = Terminal()
    with stage_progress(stream=stream) as report:
        report("embed notes", 0.5, "512 texts")
        report("embed notes", 1.0)
    out = stream.getvalue()
    assert "embed notes" in out and "512 texts" in out and "100%" in out and "done in" not in out
