"""Train a small filter for a label ImageNet does not have, from a folder of examples.

The bundled network stays frozen: its 1280-number summary of each photo (the layer before its
ImageNet classifier) already separates most visual concepts, so a softmax layer on top learns a new
one from a few dozen examples per class in seconds on a CPU. The result is saved as an ordinary
model (network + head in one ``.keras`` file, plus its ``.json`` description with held-out metrics)
and is chosen like any other with the ``model`` setting.

Examples: ``<source>/<class>/<image>`` with two or more class folders, e.g. ``hotdog/`` and
``other/``; ``<source>`` is a local folder or an ``s3://bucket/prefix``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harvest.model.runtime import Classifier, decode_for_model, load_classifier
from harvest.settings.config import ConfigError, S3Options
from harvest.storage import open_store

log = logging.getLogger(__name__)

EMBEDDING_LAYER = "avg_pool"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Examples:
    classes: list[str]
    embeddings: np.ndarray
    labels: np.ndarray
    skipped: list[str]


def list_examples(source: str, s3: S3Options | None = None) -> dict[str, list[str]]:
    """Class folder -> image keys under ``source``."""
    store = open_store(source, s3)
    found: dict[str, list[str]] = {}
    for key in sorted(store.keys("")):
        parts = key.split("/")
        if len(parts) == 2 and parts[1].lower().endswith(IMAGE_SUFFIXES):
            found.setdefault(parts[0], []).append(key)
    if len(found) < 2 or any(len(keys) < 2 for keys in found.values()):
        counts = {name: len(keys) for name, keys in found.items()}
        raise ConfigError(
            [f"examples {source}: need two or more class folders with at least 2 images each, found {counts}"]
        )
    return found


def embedder(base: Classifier):
    """The frozen network cut at its pooled features (from the Keras graph, whatever runtime scores)."""
    import keras

    network = base.model if base.runtime == "keras" else load_classifier(base.spec, Path("."), "keras").model
    return keras.Model(network.input, network.get_layer(EMBEDDING_LAYER).output)


def embed_examples(
    source: str, base: Classifier, s3: S3Options | None = None, batch_size: int = 32
) -> Examples:
    store = open_store(source, s3)
    found = list_examples(source, s3)
    classes = sorted(found)
    arrays, labels, skipped = [], [], []
    for index, name in enumerate(classes):
        for key in found[name]:
            try:
                arrays.append(decode_for_model(store.get(key), base.spec.preprocess))
                labels.append(index)
            except Exception as exc:  # noqa: BLE001 - a bad example is reported, the rest train
                skipped.append(f"{store.url(key)}: {exc}")
    features = embedder(base)
    batches = [
        np.asarray(features(np.stack(arrays[i : i + batch_size]).astype("float32"), training=False))
        for i in range(0, len(arrays), batch_size)
    ]
    return Examples(classes, np.concatenate(batches), np.asarray(labels), skipped)


def split(labels: np.ndarray, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``held_out`` of the examples (at least one) go to the test side."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        cut = max(1, round(len(members) * held_out))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.asarray(sorted(train)), np.asarray(sorted(test))


def metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    per_class = {}
    for index, name in enumerate(classes):
        tp = int(np.sum((predicted == index) & (truth == index)))
        fp = int(np.sum((predicted == index) & (truth != index)))
        fn = int(np.sum((predicted != index) & (truth == index)))
        per_class[name] = {
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
            "support": int(np.sum(truth == index)),
        }
    return {"accuracy": round(float(np.mean(truth == predicted)), 4), "per_class": per_class}


def fit_softmax(
    x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 500, l2: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced softmax regression by full-batch gradient descent: exact enough, and milliseconds."""
    x = x.astype(np.float64)
    onehot = np.eye(num_classes)[y]
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    # weight classes evenly: negatives usually outnumber positives
    sample_weight = (len(y) / (num_classes * np.maximum(counts, 1)))[y][:, None] / len(y)
    rate = 1.0 / max(float(np.mean(np.sum(x * x, axis=1))), 1e-6)
    weights = np.zeros((x.shape[1], num_classes))
    bias = np.zeros(num_classes)
    for _ in range(steps):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grad = (probs - onehot) * sample_weight
        weights -= rate * (x.T @ grad + l2 * weights)
        bias -= rate * grad.sum(axis=0) * 1.0
    return weights.astype(np.float32), bias.astype(np.float32)


def train_filter(
    source: str,
    name: str,
    out_dir: Path,
    *,
    base: Classifier | None = None,
    models_dir: Path | None = None,
    s3: S3Options | None = None,
    held_out: float = 0.25,
    steps: int = 500,
    seed: int = 0,
) -> dict:
    """Train, evaluate on the held-out split, save ``<out_dir>/<name>.keras`` and ``.json``; returns the description."""
    import keras

    out_dir = Path(out_dir)
    base = base or load_classifier("efficientnet_lite0", models_dir or out_dir, runtime="keras")
    if base.runtime != "keras":  # the head is cut from the Keras graph, not from a TFLite export
        base = load_classifier(base.spec, models_dir or out_dir, runtime="keras")
    examples = embed_examples(source, base, s3)
    train, test = split(examples.labels, held_out, seed)
    weights, bias = fit_softmax(
        examples.embeddings[train], examples.labels[train], len(examples.classes), steps
    )
    predicted = (examples.embeddings[test] @ weights + bias).argmax(axis=1)
    held_out_metrics = metrics(examples.labels[test], predicted, examples.classes)

    features = embedder(base)
    head = keras.layers.Dense(len(examples.classes), activation="softmax", name="filter")
    model = keras.Model(features.input, head(features.output), name=name)
    head.set_weights([weights, bias])
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.keras"
    with warnings.catch_warnings():
        # Keras converts every variable with np.array(tensor, copy=False), which NumPy 2 flags; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(model_path)
    description = {
        "name": name,
        "version": hashlib.sha256(model_path.read_bytes()).hexdigest()[:12],
        "model_file": model_path.name,
        "classes": examples.classes,
        "input": {
            "shape": [base.spec.preprocess.size, base.spec.preprocess.size, 3],
            "crop_fraction": base.spec.preprocess.crop_fraction,
            "scale": base.spec.preprocess.scale,
        },
        "base": base.key,
        "trained_on": source,
        "examples": {cls: int(np.sum(examples.labels == i)) for i, cls in enumerate(examples.classes)},
        "skipped_examples": examples.skipped,
        "held_out": {"fraction": held_out, "seed": seed, **held_out_metrics},
    }
    (out_dir / f"{name}.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    log.info("filter %s saved to %s; held-out accuracy %.3f", name, model_path, held_out_metrics["accuracy"])
    return description
