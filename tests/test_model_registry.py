"""Every model form that works offline: a .keras file, its SavedModel and TFLite exports, made here.

The tiny network answers the dominant colour of an image, so each format's result is checkable, and
its description (classes, input size, scaling) lives in a sidecar JSON: preprocessing travels with
the model, the caller passes only the ``model`` setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from staged import jpeg, stage, staged_config

from harvest.model.registry import resolve_model
from harvest.model.runtime import load_classifier
from harvest.settings.config import DEFAULT_MODELS_DIR, ConfigError, build_config
from harvest.stages.classify import run_classify
from harvest.stages.publish import manifest_key, run_publish

COLOURS = ["red", "green", "blue"]


def _describe(path: Path, **extra) -> None:
    meta = {
        "classes": COLOURS,
        "input": {"shape": [32, 32, 3], "crop_fraction": 1.0, "scale": "unit"},
        **extra,
    }
    target = path / "model.json" if path.is_dir() else path.with_suffix(".json")
    target.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def colour_models(tmp_path_factory) -> dict[str, Path]:
    """A .keras file, its SavedModel export and its TFLite conversion, each with a sidecar description."""
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("colour-models")
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="colour")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("colour").set_weights([np.eye(3, dtype="float32") * 8.0, np.zeros(3, dtype="float32")])

    paths = {
        "keras": root / "colour.keras",
        "savedmodel": root / "colour_savedmodel",
        "tflite": root / "colour.tflite",
    }
    model.save(paths["keras"])
    model.export(paths["savedmodel"], verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(paths["savedmodel"]))
    paths["tflite"].write_bytes(converter.convert())
    for path in paths.values():
        _describe(path)
    return paths


def _swatches() -> np.ndarray:
    rng = np.random.default_rng(7)
    images = []
    for channel in range(3):
        image = rng.integers(0, 60, size=(32, 32, 3))
        image[..., channel] = 200
        images.append(image)
    return np.stack(images).astype("uint8")


@pytest.mark.parametrize("form", ["keras", "savedmodel", "tflite"])
def test_each_offline_form_loads_and_answers(colour_models, form):
    spec = resolve_model(str(colour_models[form]), DEFAULT_MODELS_DIR)
    assert spec.format == form
    assert [c.name for c in spec.classes] == COLOURS
    assert spec.preprocess.size == 32 and spec.preprocess.scale == "unit"
    classifier = load_classifier(spec, DEFAULT_MODELS_DIR)
    probabilities = classifier.predict(_swatches())
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [classifier.top(p, 1)[0]["name"] for p in probabilities] == COLOURS
    # batch size changes between calls (the last batch of a run is smaller)
    assert classifier.predict(_swatches()[:1]).shape == (1, 3)


def test_the_three_forms_agree(colour_models):
    outputs = [
        load_classifier(str(colour_models[form]), DEFAULT_MODELS_DIR).predict(_swatches())
        for form in ("keras", "savedmodel", "tflite")
    ]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-4)


def test_version_follows_the_file_content_unless_given(colour_models, tmp_path):
    copy = tmp_path / "copy.keras"
    copy.write_bytes(colour_models["keras"].read_bytes())
    _describe(copy)
    first = resolve_model(str(copy), DEFAULT_MODELS_DIR)
    assert first.key == resolve_model(str(colour_models["keras"]), DEFAULT_MODELS_DIR).key.replace(
        "colour", "copy"
    )
    copy.write_bytes(copy.read_bytes() + b"\0")
    assert resolve_model(str(copy), DEFAULT_MODELS_DIR).version != first.version
    _describe(copy, name="colours", version="7")
    assert resolve_model(str(copy), DEFAULT_MODELS_DIR).key == "colours@7"


def test_logits_output_gets_a_softmax(colour_models, tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, logits)
    model.get_layer("logits").set_weights([np.eye(3, dtype="float32") * 8.0, np.zeros(3, dtype="float32")])
    path = tmp_path / "logits.keras"
    model.save(path)
    _describe(path, output_kind="logits")
    probabilities = load_classifier(str(path), DEFAULT_MODELS_DIR).predict(_swatches())
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(probabilities.argmax(axis=1)) == [0, 1, 2]


def test_a_custom_model_runs_the_stages_with_its_own_labels(colour_models, database_url, tmp_path):
    cfg = staged_config(database_url, tmp_path, ["red"], model=str(colour_models["tflite"]), threshold=0.5)
    swatches = {
        name: jpeg(Image.fromarray(image).resize((64, 48)))
        for name, image in zip(COLOURS, _swatches(), strict=True)
    }
    stage(cfg, swatches)
    report = run_classify(cfg)
    assert report.done == 3 and report.extra["model"].startswith("colour@")
    run_publish(cfg)
    rows = [
        json.loads(line)
        for line in (Path(cfg.destination) / manifest_key(cfg.run_id)).read_text().splitlines()
    ]
    assert [(row["alt"], row["label"]) for row in rows] == [("red", "red")]


def test_imagenet_labels_do_not_apply_to_a_custom_model(colour_models):
    from harvest.model.labels import resolve_labels

    spec = resolve_model(str(colour_models["keras"]), DEFAULT_MODELS_DIR)
    with pytest.raises(ConfigError, match="'dog' is not a class of the model"):
        resolve_labels(["dog"], DEFAULT_MODELS_DIR, spec.classes)


def test_bundled_and_keras_applications_are_described_without_tensorflow():
    bundled = resolve_model("efficientnet_lite0", DEFAULT_MODELS_DIR)
    assert (
        bundled.key == "efficientnet_lite0@1" and bundled.format == "keras" and len(bundled.classes) == 1000
    )
    assert bundled.preprocess.size == 224 and bundled.preprocess.scale == "raw"
    app = resolve_model("keras.applications.MobileNetV2", DEFAULT_MODELS_DIR)
    assert app.format == "keras.applications" and app.name == "keras-MobileNetV2" and len(app.classes) == 1000
    assert resolve_model("keras.applications.InceptionV3", DEFAULT_MODELS_DIR).preprocess.size == 299


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_model", "no such model"),
        ("keras.applications.../x", "not a keras.applications name"),
    ],
)
def test_unknown_models_are_refused_with_the_forms_listed(model, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model(model, DEFAULT_MODELS_DIR)


def test_a_model_file_without_a_description_is_refused(colour_models, tmp_path):
    bare = tmp_path / "bare.keras"
    bare.write_bytes(colour_models["keras"].read_bytes())
    with pytest.raises(ConfigError, match="lists its classes|no description"):
        resolve_model(str(bare), DEFAULT_MODELS_DIR)


def test_model_setting_comes_from_params_or_environment():
    assert build_config({"labels": ["dog"]}, "r", require_seeds=False, env={}).model == "efficientnet_lite0"
    env = {"HARVEST_MODEL": "keras.applications.MobileNetV2"}
    assert build_config({"labels": ["dog"]}, "r", require_seeds=False, env=env).model == env["HARVEST_MODEL"]
    assert (
        build_config({"labels": ["dog"], "model": "x.tflite"}, "r", require_seeds=False, env=env).model
        == "x.tflite"
    )
