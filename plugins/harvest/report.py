"""What a stage returns: small counts that fit in an XCom and in a log line.

The counts are also watchable while the stage runs (:func:`watching`): a terminal's progress display
(harvest.progress) follows every report of the process without the stages knowing about it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: Called with a report when it is created and whenever one of its counts changes.
Watcher = Callable[["StageReport"], None]
_watchers: list[Watcher] = []
_COUNTS = frozenset({"done", "failed", "skipped", "total"})


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Call ``watcher`` on every report's changes in this process, until the block ends. It runs in
    the thread that changed the count, so it must be quick and thread-safe."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


@dataclass
class StageReport:
    stage: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)
    #: how many items done + failed + skipped will reach, when the stage knows it up front
    total: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_live", True)
        self._notify()

    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        if name in _COUNTS and _watchers and self.__dict__.get("_live"):
            self._notify()

    def _notify(self) -> None:
        for watcher in tuple(_watchers):
            watcher(self)

    def count(self, outcome: str, reason: str | None = None) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if reason:
            self.reasons[short_reason(reason)] += 1

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "reasons": dict(self.reasons.most_common(10)),
            **self.extra,
        }

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common(5))
        text = f"{self.stage}: {self.done} done, {self.failed} failed, {self.skipped} skipped"
        return f"{text} ({reasons})" if reasons else text


def short_reason(reason: str) -> str:
    """Group reasons across URLs: drop the URL part an error message starts with."""
    head = reason.split(": ", 1)[-1] if reason.startswith("http") else reason
    return head[:80]
