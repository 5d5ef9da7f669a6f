"""What a stage returns: small counts that fit in an XCom and in a log line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StageReport:
    stage: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)

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
