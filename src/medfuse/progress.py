"""Progress reporting shared by every long-running stage.

Library code takes an optional ``progress(stage, fraction, info="")`` callback and never imports
rich; the CLI passes the callback made by :func:`stage_progress`: one rich bar per stage with ``info``
(e.g. the running loss) beside it on a terminal, one plain line per finished stage otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

ProgressFn = Callable[..., None]
"""``progress(stage: str, fraction: float, info: str = "")``."""


def no_progress(stage: str, fraction: float, info: str = "") -> None:
    """The default callback: report nothing."""


def part_progress(progress: ProgressFn, index: int, total: int) -> ProgressFn:
    """``progress`` for part ``index`` of ``total`` equal parts of one stage: a part's fraction f is reported
    as ``(index + f) / total``, so one bar runs once across all the parts."""

    def report(stage: str, fraction: float, info: str = "") -> None:
        progress(stage, (index + fraction) / max(total, index + 1), info)

    return report


@contextmanager
def stage_progress(transient: bool = False, stream: TextIO | None = None) -> Iterator[ProgressFn]:
    """Yields ``progress(stage, fraction, info="")`` (fraction in [0, 1]) drawing on ``stream`` (stderr).

    On a terminal: rich bars, a stage's bar created on its first report and the previous stages completed
    when a new one starts. Elsewhere (CI logs, ``> log 2>&1``, nohup): :func:`plain_progress`.
    """
    stream = stream or sys.stderr
    if not stream.isatty():
        with plain_progress(stream) as report:
            yield report
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=transient, console=Console(file=stream)) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, fraction: float, info: str = "") -> None:
            if stage not in tasks:
                for task in tasks.values():
                    bar.update(task, completed=1.0)
                tasks[stage] = bar.add_task(stage, total=1.0, info="")
            bar.update(tasks[stage], completed=min(max(fraction, 0.0), 1.0), **({"info": info} if info else {}))

        yield report
        for task in tasks.values():
            bar.update(task, completed=1.0)


@contextmanager
def plain_progress(stream: TextIO) -> Iterator[ProgressFn]:
    """One flushed line per stage when it reports fraction 1: ``[  42.1 s] embed notes: done in 17.6 s  (info)``.

    The time in brackets is since the context began; ``info`` is the stage's last non-empty one. Stages may
    run side by side. A stage reported again after finishing starts anew (a second pass gets its own line);
    repeated 1s are one line; a stage that never reports 1 (a sub-step's own progress) gets none.
    """
    t0 = time.perf_counter()
    open_stages: dict[str, list] = {}  # stage -> [start time, last info]
    finished: set[str] = set()

    def report(stage: str, fraction: float, info: str = "") -> None:
        if stage in finished:
            if fraction >= 1.0:
                return
            finished.discard(stage)
        state = open_stages.setdefault(stage, [time.perf_counter(), ""])
        state[1] = info or state[1]
        if fraction >= 1.0:
            del open_stages[stage]
            finished.add(stage)
            now = time.perf_counter()
            stream.write(f"[{now - t0:7.1f} s] {stage}: done in {now - state[0]:.1f} s"
                         + (f"  ({state[1]})" if state[1] else "") + "\n")
            stream.flush()

    yield report
