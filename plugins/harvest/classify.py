"""Stage 4, batch classification: a pretrained ImageNet network scores every downloaded image.

Scores are stored for every image (kept or not) keyed by model name and version, so the keep/reject
decision is made later, cheaply, by the publish stage. TensorFlow is imported only when a classifier
is built, never when the DAG file is parsed.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import and_, select

from harvest.config import HarvestConfig
from harvest.labels import ImageNetClass, load_classes
from harvest.preprocess import IMAGE_SIZE, prepare_rgb
from harvest.report import StageReport
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Image, Prediction, Status, utcnow
from harvest.storage import Stores

log = logging.getLogger(__name__)

STORED_TOP = 10


class ModelNotFound(FileNotFoundError):
    pass


@dataclass
class Classifier:
    """A Keras model whose input is 0..255 RGB and whose output is ImageNet-1k probabilities."""

    name: str
    version: str
    model: object
    classes: tuple[ImageNetClass, ...]

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch.astype("float32")))

    def top(self, probabilities: np.ndarray, k: int = STORED_TOP) -> list[dict]:
        order = np.argsort(probabilities)[::-1][:k]
        return [
            {
                "wnid": self.classes[i].wnid,
                "name": self.classes[i].name,
                "score": round(float(probabilities[i]), 6),
            }
            for i in order
        ]


def load_classifier(name: str, models_dir: Path) -> Classifier:
    path = Path(models_dir) / f"{name}.keras"
    if not path.exists():
        raise ModelNotFound(
            f"model file {path} is missing; run `make setup` (or "
            f"`python include/models/convert_efficientnet_lite0.py`) to build it from the installed weights"
        )
    import keras

    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    model = keras.models.load_model(path, compile=False)
    return Classifier(
        name=name,
        version=str(meta.get("version", "1")),
        model=model,
        classes=load_classes(Path(models_dir)),
    )


def model_key(name: str, models_dir: Path) -> str:
    """The key predictions are stored under, without loading TensorFlow."""
    meta_path = Path(models_dir) / f"{name}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return f"{name}@{meta.get('version', '1')}"


def decode_for_model(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as image:
        return prepare_rgb(image, IMAGE_SIZE)


def _pending(cfg: HarvestConfig, key: str, limit: int) -> list[tuple[str, str, str]]:
    with session_scope(cfg.database_url) as session:
        rows = session.execute(
            select(Image.sha256, Image.staging, Image.storage_key)
            .join(Candidate, Candidate.sha256 == Image.sha256)
            .outerjoin(Prediction, and_(Prediction.sha256 == Image.sha256, Prediction.model == key))
            .where(Candidate.run_id == cfg.run_id, Candidate.status == Status.DONE, Prediction.id.is_(None))
            .group_by(Image.sha256, Image.staging, Image.storage_key)
            .order_by(Image.sha256)
            .limit(limit)
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def _load(stores: Stores, item: tuple[str, str, str]) -> tuple[str, np.ndarray | Exception]:
    sha, location, key = item
    try:
        return sha, decode_for_model(stores(location).get(key))
    except Exception as exc:
        return sha, exc


def _chunks(cfg: HarvestConfig, key: str, size: int) -> Iterator[list[tuple[str, str, str]]]:
    while True:
        chunk = _pending(cfg, key, size)
        if not chunk:
            return
        yield chunk


def run_classify(cfg: HarvestConfig, classifier: Classifier | None = None) -> StageReport:
    report = StageReport("classify")
    classifier = classifier or load_classifier(cfg.model, cfg.models_dir)
    report.extra["model"] = classifier.key
    stores = Stores(cfg.s3)
    started = time.monotonic()
    chunk_size = cfg.batch_size * 4
    keep = max(STORED_TOP, cfg.top_k)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode") as pool:
        for chunk in _chunks(cfg, classifier.key, chunk_size):
            decoded = list(pool.map(lambda item: _load(stores, item), chunk))
            rows: list[dict] = []
            good = [(sha, array) for sha, array in decoded if isinstance(array, np.ndarray)]
            for sha, error in decoded:
                if isinstance(error, Exception):
                    rows.append(_row(sha, classifier.key, None, f"cannot decode for the model: {error}"))
                    report.count("failed", f"cannot decode: {type(error).__name__}")
            for start in range(0, len(good), cfg.batch_size):
                batch = good[start : start + cfg.batch_size]
                probabilities = classifier.predict(np.stack([array for _, array in batch]))
                for (sha, _), probs in zip(batch, probabilities, strict=True):
                    rows.append(_row(sha, classifier.key, classifier.top(probs, keep), None))
                    report.count("done")
            with session_scope(cfg.database_url) as session:
                insert_ignore(session, Prediction, rows, ["sha256", "model"])
            elapsed = max(time.monotonic() - started, 1e-6)
            log.info(
                "classify: %d images scored, %d failed, %.1f images/s",
                report.done,
                report.failed,
                report.done / elapsed,
            )
    log.info("%s", report)
    return report


def _row(sha: str, key: str, top: list[dict] | None, error: str | None) -> dict:
    return {"sha256": sha, "model": key, "top": top, "error": error, "created_at": utcnow()}
