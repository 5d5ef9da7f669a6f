"""A progress line per stage on a terminal, fed by the counts the stages keep in their reports.

Each stage's :class:`~harvest.report.StageReport` is watched (``harvest.report.watching``) while a
command runs: the running stage's line is redrawn in place (carriage return, erase line) with its
done/total, rate and failures, and left on screen with its final counts once the next stage starts
or the run ends. Only for a terminal: the command lines use it when stdout is a TTY and print plain
log lines otherwise, so a log file or a CI transcript never holds control characters.

No third-party dependency: a terminal line needs two escape sequences, not a progress-bar library.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import TextIO

from harvest.report import StageReport, watching
from harvest.stages import STAGE_NAMES

#: Reports that get a line: the pipeline's stages plus the URL list's ingest (a prefilter report is
#: part of a download shard's work and shows in its skipped count).
SHOWN = frozenset(STAGE_NAMES) | {"ingest"}
_ERASE = "\r\x1b[K"  # to the line's start, erase to its end


def label(report: StageReport) -> str:
    """``download[2]`` for a shard, the stage's name otherwise."""
    shard = report.extra.get("shard")
    return report.stage if shard is None else f"{report.stage}[{shard}]"


def format_line(report: StageReport, seconds: float) -> str:
    """One stage's line, e.g. ``download[0]   37/40  92%   12.3/s  done 35  failed 2  skipped 0  3.0s``."""
    handled = report.done + report.failed + report.skipped
    rate = handled / seconds if seconds > 0 else 0.0
    if report.total:
        count = f"{handled:>6}/{report.total:<6} {min(100, 100 * handled // report.total):>3}%"
    else:
        count = f"{handled:>6}{'':12}"
    return (
        f"{label(report):<12}{count} {rate:8.1f}/s  done {report.done}  failed {report.failed}"
        f"  skipped {report.skipped}  {seconds:.1f}s"
    )


class ProgressDisplay:
    """Draws the running stage's line on ``stream`` at most every ``interval`` seconds; see the module."""

    def __init__(
        self,
        stream: TextIO,
        *,
        shown: Iterable[str] = SHOWN,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.shown = frozenset(shown)
        self.interval = interval
        self.clock = clock
        self._lock = threading.RLock()
        self._current: StageReport | None = None
        self._started = 0.0
        self._drawn_at = float("-inf")
        self._stack = ExitStack()

    def __enter__(self) -> ProgressDisplay:
        self._stack.enter_context(watching(self.update))
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()
        self.finish()

    def update(self, report: StageReport) -> None:
        """A report was created or counted: switch lines when it is a new stage, redraw if due."""
        if report.stage not in self.shown:
            return
        with self._lock:
            now = self.clock()
            if report is not self._current:
                self.finish()
                self._current, self._started = report, now
            elif now - self._drawn_at < self.interval:
                return
            self._draw(now)

    def write_above(self, text: str) -> None:
        """Print a message (a warning, a log line) above the running stage's line, which is redrawn."""
        with self._lock:
            self.stream.write(_ERASE + text.rstrip("\n") + "\n")
            if self._current is not None:
                self._draw(self.clock())
            else:
                self.stream.flush()

    def finish(self) -> None:
        """Leave the running stage's line on screen with its final counts."""
        with self._lock:
            if self._current is None:
                return
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
            self._current = None

    def _draw(self, now: float) -> None:
        width = shutil.get_terminal_size((120, 24)).columns - 1  # no wrap: a wrapped line is not redrawn
        line = format_line(self._current, now - self._started)[:width]
        # the cursor goes back to the line's start: a message another part writes to the terminal
        # (Airflow's task log, TensorFlow's C++ log) then replaces the line instead of trailing it
        self.stream.write(_ERASE + line + "\r")
        self.stream.flush()
        self._drawn_at = now
