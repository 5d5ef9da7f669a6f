"""The classification stage on real photos with the real network: batches, stored vectors, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select
from staged import jpeg, sample_photos, stage, staged_config

from harvest.model import scores
from harvest.model.labels import resolve_labels
from harvest.model.scores import decide
from harvest.stages.classify import ahead, batched, run_classify
from harvest.stages.publish import select_kept
from harvest.state.db import session_scope
from harvest.state.models import Prediction

TABBY, TIGER_CAT, EGYPTIAN_CAT = "n02123045", "n02123159", "n02124075"


def _predictions(cfg) -> dict[str, Prediction]:
    with session_scope(cfg.database_url) as session:
        return {p.sha256: p for p in session.scalars(select(Prediction)).all()}


def test_a_corrupt_image_is_recorded_and_the_rest_of_its_batch_classified(database_url, tmp_path, classifier):
    photos = sample_photos()
    good = jpeg(photos["chelsea"])
    files = {
        "chelsea": good,
        "truncated": good[: len(good) // 3],  # header intact, pixels missing
        "coffee": jpeg(photos["coffee"]),
        "china": jpeg(photos["china"]),
    }
    cfg = staged_config(database_url, tmp_path, ["tabby"]).with_(batch_size=4)
    shas = stage(cfg, files)

    report = run_classify(cfg, classifier)

    assert (report.done, report.failed) == (3, 1)
    rows = _predictions(cfg)
    broken = rows[shas["truncated"]]
    assert broken.top is None and broken.scores is None
    assert "cannot decode" in broken.error
    assert rows[shas["chelsea"]].top[0]["wnid"] in {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert rows[shas["coffee"]].top[0]["name"] == "espresso"
    # a second run finds nothing left to do, the failure included
    again = run_classify(cfg, classifier)
    assert (again.done, again.failed) == (0, 0)


def test_the_whole_vector_is_stored_and_matches_the_network(database_url, tmp_path, classifier):
    photos = sample_photos()
    cfg = staged_config(database_url, tmp_path, ["tabby"]).with_(batch_size=2)
    shas = stage(cfg, {name: jpeg(photos[name]) for name in ("chelsea", "coffee", "china")})
    run_classify(cfg, classifier)
    row = _predictions(cfg)[shas["chelsea"]]
    vector = scores.decode(row.scores, 1000)
    assert vector.sum() == pytest.approx(1.0, abs=5e-3)
    top = classifier.top(vector, 10)
    assert [e["wnid"] for e in top[:3]] == [e["wnid"] for e in row.top[:3]]
    assert len(row.top) == 10


def test_group_score_sums_the_breeds(database_url, tmp_path, classifier):
    """Chelsea's probability is spread over tabby / tiger cat / Egyptian cat; the group gathers it."""
    photos = sample_photos()
    cfg = staged_config(database_url, tmp_path, ["n02121808"], threshold=0.0)  # domestic cat
    shas = stage(cfg, {"chelsea": jpeg(photos["chelsea"]), "coffee": jpeg(photos["coffee"])})
    run_classify(cfg, classifier)
    row = _predictions(cfg)[shas["chelsea"]]
    vector = scores.decode(row.scores, 1000)
    classes = classifier.classes
    [cats] = resolve_labels(["n02121808"], cfg.models_dir)
    expected = sum(float(vector[c.index]) for c in classes if c.wnid in cats.wnids)
    best_single = max(float(vector[c.index]) for c in classes if c.wnid in cats.wnids)
    kept, scored = select_kept(cfg.with_(threshold=0.0), [cats], classifier.key, classes)
    assert scored == 2
    assert [k.sha256 for k in kept] == [shas["chelsea"]]
    assert kept[0].score == pytest.approx(expected, abs=1e-5)
    assert kept[0].score > best_single


def _target(wnids, folder="t", group=None):
    from harvest.model.labels import Target

    return Target(label=folder, folder=folder, wnids=frozenset(wnids), group=group)


