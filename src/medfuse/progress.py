"""Progress reporting shared by every long-running stage.

Library code takes an optional ``progress(stage, fraction, info="")`` callback and never imports
rich; the CLI passes the callback made by :func:`stage_progress`, which draws one rich bar per stage
with ``info`` (e.g. the running loss) beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[..., None]
"""``progress(stage: str, fraction: float, info: str = "")``."""


def no_progress(stage: str, fraction: float, info: str = "") -> None:
    """The default callback: report nothing."""


@contextmanager
def stage_progress(transient: bool = False) -> Iterator[ProgressFn]:
    """A rich progress display; yields ``progress(stage, fraction, info="")`` with fraction in [0, 1].

    A stage's bar is created on its first report; the previous stage is completed when a new one starts.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=transient) as bar:
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
