"""A progress indicator on stderr: one updating line on a terminal, else periodic lines."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

#: Without a terminal, a line is printed each time another tenth of the work is done.
_STEPS = 10


class Progress:
    """Shows ``done/total`` with a label while work runs; call :meth:`finish` at the end.

    On a terminal the line is redrawn in place (``\\r``); in a log or a pipe, where
    carriage returns pile up, a plain line is printed every tenth of the way instead.
    """

    def __init__(self, total: int, *, label: str = "", stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.perf_counter()
        self._last_step = -1
        self._width = 0

    def update(self, done: int, detail: str = "") -> None:
        """Report that ``done`` of ``total`` units are finished; ``detail`` says what runs."""
        self.done = min(done, self.total)
        if self.tty:
            self._draw(detail)
            return
        step = self.done * _STEPS // self.total
        if step > self._last_step:
            self._last_step = step
            self.stream.write(self._line(detail) + "\n")
            self.stream.flush()

    def advance(self, detail: str = "", by: int = 1) -> None:
        """Report ``by`` more units finished."""
        self.update(self.done + by, detail)

    def finish(self) -> None:
        """End the indicator (on a terminal, clear the line so later output starts clean)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _line(self, detail: str) -> str:
        percent = 100 * self.done // self.total
        elapsed = time.perf_counter() - self._started
        shown = f"{elapsed:.1f}" if elapsed < 10 else f"{elapsed:.0f}"
        text = f"{self.label} {percent:3d}% ({self.done}/{self.total}, {shown} s)"
        return f"{text} {detail}".rstrip()

    def _draw(self, detail: str) -> None:
        line = self._line(detail)
        pad = max(self._width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
