"""Per-domain download statistics for a run: which sites deliver, which fail, and why.

Users harvesting from URL lists or many seeds decide from these numbers which domains to keep; the
table is stored with the run and logged at the end of it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from sqlalchemy import select

from harvest.report import short_reason
from harvest.state.db import session_scope
from harvest.state.models import Candidate, HostRate, Status
from harvest.urls import host_of


@dataclass
class DomainStats:
    domain: str
    attempted: int = 0
    downloaded: int = 0
    failed: int = 0
    rejected: int = 0
    errors: Counter = field(default_factory=Counter)
    #: images skipped because the site opted out, by "directive (where found)" (harvest.web.optout)
    optouts: Counter = field(default_factory=Counter)
    success_ms: list[int] = field(default_factory=list, repr=False)
    #: the politeness budget's pace for the host in this run (docs/politeness.md): requests per
    #: second allowed at the end and at most, answers that throttled (429/503), "site" or "images"
    rate: float | None = None
    peak_rate: float | None = None
    throttled: int = 0
    kind: str | None = None

    @property
    def mean_ms(self) -> int | None:
        """Mean time of a successful download, in milliseconds."""
        return round(sum(self.success_ms) / len(self.success_ms)) if self.success_ms else None

    @property
    def success_rate(self) -> float:
        return round(self.downloaded / self.attempted, 3) if self.attempted else 0.0

    def as_dict(self) -> dict:
        row = asdict(self)
        row.pop("success_ms")
        row["success_rate"] = self.success_rate
        row["mean_ms"] = self.mean_ms
        row["errors"] = dict(self.errors.most_common(3))
        row["optouts"] = dict(self.optouts)
        return row


def domain_stats(database_url: str, run_id: str) -> list[DomainStats]:
    """Candidates that reached the network, grouped by host, busiest first. The run's rows are
    streamed, not loaded at once: a run may hold a hundred thousand candidates."""
    by_host: dict[str, DomainStats] = defaultdict(lambda: DomainStats(""))
    with session_scope(database_url) as session:
        rows = session.execute(
            select(
                Candidate.url,
                Candidate.status,
                Candidate.error,
                Candidate.attempts,
                Candidate.elapsed_ms,
                Candidate.optout,
            )
            .where(Candidate.run_id == run_id)
            .execution_options(yield_per=1000)
        )
        for url, status, error, attempts, elapsed_ms, optout in rows:
            if isinstance(optout, dict):  # the site's own word, before or at download
                host = host_of(url)
                by_host[host].domain = host
                by_host[host].optouts[optout_key(optout)] += 1
            if not attempts:  # skipped before download (declared size, SVG, ...): not the site's doing
                continue
            host = host_of(url)
            stats = by_host[host]
            stats.domain = host
            stats.attempted += 1
            if status == Status.DONE:
                stats.downloaded += 1
                if elapsed_ms is not None:
                    stats.success_ms.append(elapsed_ms)
            elif status == Status.FAILED:
                stats.failed += 1
                stats.errors[short_reason(error or "unknown")] += 1
            else:
                stats.rejected += 1
                stats.errors[short_reason((error or "rejected").split(" (")[0])] += 1
        for rate in session.scalars(select(HostRate).where(HostRate.run_id == run_id)):
            if rate.host in by_host:
                stats = by_host[rate.host]
                stats.rate, stats.peak_rate = round(rate.rate, 2), round(rate.peak_rate, 2)
                stats.throttled, stats.kind = rate.throttled, rate.kind
    return sorted(by_host.values(), key=lambda s: (-s.attempted, s.domain))


def optout_key(optout: dict) -> str:
    """ "noai (X-Robots-Tag header of the image)": a directive and where it was found, without the
    host or rule a tdmrep.json or robots.txt finding names."""
    found = str(optout.get("found", ""))
    for place in ("tdmrep.json", "robots.txt"):
        if place in found:
            found = place
    return f"{optout.get('directive')} ({found})"


def format_table(stats: list[DomainStats], limit: int = 20) -> str:
    lines = [
        f"{'domain':<40} {'tried':>6} {'ok':>6} {'rate':>6} {'mean ms':>8} {'req/s':>7} {'peak':>7}"
        f" {'429/503':>7}  top errors"
    ]
    for item in stats[:limit]:
        errors = ", ".join(f"{reason} x{count}" for reason, count in item.errors.most_common(2))
        lines.append(
            f"{item.domain[:40]:<40} {item.attempted:>6} {item.downloaded:>6} {item.success_rate:>6.0%} "
            f"{item.mean_ms if item.mean_ms is not None else '-':>8} {_rate(item.rate):>7} "
            f"{_rate(item.peak_rate):>7} {item.throttled:>7}  {errors}"
        )
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    """Requests per second; 0 means no spacing at all (HARVEST_HOST_DELAY=0)."""
    if value is None:
        return "-"
    return "no cap" if value == 0 else f"{value:.3g}"
