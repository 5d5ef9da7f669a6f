"""The runs that built a dataset, with the filters each applied: a dataset grows over many runs, and
each may have used another model, threshold or size limit. Read from the ``runs`` table, whose
``params`` keep every run's settings (and the Airflow run id its manifest is named after)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from harvest.state.db import session_scope
from harvest.state.models import Publication, Run


@dataclass(frozen=True)
class RunFilters:
    #: the run id manifests name and rows carry (Airflow's run id when the run had one)
    run_id: str
    #: the state DB's scope of the run (``interval__...`` for a scheduled interval)
    scope: str
    #: the classifier key (name and version) predictions were stored under
    model: str
    labels: tuple[str, ...]
    top_k: int | None
    threshold: float | None
    min_width: int | None
    min_height: int | None


class Runs:
    """Each run's filters, read once per run however many rows name it."""

    def __init__(self, database_url: str, models_dir: Path):
        self.database_url, self.models_dir = database_url, models_dir
        self._known: dict[str, RunFilters] = {}
        self._models: dict[str, str] = {}

    def __getitem__(self, scope: str) -> RunFilters:
        if scope not in self._known:
            with session_scope(self.database_url) as session:
                params = session.scalar(select(Run.params).where(Run.run_id == scope)) or {}
            self._known[scope] = RunFilters(
                run_id=params.get("manifest_id") or scope,
                scope=scope,
                model=self._model_key(str(params.get("model") or "")),
                labels=tuple(params.get("labels") or ()),
                top_k=params.get("top_k"),
                threshold=params.get("threshold"),
                min_width=params.get("min_width"),
                min_height=params.get("min_height"),
            )
        return self._known[scope]

    def _model_key(self, name: str) -> str:
        """The stored key of a model name (its version included); the name itself when the model
        can no longer be resolved (removed since), which still says which classifier it was."""
        if name not in self._models:
            from harvest.model.registry import model_key

            try:
                self._models[name] = model_key(name, self.models_dir) if name else ""
            except Exception:  # noqa: BLE001 - any reason the model is gone leaves its name
                self._models[name] = name
        return self._models[name]


def published_runs(database_url: str, destination: str, runs: Runs) -> list[tuple[RunFilters, int]]:
    """The runs whose publications are at the destination now, oldest first, with how many each."""
    with session_scope(database_url) as session:
        counts = session.execute(
            select(Publication.run_id, func.count(), func.min(Publication.created_at))
            .where(
                Publication.destination == destination,
                Publication.withdrawn_at.is_(None),
                Publication.key.like("images/%"),
            )
            .group_by(Publication.run_id)
            .order_by(func.min(Publication.created_at))
        ).all()
    return [(runs[scope], count) for scope, count, _ in counts]
