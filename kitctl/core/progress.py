"""One rich progress bar for all long work, and one way to print a duration.

Every area (tokenizing shards, training steps, exporting an image, hashing a file) uses :func:`progress_bar`
so the bars look and behave the same: a description, a bar, done/total (counts or bytes), rate and ETA, drawn
on stderr-capable consoles and silent (no bar) when the console is not a terminal.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Optional

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)


def format_duration(seconds: Optional[float]) -> str:
    """``3725`` -> ``"1h 02m"``, ``75`` -> ``"1m 15s"``, ``4.2`` -> ``"4.2s"``, days as ``"2d 03h"``; None/NaN -> ``"?"``."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "?"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    s_int = int(round(s))
    d, rem = divmod(s_int, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


class Bar:
    """A handle on one task of a :func:`progress_bar`."""

    def __init__(self, progress: Progress, task: TaskID):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, completed: Optional[float] = None, total: Optional[float] = None, **fields: Any) -> None:
        self._progress.update(self._task, completed=completed, total=total, **fields)

    @property
    def completed(self) -> float:
        return self._progress.tasks[0].completed if self._progress.tasks else 0.0


@contextlib.contextmanager
def progress_bar(description: str, total: Optional[float], console: Optional[Console] = None,
                 unit: str = "items", completed: int = 0, **fields: Any) -> Iterator[Bar]:
    """A progress bar for one piece of long work. ``unit="bytes"`` shows sizes and transfer speed.

    ``description`` may hold ``{task.fields[...]}`` placeholders filled by ``bar.update(name=value)``.
    """
    cols: list[ProgressColumn] = [TextColumn(description), BarColumn()]
    if unit == "bytes":
        cols += [DownloadColumn(), TransferSpeedColumn()]
    else:
        cols += [MofNCompleteColumn()]
    cols += [TimeElapsedColumn(), TimeRemainingColumn()]
    progress = Progress(*cols, console=console, transient=False, disable=console is not None and not console.is_terminal)
    with progress:
        yield Bar(progress, progress.add_task("", total=total, completed=completed, **fields))
