"""Deciding again from stored scores: new labels, top_k or threshold without the network; new models once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from staged import jpeg, sample_photos, stage, staged_config

from harvest.model.runtime import Classifier
from harvest.rethreshold import run_rethreshold
from harvest.settings.config import ConfigError
from harvest.stages.classify import run_classify
from harvest.stages.publish import manifest_key, run_publish
from harvest.state.db import session_scope
from harvest.state.models import Prediction

REPO = Path(__file__).resolve().parents[1]


def _manifest(cfg) -> dict[str, str]:
    path = Path(cfg.destination) / manifest_key(cfg.run_id)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["alt"]: row["label"] for row in rows}


@pytest.fixture
def harvested(database_url, tmp_path, classifier):
    """A run whose photos were classified once, and published for the espresso label."""
    photos = sample_photos()
    cfg = staged_config(database_url, tmp_path, ["espresso"])
    stage(cfg, {name: jpeg(photos[name]) for name in ("chelsea", "coffee", "china", "flower")})
    run_classify(cfg, classifier)
    run_publish(cfg)
    assert _manifest(cfg) == {"coffee": "espresso"}
    return cfg


def _refuse_to_load(*_args):
    raise AssertionError("the model must not be loaded when its scores are stored")


def test_new_labels_top_k_and_threshold_need_no_model(harvested):
    reports = run_rethreshold(harvested.with_(labels=("daisy", "palace")), load=_refuse_to_load)
    assert [r.stage for r in reports] == ["publish"]
    assert _manifest(harvested) == {"flower": "daisy", "china": "palace"}

    # a group over classes that were not among any stored top entry still gets its summed score
    run_rethreshold(harvested.with_(labels=("n02121808",), top_k=3, threshold=0.5), load=_refuse_to_load)
    assert _manifest(harvested) == {"chelsea": "domestic_cat"}

    run_rethreshold(harvested.with_(labels=("n02121808",), threshold=1.0), load=_refuse_to_load)
    assert _manifest(harvested) == {}


def test_rethreshold_does_not_import_tensorflow(harvested):
    probe = (
        "import json, sys\n"
        "from harvest.settings.config import build_config\n"
        "from harvest.rethreshold import run_rethreshold\n"
        f"cfg = build_config({{'labels': ['daisy'], 'destination': {harvested.destination!r}}}, "
        f"{harvested.run_id!r}, database_url={harvested.database_url!r}, require_seeds=False)\n"
        "reports = run_rethreshold(cfg)\n"
        "print(json.dumps({'heavy': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')),"
        " 'stages': [r.stage for r in reports]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "stages": ["publish"]}
    assert _manifest(harvested) == {"flower": "daisy"}


def test_a_new_model_version_classifies_again_and_keeps_both(harvested, classifier, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(classifier.spec.path, models / "efficientnet_lite0.keras")
    meta = json.loads(classifier.spec.path.with_suffix(".json").read_text())
    (models / "efficientnet_lite0.json").write_text(json.dumps({**meta, "version": "2"}))
    shutil.copy(classifier.spec.path.parent / "imagenet_classes.json", models)
    loads = []

    def load(spec, _models_dir):
        loads.append(spec.key)
        return Classifier(replace(classifier.spec, version=spec.version), classifier.model, classifier.run)

    cfg = harvested.with_(models_dir=models, labels=("daisy",))
    reports = run_rethreshold(cfg, load=load)
    assert loads == ["efficientnet_lite0@2"]
    assert [r.stage for r in reports] == ["classify", "publish"]
    assert reports[0].done == 4
    with session_scope(cfg.database_url) as session:
        keys = sorted(session.scalars(select(Prediction.model)).all())
    assert keys == ["efficientnet_lite0@1"] * 4 + ["efficientnet_lite0@2"] * 4
    # and once scored, the new version is not run again either
    run_rethreshold(cfg.with_(labels=("palace",)), load=_refuse_to_load)
    assert _manifest(cfg) == {"china": "palace"}


def test_unknown_run_or_label_is_refused_before_any_work(harvested):
    with pytest.raises(ConfigError, match="not in the state DB"):
        run_rethreshold(harvested.with_(run_id="manual__nope"), load=_refuse_to_load)
    with pytest.raises(ConfigError, match="unicorn"):
        run_rethreshold(harvested.with_(labels=("unicorn",)), load=_refuse_to_load)
