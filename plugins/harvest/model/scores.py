"""The stored form of a prediction: every class probability, compactly, so decisions can be re-made.

float16 keeps 3 significant digits and probabilities down to 6e-8, far finer than any threshold a
user sets, in 2 bytes a class (2 KB an image for ImageNet-1k). Group scores are sums over member
classes, computed when deciding rather than stored, so any label asked later is answerable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harvest.model.labels import ImageNetClass, Target

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


def target_class_indexes(
    targets: list[Target], classes: tuple[ImageNetClass, ...] | None
) -> list[tuple[str, int]]:
    """(wnid, index in the model's output) of every class some target counts, for reading their
    probabilities out of a stored vector; none without the model's class list."""
    members = set().union(*(t.wnids for t in targets)) if targets else set()
    return [(c.wnid, c.index) for c in classes or () if c.wnid in members]


def ranked_and_probabilities(
    top: list[dict],
    blob: bytes | None,
    classes: tuple[ImageNetClass, ...] | None,
    wanted: list[tuple[str, int]],
    top_k: int,
) -> tuple[list[dict], dict[str, float] | None]:
    """The top entries to rank by and the target classes' probabilities, from the stored vector
    ``blob`` if any (``top`` is the prediction's stored top entries)."""
    if blob is None or classes is None:
        return top, None
    vector = decode(blob, len(classes))
    probabilities = {wnid: float(vector[index]) for wnid, index in wanted}
    if top_k <= len(top):
        return top, probabilities
    top = top_entries(vector, [c.wnid for c in classes], [c.name for c in classes], top_k)
    return top, probabilities
