"""The classifier's runtime: the fast path answers like the Keras reference, and when it cannot be
used (missing, stale or broken export) the Keras model runs and the log says why.

Device choice and GPU batch sizing are pure functions (harvest.model.plan), tested here for the
hardware this machine lacks.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from staged import sample_photos

from harvest.model.plan import (
    CPU_FAST_BATCH,
    GPU_BATCH_DEFAULT,
    SCORE_TOLERANCE,
    Gpu,
    gpu_batch_size,
    plan_runtime,
)
from harvest.model.registry import resolve_model
from harvest.model.runtime import decode_for_model, load_classifier

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30


# --- the fast path is faithful -------------------------------------------------------------------


def _photo_set(count: int = 48, seed: int = 3) -> list[bytes]:
    """The sample photos, then random crops, flips and sizes of them as JPEG (the bench's recipe)."""
    import io

    rng = np.random.default_rng(seed)
    sources = list(sample_photos().values())
    out = []
    for image in sources:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    for i in range(count):
        image = sources[i % len(sources)].convert("RGB")
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        width = int(rng.integers(320, 801))
        crop = crop.resize((width, max(1, round(width * ch / cw))), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=int(rng.integers(80, 95)))
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite2"])
def test_the_fast_runtime_gives_the_keras_top5_on_every_photo(model, bundled_models):
    fast = load_classifier(model, bundled_models)
    reference = load_classifier(model, bundled_models, runtime="keras")
    assert (fast.runtime, reference.runtime) == ("litert", "keras")
    assert fast.key == reference.key  # the same predictions key: the runtime is not part of it
    batch = np.stack([decode_for_model(data, fast.spec.preprocess) for data in _photo_set()])
    got, expected = fast.predict(batch), reference.predict(batch)
    top_got = np.argsort(-got, axis=1, kind="stable")[:, :5]
    top_expected = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    assert [list(row) for row in top_got] == [list(row) for row in top_expected]
    assert float(np.max(np.abs(got - expected))) <= SCORE_TOLERANCE


def test_scoring_from_several_threads_gives_what_one_thread_gives(bundled_models):
    """Lanes score batches at once, each on its own interpreter: the answers do not mix."""
    from concurrent.futures import ThreadPoolExecutor

    fast = load_classifier("efficientnet_lite0", bundled_models)
    assert fast.lanes >= 1
    batches = [np.stack([decode_for_model(data) for data in _photo_set(8, seed)]) for seed in range(4)]
    alone = [fast.predict(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(fast.predict, batches))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_fast_path_does_not_import_tensorflow(bundled_models):
    """A worker scoring on the CPU never pays TensorFlow's import (seconds, ~600 MB)."""
    code = (
        "import sys; from harvest.model.runtime import load_classifier;"
        f"c = load_classifier('efficientnet_lite0', {str(bundled_models)!r});"
        "import numpy as np; c.predict(np.zeros((2, 224, 224, 3), 'uint8'));"
        "print(c.runtime, 'tensorflow' in sys.modules)"
    )
    env = {"PYTHONPATH": f"{REPO / 'plugins'}:{REPO}", "PATH": "/usr/bin:/bin", "HARVEST_RUNTIME": "auto"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-2:] == ["litert", "False"]


# --- falling back to the Keras reference ---------------------------------------------------------


@pytest.fixture
def lite0_copy(tmp_path, bundled_models) -> Path:
    """A models folder holding the bundled Lite0 (its .keras linked, its description copied)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "efficientnet_lite0.keras").symlink_to((bundled_models / "efficientnet_lite0.keras").resolve())
    for name in ("efficientnet_lite0.json", "imagenet_classes.json"):
        shutil.copy(bundled_models / name, models / name)
    return models


def _fallback(models: Path, caplog) -> tuple[str, str]:
    with caplog.at_level(logging.INFO, logger="harvest.model.runtime"):
        classifier = load_classifier("efficientnet_lite0", models)
    assert classifier.predict(np.zeros((1, 224, 224, 3), "uint8")).shape == (1, 1000)
    return classifier.runtime, " ".join(r.getMessage() for r in caplog.records)


def test_a_missing_export_runs_the_keras_model_and_says_so(lite0_copy, caplog):
    runtime, logged = _fallback(lite0_copy, caplog)
    assert runtime == "keras"
    assert "efficientnet_lite0.tflite is missing" in logged and "make model" in logged


def test_an_export_of_another_keras_file_is_not_used(lite0_copy, bundled_models, caplog):
    shutil.copy(bundled_models / "efficientnet_lite0.tflite", lite0_copy / "efficientnet_lite0.tflite")
    record = {"built_from": {"file": "efficientnet_lite0.keras", "sha256": "0" * 64}}
    (lite0_copy / "efficientnet_lite0.tflite.json").write_text(json.dumps(record))
    runtime, logged = _fallback(lite0_copy, caplog)
    assert runtime == "keras"
    assert "was made from another efficientnet_lite0.keras" in logged


def test_an_export_litert_cannot_load_falls_back_with_the_reason(lite0_copy, bundled_models, caplog):
    """The export looks current but is damaged: loading fails, the Keras model runs, the log says why."""
    shutil.copy(
        bundled_models / "efficientnet_lite0.tflite.json", lite0_copy / "efficientnet_lite0.tflite.json"
    )
    good = (bundled_models / "efficientnet_lite0.tflite").read_bytes()
    (lite0_copy / "efficientnet_lite0.tflite").write_bytes(good[:4096])  # truncated flatbuffer
    runtime, logged = _fallback(lite0_copy, caplog)
    assert runtime == "keras"
    assert "cannot be loaded" in logged and "running the Keras model instead" in logged


def test_runtime_keras_can_be_forced(bundled_models, monkeypatch):
    monkeypatch.setenv("HARVEST_RUNTIME", "keras")
    assert load_classifier("efficientnet_lite0", bundled_models).runtime == "keras"
    monkeypatch.setenv("HARVEST_RUNTIME", "fastest")
    with pytest.raises(ValueError, match="HARVEST_RUNTIME='fastest' is not one of auto, litert, keras"):
        load_classifier("efficientnet_lite0", bundled_models)


# --- device choice and GPU batch sizing (pure) ---------------------------------------------------


def test_without_a_gpu_the_export_runs_on_the_cpu():
    plan = plan_runtime("auto", [], None, 224)
    assert (plan.runtime, plan.device, plan.batch_size) == ("litert", "cpu", CPU_FAST_BATCH)


def test_without_a_usable_export_the_keras_model_runs_on_the_cpu_with_the_reason():
    plan = plan_runtime("auto", [], "x.tflite is missing", 224)
    assert (plan.runtime, plan.device, plan.batch_size) == ("keras", "cpu", None)
    assert "x.tflite is missing" in plan.reason


def test_a_gpu_runs_the_keras_model_with_a_batch_that_fills_it():
    plan = plan_runtime("auto", [Gpu("/physical_device:GPU:0", 16 * GiB)], None, 224)
    assert (plan.runtime, plan.device, plan.batch_size) == ("keras", "gpu", 256)
    assert "GPU:0" in plan.reason and "16.0 GiB" in plan.reason
    # forcing LiteRT keeps the CPU even with a GPU; forcing Keras still uses the GPU
    assert plan_runtime("litert", [Gpu("g", 16 * GiB)], None, 224).device == "cpu"
    assert plan_runtime("keras", [Gpu("g", 16 * GiB)], None, 224).device == "gpu"


@pytest.mark.parametrize(
    ("memory", "size", "batch"),
    [
        (16 * GiB, 224, 256),  # 8 GiB for activations / 24 MiB per image = 341 -> 256
        (8 * GiB, 224, 128),
        (24 * GiB, 224, 512),
        (80 * GiB, 224, 1024),  # capped
        (1 * GiB, 224, 32),  # floored
        (16 * GiB, 260, 128),  # Lite2's larger input: 1.35x the memory per image
        (None, 224, GPU_BATCH_DEFAULT),  # memory unknown
    ],
)
def test_gpu_batch_size_follows_memory_and_input_size(memory, size, batch):
    assert gpu_batch_size(memory, size) == batch


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        plan_runtime("onnx", [], None, 224)


def test_the_registry_names_the_export_of_each_bundled_model(bundled_models):
    for name, size in (("efficientnet_lite0", 224), ("efficientnet_lite2", 260)):
        spec = resolve_model(name, bundled_models)
        assert spec.fast_path == bundled_models / f"{name}.tflite"
        assert spec.preprocess.size == size


def test_the_stage_scores_in_the_batches_the_runtime_asks_for(database_url, tmp_path, bundled_models):
    """A GPU plan's batch size replaces the configured one; every image is scored once, in lanes."""
    from dataclasses import replace

    from sqlalchemy import func, select
    from staged import jpeg, stage, staged_config

    from harvest.stages.classify import run_classify
    from harvest.state.db import session_scope
    from harvest.state.models import Prediction

    fast = load_classifier("efficientnet_lite0", bundled_models)
    seen: list[int] = []

    def run(batch):
        seen.append(len(batch))
        return fast.run(batch)

    planned = replace(fast, run=run, chunk=None, batch_size=3, lanes=2)
    cfg = staged_config(database_url, tmp_path, ["tabby"]).with_(batch_size=32)
    photos = list(sample_photos().values())
    stage(cfg, {f"p{i}": jpeg(photos[i % len(photos)].rotate(i * 7)) for i in range(8)})
    report = run_classify(cfg, planned)
    assert report.done == 8 and report.extra["runtime"] == "litert/cpu"
    assert sorted(seen) == [2, 3, 3]
    with session_scope(cfg.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 8