def test_decide_needs_a_member_in_the_top_k_and_the_summed_score():
    top = [{"wnid": "a", "score": 0.3}, {"wnid": "b", "score": 0.25}, {"wnid": "c", "score": 0.2}]
    group = _target({"b", "c"}, "bc", "nX")
    assert decide(top, [group], top_k=1, threshold=0.1) is None  # no member in the top 1
    target, score = decide(top, [group], top_k=2, threshold=0.4)
    assert target is group and score == pytest.approx(0.45)
    assert decide(top, [group], top_k=2, threshold=0.5) is None
    # with the stored vector, members outside the top entries count too
    wider = _target({"b", "c", "d"})
    assert decide(top, [wider], 2, 0.5) is None  # "d" is not among the stored top entries
    _, score = decide(top, [wider], 2, 0.5, probabilities={"b": 0.25, "c": 0.2, "d": 0.1})
    assert score == pytest.approx(0.55)


def test_decide_prefers_the_highest_scoring_target():
    top = [{"wnid": "a", "score": 0.5}, {"wnid": "b", "score": 0.4}]
    a, b = _target({"a"}, "a"), _target({"b"}, "b")
    assert decide(top, [b, a], top_k=5, threshold=0.2)[0] is a


def test_ahead_keeps_order_and_a_bounded_window():
    from concurrent.futures import ThreadPoolExecutor

    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for value in ahead(items(), lambda i: i * i, pool, window=5):
            assert len(produced) - len(out) <= 5
            out.append(value)
    assert out == [i * i for i in range(50)]
    assert [len(b) for b in batched(range(7), 3)] == [3, 3, 1]
    assert np.array_equal(np.concatenate([np.array(b) for b in batched(range(7), 3)]), np.arange(7))


_CLASSIFY_IN_A_FRESH_PROCESS = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from harvest.settings.config import build_config
from harvest.stages.classify import run_classify
cfg = build_config({"seeds": [], "labels": ["tabby"], "destination": sys.argv[2]}, "manual__staged",
                   database_url=sys.argv[1], require_seeds=False)
report = run_classify(cfg)
print("RESULT", json.dumps({"done": report.done, "loaded": report.extra.get("loaded", True),
                            "tensorflow": "tensorflow" in sys.modules, "model": report.extra["model"]}))
"""


def _classify_in_a_fresh_process(cfg, **env: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _CLASSIFY_IN_A_FRESH_PROCESS, cfg.database_url, cfg.destination],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line[len("RESULT ") :]), "stderr": result.stderr}


def test_nothing_pending_loads_no_model(database_url, tmp_path, classifier):
    """Once every image has its scores, the stage answers from one query: TensorFlow is never imported."""
    photos = sample_photos()
    cfg = staged_config(database_url, tmp_path, ["tabby"])
    stage(cfg, {"chelsea": jpeg(photos["chelsea"])})
    assert run_classify(cfg, classifier).done == 1

    outcome = _classify_in_a_fresh_process(cfg)

    assert outcome["done"] == 0 and outcome["loaded"] is False
    assert outcome["tensorflow"] is False
    assert outcome["model"] == classifier.key


def test_pending_images_load_the_model_and_its_start_up_lines_are_info(tmp_path, models_dir):
    """With an image waiting, the model is loaded; TensorFlow's native start-up lines reach the log as
    INFO records of harvest.model.tensorflow, not as raw stderr (which Airflow logs as errors). The
    Keras runtime is asked for: it is the one that loads TensorFlow (a GPU, or the fallback)."""
    cfg = staged_config(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, ["tabby"])
    stage(cfg, {"coffee": jpeg(sample_photos()["coffee"])})

    outcome = _classify_in_a_fresh_process(cfg, HARVEST_RUNTIME="keras")

    assert outcome["done"] == 1 and outcome["tensorflow"] is True
    raw = [line for line in outcome["stderr"].splitlines() if not line.startswith(("INFO:", "DEBUG:"))]
    assert not [line for line in raw if "oneDNN" in line or "absl" in line], raw
    assert any(line.startswith("INFO:harvest.model.tensorflow:") for line in outcome["stderr"].splitlines())
