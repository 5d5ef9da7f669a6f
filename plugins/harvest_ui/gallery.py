"""What the gallery shows, derived from the state DB tables the stages already write.

No table records "kept" or "duplicate" as such: the publish stage decides from the stored predictions
and the run's Params. The gallery repeats that decision (with :func:`harvest.model.scores.decide`), so it
shows exactly what a run kept and can say what another threshold would keep.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import inspect, select

from harvest.model.labels import Target, resolve_labels
from harvest.model.registry import model_key
from harvest.model.scores import decide
from harvest.settings.config import DEFAULT_THRESHOLD
from harvest.state.db import get_engine, session_scope
from harvest.state.models import Candidate, Image, Prediction, Publication, Run, Status

STATUSES = ("kept", "rejected", "duplicate", "skipped", "failed", "unclassified", "pending")
#: Statuses whose score decides keep or reject, i.e. what the threshold slider acts on.
SCORED = ("kept", "rejected")
_SIZE = re.compile(r"\b\d+x\d+\b")  # "declared size 24x24 below ..." groups with other sizes
_CHUNK = 500  # bound IN (...) lists; SQLite allows a limited number of parameters


@dataclass
class Item:
    id: int
    run_id: str
    url: str
    page_url: str
    domain: str
    source: str
    alt: str | None
    title: str | None
    status: str
    reason: str | None
    attempts: int
    sha256: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    size_bytes: int | None = None
    label: str | None = None
    score: float | None = None
    threshold: float | None = None
    top: list[dict] = field(default_factory=list)
    duplicate_of: str | None = None
    published: list[str] = field(default_factory=list)
    #: the run as Airflow names it (scheduled__/manual__/backfill__...), not the state DB's interval scope
    run_name: str = ""
    #: every run that found this image at this URL (names as Airflow shows them), on one card
    runs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunRule:
    """How one run decided: its targets, top_k, threshold and the model its predictions are stored under."""

    targets: tuple[Target, ...]
    top_k: int
    threshold: float
    model: str


def domain_of(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return _host(rest.split("/", 1)[0]) if sep else "(none)"


@lru_cache(maxsize=4096)
def _host(netloc: str) -> str:
    """Host name of a netloc, cached: a run has many URLs but few hosts."""
    return (urlsplit(f"//{netloc}").hostname or "").lower() or "(none)"


def reason_key(error: str | None) -> str:
    """Group errors across URLs: drop the URL an error starts with and any detail in parentheses."""
    if not error:
        return "unknown"
    head = error.split(": ", 1)[-1] if error.startswith(("http://", "https://")) else error
    head = _SIZE.sub("WxH", head.split(" (")[0].strip())
    return head[:80] or "unknown"


def _rule(run: Run, models_dir: Path, cache: dict) -> RunRule:
    params = run.params or {}
    labels = tuple(params.get("labels") or ())
    model = params.get("model") or "efficientnet_lite0"
    if (labels, model) not in cache:
        try:
            targets = tuple(resolve_labels(labels, models_dir)) if labels else ()
        except ValueError:  # a run recorded with labels this class index no longer knows
            targets = ()
        cache[(labels, model)] = (targets, model_key(model, models_dir))
    targets, key = cache[(labels, model)]
    return RunRule(
        targets=targets,
        top_k=int(params.get("top_k") or 5),
        threshold=float(params.get("threshold", DEFAULT_THRESHOLD)),
        model=key,
    )


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def schema_ready(database_url: str) -> bool:
    """False until the first harvest has created the tables; the gallery is then simply empty."""
    return inspect(get_engine(database_url)).has_table(Run.__tablename__)


#: Statuses the default view folds into counts: a page of placeholders hides the photos.
COLLAPSED = ("skipped", "failed")
#: Which of an image's outcomes its one card shows when runs disagree: the most useful first.
_PRIORITY = {
    status: rank
    for rank, status in enumerate(
        ("kept", "rejected", "duplicate", "unclassified", "pending", "failed", "skipped")
    )
}


def run_name(run: Run | None, scope: str) -> str:
    """The run's name as Airflow shows it: the Airflow run id the scope was last run as (a date's
    scope ``interval__...`` is stored once however many runs it had), else the scope itself."""
    manifest_id = ((run.params if run is not None else None) or {}).get("manifest_id")
    return manifest_id or scope


def one_card_per_image(items: Iterable[Item]) -> list[Item]:
    """The same image found at the same URL by several runs, as one item listing those runs.

    Its status is the most useful any run gave it (kept before rejected before failed...), so a photo
    kept by three runs counts once. Different URLs with the same bytes stay apart (duplicates)."""
    cards: dict[tuple[str, str | None], Item] = {}
    for item in items:
        key = (item.url, item.sha256)
        card = cards.get(key)
        if card is None:
            cards[key] = replace(item, runs=[item.run_name])  # a copy: the cached items stay as read
            continue
        runs = card.runs if item.run_name in card.runs else [*card.runs, item.run_name]
        if _PRIORITY.get(item.status, 99) <= _PRIORITY.get(card.status, 99):
            card = cards[key] = replace(item)
        card.runs = runs
    return list(cards.values())


def list_runs(database_url: str) -> list[dict[str, Any]]:
    if not schema_ready(database_url):
        return []
    with session_scope(database_url) as session:
        runs = session.scalars(select(Run).order_by(Run.started_at.desc())).all()
        return [
            {
                "run_id": run.run_id,
                "name": run_name(run, run.run_id),
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "labels": list((run.params or {}).get("labels") or []),
                "threshold": (run.params or {}).get("threshold"),
                "destination": (run.params or {}).get("destination"),
            }
            for run in runs
        ]


def load_items(database_url: str, models_dir: Path, run_id: str | None = None) -> list[Item]:
    """Every candidate (of one run, or of all runs) with its derived status, label and score."""
    if not schema_ready(database_url):
        return []
    with session_scope(database_url) as session:
        runs = {run.run_id: run for run in session.scalars(select(Run))}
        # plain columns, not ORM objects: several times faster for tens of thousands of rows
        query = select(
            Candidate.id,
            Candidate.run_id,
            Candidate.url,
            Candidate.page_url,
            Candidate.source,
            Candidate.alt,
            Candidate.title,
            Candidate.status,
            Candidate.error,
            Candidate.attempts,
            Candidate.sha256,
            Image.sha256.label("image_sha256"),
            Image.width,
            Image.height,
            Image.format,
            Image.size_bytes,
        ).outerjoin(Image, Image.sha256 == Candidate.sha256)
        if run_id:
            query = query.where(Candidate.run_id == run_id)
        rows = session.execute(query.order_by(Candidate.run_id, Candidate.id)).all()
        digests = sorted({row.sha256 for row in rows if row.sha256})
        predictions: dict[tuple[str, str], Any] = {}
        published: dict[str, list[str]] = defaultdict(list)
        for chunk in _chunks(digests):
            for prediction in session.execute(
                select(Prediction.sha256, Prediction.model, Prediction.top, Prediction.error).where(
                    Prediction.sha256.in_(chunk)
                )
            ):
                predictions[(prediction.sha256, prediction.model)] = prediction
            for sha, destination, key in session.execute(
                select(Publication.sha256, Publication.destination, Publication.key).where(
                    Publication.sha256.in_(chunk)
                )
            ):
                published[sha].append(f"{destination.rstrip('/')}/{key}")

    rules: dict[str, RunRule] = {}
    cache: dict = {}
    first_seen: dict[tuple[str, str], str] = {}
    items: list[Item] = []
    for row in rows:
        if row.run_id not in rules and row.run_id in runs:
            rules[row.run_id] = _rule(runs[row.run_id], models_dir, cache)
        rule = rules.get(row.run_id)
        item = Item(
            id=row.id,
            run_id=row.run_id,
            url=row.url,
            page_url=row.page_url,
            domain=domain_of(row.url),
            source=row.source,
            alt=row.alt,
            title=row.title,
            status=row.status,
            reason=row.error,
            attempts=row.attempts,
            sha256=row.sha256,
            threshold=rule.threshold if rule else None,
            run_name=run_name(runs.get(row.run_id), row.run_id),
        )
        if row.image_sha256 is not None:
            item.width, item.height = row.width, row.height
            item.format, item.size_bytes = row.format, row.size_bytes
            item.published = sorted(published.get(row.image_sha256, []))
        if row.status == Status.DONE and row.sha256:
            _classify_item(item, rule, predictions, first_seen)
        items.append(item)
    return items


class ItemCache:
    """The last few item lists, for a few seconds: one page load asks for items, scores and stats of the
    same selection, and reading a large run once instead of three times is what keeps it quick."""

    def __init__(self, ttl: float = 5.0, size: int = 8):
        self.ttl = ttl
        self.size = size
        self._entries: dict[tuple[str, str | None], tuple[float, list[Item]]] = {}
        self._lock = threading.Lock()

    def get(self, database_url: str, models_dir: Path, run_id: str | None) -> list[Item]:
        key = (database_url, run_id or None)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        items = load_items(database_url, models_dir, run_id or None)
        with self._lock:
            self._entries[key] = (now, items)
            while len(self._entries) > self.size:
                del self._entries[min(self._entries, key=lambda k: self._entries[k][0])]
        return items


def load_item(database_url: str, models_dir: Path, item_id: int) -> Item | None:
    """One candidate; its run is loaded whole because duplicates are decided by order within the run."""
    if not schema_ready(database_url):
        return None
    with session_scope(database_url) as session:
        run_id = session.scalar(select(Candidate.run_id).where(Candidate.id == item_id))
    if run_id is None:
        return None
    return next((item for item in load_items(database_url, models_dir, run_id) if item.id == item_id), None)


def _classify_item(
    item: Item,
    rule: RunRule | None,
    predictions: dict[tuple[str, str], Any],
    first_seen: dict[tuple[str, str], str],
) -> None:
    """Status of a downloaded candidate: duplicate, unclassified, failed (model error), kept or rejected."""
    assert item.sha256 is not None
    prediction = predictions.get((item.sha256, rule.model)) if rule else None
    if prediction is not None and prediction.top:
        item.top = prediction.top[:5]
        if rule is not None:
            best = decide(prediction.top, list(rule.targets), rule.top_k, 0.0)
            if best is not None:
                item.label, item.score = best[0].folder, round(best[1], 6)
    seen = first_seen.get((item.run_id, item.sha256))
    if seen is not None:
        item.status, item.duplicate_of = "duplicate", seen
        item.reason = f"same bytes as {seen}"
        return
    first_seen[(item.run_id, item.sha256)] = item.url
    if prediction is None:
        item.status = "unclassified"
    elif prediction.top is None:
        item.status, item.reason = "failed", prediction.error or "the classifier could not read the image"
    elif item.score is not None and rule is not None and item.score >= rule.threshold:
        item.status = "kept"
    else:
        item.status = "rejected"
        item.reason = (
            f"best target score {item.score:.3f} below threshold {rule.threshold}"
            if item.score is not None and rule is not None
            else "no target label among the top predictions"
        )


def filter_items(
    items: Iterable[Item],
    *,
    label: str | None = None,
    domain: str | None = None,
    statuses: Sequence[str] = (),
) -> list[Item]:
    return [
        item
        for item in items
        if (not label or item.label == label)
        and (not domain or item.domain == domain)
        and (not statuses or item.status in statuses)
    ]


def status_counts(items: Iterable[Item]) -> dict[str, int]:
    counts = Counter(item.status for item in items)
    return {status: counts.get(status, 0) for status in STATUSES}


def domain_stats(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Per domain: how many candidates, how many downloads succeeded, what was kept, why the rest failed."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.domain].append(item)
    table = []
    for domain, group in groups.items():
        counts = Counter(item.status for item in group)
        failed = counts["failed"] + counts["skipped"]
        downloaded = sum(counts[s] for s in ("kept", "rejected", "duplicate", "unclassified"))
        finished = downloaded + failed
        reasons = Counter(reason_key(i.reason) for i in group if i.status in ("failed", "skipped"))
        table.append(
            {
                "domain": domain,
                "candidates": len(group),
                "downloaded": downloaded,
                "kept": counts["kept"],
                "failed": counts["failed"],
                "skipped": counts["skipped"],
                "pending": counts["pending"],
                "success_rate": round(downloaded / finished, 4) if finished else None,
                "reasons": dict(reasons.most_common(10)),
            }
        )
    table.sort(key=lambda row: (-row["candidates"], row["domain"]))
    return table
