"""The stored form of a prediction: every class probability, compactly, so decisions can be re-made.

float16 keeps 3 significant digits and probabilities down to 6e-8, far finer than any threshold a
user sets, in 2 bytes a class (2 KB an image for ImageNet-1k). Group scores are sums over member
classes, computed when deciding rather than stored, so any label asked later is answerable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harvest.model.labels import Target

DTYPE = np.dtype("<f2")


def encode(probabilities: np.ndarray) -> bytes:
    return np.asarray(probabilities, dtype=DTYPE).tobytes()


def decode(blob: bytes, num_classes: int) -> np.ndarray:
    """The probabilities as float32; refuses a vector stored for a model with another class count."""
    vector = np.frombuffer(blob, dtype=DTYPE)
    if vector.size != num_classes:
        raise ValueError(f"stored scores have {vector.size} classes, the model has {num_classes}")
    return vector.astype(np.float32)


def top_entries(probabilities: np.ndarray, wnids: list[str], names: list[str], k: int) -> list[dict]:
    """The k best classes, best first, as stored in ``predictions.top``."""
    k = min(k, probabilities.size)
    order = np.argpartition(-probabilities, k - 1)[:k]
    order = order[np.argsort(-probabilities[order], kind="stable")]
    return [{"wnid": wnids[i], "name": names[i], "score": round(float(probabilities[i]), 6)} for i in order]


def decide(
    top: list[dict],
    targets: list[Target],
    top_k: int,
    threshold: float,
    probabilities: Mapping[str, float] | None = None,
) -> tuple[Target, float] | None:
    """The best target that has a class among the top_k predictions and a score reaching the threshold.

    A target's score is the sum of its classes' probabilities: a group ("dog") gathers the mass a
    photo spreads over close breeds, a single class is just its own probability. ``probabilities``
    holds every class's (from the stored vector); without it the stored top entries are summed.
    """
    ranked = [entry["wnid"] for entry in top[:top_k]]
    best: tuple[Target, float] | None = None
    for target in targets:
        if not any(wnid in target.wnids for wnid in ranked):
            continue
        if probabilities is not None:
            score = sum(probabilities.get(wnid, 0.0) for wnid in target.wnids)
        else:
            score = sum(float(e["score"]) for e in top if e["wnid"] in target.wnids)
        if score >= threshold and (best is None or score > best[1]):
            best = (target, score)
    return best
