"""Progress of a long report in a terminal: a bar while a Postfix log is read (its
size is known), a running indicator while SQLite sums the usage log (the rows it
will visit are not). The report modules see only this protocol; rich draws it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol


class Progress(Protocol):
    def stage(self, label: str, total: int | None) -> None:
        """A new step; ``total`` units of work, or None when it cannot be known."""

    def update(self, done: int) -> None:
        """How many units of the current step are done."""


class Silent:
    """Scripts, timers and pipes: no progress is shown."""

    def stage(self, label: str, total: int | None) -> None:
        pass

    def update(self, done: int) -> None:
        pass


class _Bar:
    def __init__(self, progress: object) -> None:
        from rich.progress import Progress as Drawn
        from rich.progress import TaskID

        assert isinstance(progress, Drawn)
        self.drawn = progress
        self.task: TaskID | None = None

    def stage(self, label: str, total: int | None) -> None:
        if self.task is not None:
            self.drawn.update(self.task, visible=False)
        self.task = self.drawn.add_task(label, total=total)

    def update(self, done: int) -> None:
        if self.task is not None:
            self.drawn.update(self.task, completed=done)


@contextmanager
def shown_on_terminal(counting: Literal["bytes", "tries"]) -> Iterator[Progress]:
    """Bars on stderr while the work is done, gone when it is; Silent when stderr is
    no terminal. ``counting`` says what the units are: bytes of a file read, or tries
    made (shown as done of all)."""
    import sys

    if not sys.stderr.isatty():
        yield Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as Drawn

    with Drawn(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if counting == "bytes" else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as drawn:
        yield _Bar(drawn)
