"""Accuracy on the installed sample photos through the stage's own path: JPEG bytes, decode, groups.

The conversion test checks the network on in-memory photos; this one checks what the harvest
does with them: JPEG-encode, decode at reduced DCT scale, crop, score, and sum groups.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from staged import jpeg, sample_photos  # noqa: E402

from harvest.model.labels import resolve_labels  # noqa: E402
from harvest.model.runtime import decode_for_model  # noqa: E402
from harvest.settings.config import DEFAULT_MODELS_DIR  # noqa: E402

# photo -> (class expected at top-1, WordNet group expected to hold most of the probability)
EXPECTED = {
    "chelsea": ("Egyptian cat", "n02121808"),  # domestic cat: tabby + tiger cat + Egyptian cat
    "coffee": ("espresso", None),
    "china": ("palace", None),
    "flower": ("daisy", None),
}


@pytest.fixture(scope="module")
def probabilities(classifier) -> dict[str, np.ndarray]:
    photos = sample_photos()
    batch = np.stack([decode_for_model(jpeg(photos[name])) for name in EXPECTED])
    return dict(zip(EXPECTED, classifier.predict(batch), strict=True))


@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_top1_through_jpeg_decode(photo, probabilities, classifier):
    top = classifier.top(probabilities[photo], 5)
    assert top[0]["name"] == EXPECTED[photo][0], top


@pytest.mark.parametrize("photo", [p for p, (_, group) in EXPECTED.items() if group])
def test_group_gathers_the_probability(photo, probabilities, classifier):
    [group] = resolve_labels([EXPECTED[photo][1]], DEFAULT_MODELS_DIR)
    vector = probabilities[photo]
    score = sum(float(vector[c.index]) for c in classifier.classes if c.wnid in group.wnids)
    best = max(float(vector[c.index]) for c in classifier.classes if c.wnid in group.wnids)
    assert score >= 0.8 and score > best
