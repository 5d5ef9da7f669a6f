"""Re-decide an already harvested run with new labels, top_k or threshold, and publish again.

The stored score vectors answer any label of the same model, so nothing is downloaded and the
network is not even loaded when every image already has a prediction by the chosen model. Only a
model (or model version) that has not scored the images yet is run, and its predictions are stored
beside the old ones, keyed by name and version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import and_, func, select

from harvest.model.labels import resolve_labels
from harvest.model.registry import resolve_model
from harvest.report import StageReport
from harvest.settings.config import ConfigError, HarvestConfig
from harvest.stages.publish import run_publish
from harvest.state.db import migrate, session_scope
from harvest.state.models import Candidate, Image, Prediction, Run, Status

log = logging.getLogger(__name__)


def unscored(cfg: HarvestConfig, key: str) -> int:
    """How many of the run's downloaded images have no prediction by this model yet."""
    with session_scope(cfg.database_url) as session:
        return session.scalar(
            select(func.count(func.distinct(Image.sha256)))
            .join(Candidate, Candidate.sha256 == Image.sha256)
            .outerjoin(Prediction, and_(Prediction.sha256 == Image.sha256, Prediction.model == key))
            .where(Candidate.run_id == cfg.run_id, Candidate.status == Status.DONE, Prediction.id.is_(None))
        )


def run_rethreshold(cfg: HarvestConfig, load: Callable | None = None) -> list[StageReport]:
    """Classify only what this model has not scored (``load`` builds the classifier), then publish."""
    spec = resolve_model(cfg.model, cfg.models_dir)
    resolve_labels(cfg.labels, cfg.models_dir, spec.classes)  # refuse bad labels before any work
    migrate(cfg.database_url)
    with session_scope(cfg.database_url) as session:
        if session.get(Run, cfg.run_id) is None:
            raise ConfigError([f"harvest run {cfg.run_id!r} is not in the state DB; nothing to decide again"])
    missing = unscored(cfg, spec.key)
    reports: list[StageReport] = []
    if missing:
        from harvest.model.runtime import load_classifier
        from harvest.stages.classify import run_classify

        log.info("rethreshold: %d images not yet scored by %s; classifying them", missing, spec.key)
        classifier = (load or load_classifier)(spec, cfg.models_dir)
        reports.append(run_classify(cfg, classifier))
    else:
        log.info("rethreshold: every image already scored by %s; the model is not loaded", spec.key)
    reports.append(run_publish(cfg))
    return reports
