"""A filter head trained on the frozen network's features, from folders of examples (local or S3)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from harvest.model.labels import resolve_labels
from harvest.model.registry import resolve_model
from harvest.model.runtime import load_classifier
from harvest.model.train_filter import list_examples, split, train_filter
from harvest.settings.config import ConfigError
from harvest.storage import open_store


def _striped(rng, vertical: bool) -> bytes:
    """Stripes in random colours and widths: a concept ImageNet has no class for, separable by orientation."""
    period = int(rng.integers(8, 24))
    a, b = rng.integers(0, 256, size=(2, 3))
    ramp = (np.arange(160) // period) % 2
    mask = np.tile(ramp, (120, 1)) if vertical else np.tile(ramp[:120, None], (1, 160))
    image = np.where(mask[..., None] == 1, a, b).astype("uint8")
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_examples(store, per_class: int = 12) -> None:
    rng = np.random.default_rng(3)
    for i in range(per_class):
        store.put(f"vertical/{i}.jpg", _striped(rng, True), "image/jpeg")
        store.put(f"other/{i}.jpg", _striped(rng, False), "image/jpeg")
    store.put("other/notes.txt", b"not an image, ignored", "text/plain")


def test_trained_head_separates_and_is_selectable_like_any_model(tmp_path, classifier):
    examples = tmp_path / "examples"
    _write_examples(open_store(str(examples), None))
    out = tmp_path / "models"

    description = train_filter(str(examples), "stripes", out, base=classifier)

    assert description["classes"] == ["other", "vertical"]
    assert description["examples"] == {"other": 12, "vertical": 12}
    assert description["held_out"]["accuracy"] >= 0.9
    assert description["held_out"]["per_class"]["vertical"]["support"] == 3
    saved = json.loads((out / "stripes.json").read_text())
    assert saved["held_out"] == description["held_out"] and saved["base"] == classifier.key

    spec = resolve_model("stripes", out)
    assert spec.key == f"stripes@{description['version']}" and [c.name for c in spec.classes] == [
        "other",
        "vertical",
    ]
    [target] = resolve_labels(["vertical"], out, spec.classes)
    assert target.folder == "vertical"
    fresh = np.random.default_rng(99)
    images = [_striped(fresh, vertical) for vertical in (True, False, True, False)]
    from harvest.model.runtime import decode_for_model

    batch = np.stack([decode_for_model(data, spec.preprocess) for data in images])
    predicted = load_classifier(spec, out).predict(batch).argmax(axis=1)
    assert list(predicted) == [1, 0, 1, 0]


def test_examples_from_an_s3_prefix(s3, bucket):
    store = open_store(f"s3://{bucket}/examples", s3)
    _write_examples(store, per_class=3)
    found = list_examples(f"s3://{bucket}/examples", s3)
    assert sorted(found) == ["other", "vertical"]
    assert len(found["vertical"]) == 3 and all(k.endswith(".jpg") for k in found["other"])


def test_too_few_classes_or_examples_are_refused(tmp_path):
    store = open_store(str(tmp_path / "one"), None)
    store.put("only/a.jpg", b"x")
    store.put("only/b.jpg", b"x")
    with pytest.raises(ConfigError, match="two or more class folders"):
        list_examples(str(tmp_path / "one"), None)


def test_split_holds_out_every_class():
    labels = np.array([0] * 10 + [1] * 3)
    train, test = split(labels, 0.25, seed=1)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(13))
    assert set(labels[test]) == {0, 1}
    assert len(test) == 3  # round(2.5) + max(1, round(0.75))
