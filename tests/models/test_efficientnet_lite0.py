"""End-to-end check of the converted EfficientNet-Lite0 classifier on real photos.

The conversion maps PyTorch tensors onto Keras layers by hand, so the only
convincing evidence that layouts, padding and normalisation are right is that
the saved model recognises real photographs. The photos come from packages
that are already installed (scikit-image, matplotlib, scikit-learn), so the
test needs no network and no committed image files. If the ``.keras`` file has
not been generated yet, it is built in-process rather than skipped: a missing
artefact must not make the suite pass vacuously.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from harvest.images.pixels import IMAGE_SIZE, prepare_rgb

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "include" / "models"
MODEL_PATH = MODELS_DIR / "efficientnet_lite0.keras"
CLASS_INDEX_PATH = MODELS_DIR / "imagenet_classes.json"

# Acceptable top-5 classes per photo (WordNet ids; ILSVRC-2012 index in comments).
EXPECTED: dict[str, set[str]] = {
    # skimage "chelsea": a tabby cat
    "chelsea": {"n02123045", "n02123159", "n02124075"},  # tabby 281, tiger cat 282, Egyptian cat 285
    # skimage "coffee": espresso in a cup on a saucer
    "coffee": {"n07920052", "n07930864", "n03063599"},  # espresso 967, cup 968, coffee mug 504
    # matplotlib "grace_hopper": portrait in US Navy uniform
    "grace_hopper": {"n03763968"},  # military uniform 652
    # scikit-learn "china": the Summer Palace, Beijing
    "china": {
        "n03877845",  # palace 698
        "n03781244",  # monastery 663
        "n04346328",  # stupa 832
        "n03220513",  # dome 538
        "n02825657",  # bell cote 442
        "n02980441",  # castle 483
        "n03028079",  # church 497
    },
}
# Photos where the right answer is unambiguous enough to demand it at top-1.
EXPECTED_TOP1 = {"chelsea", "coffee", "china"}


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample_photos() -> dict[str, Image.Image]:
    import skimage.data
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = Image.open(fh)
        hopper.load()
    return {
        "chelsea": Image.fromarray(skimage.data.chelsea()),
        "coffee": Image.fromarray(skimage.data.coffee()),
        "grace_hopper": hopper,
        "china": Image.fromarray(load_sample_image("china.jpg")),
    }


@pytest.fixture(scope="module")
def class_index() -> list[dict[str, Any]]:
    if not CLASS_INDEX_PATH.exists():
        _load_module("build_class_index", MODELS_DIR / "build_class_index.py").main([])
    return json.loads(CLASS_INDEX_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model() -> Any:
    if not MODEL_PATH.exists():
        converter = _load_module("convert_efficientnet_lite", MODELS_DIR / "convert_efficientnet_lite.py")
        assert converter.main(["--out", str(MODEL_PATH), "--no-tflite"]) == 0
    import keras

    # No custom_objects: the model must be loadable from built-in layers alone.
    return keras.models.load_model(MODEL_PATH, compile=False)


@pytest.fixture(scope="module")
def photo_probs(model: Any) -> dict[str, np.ndarray]:
    photos = _sample_photos()
    batch = np.stack([prepare_rgb(img) for img in photos.values()]).astype("float32")
    probs = np.asarray(model(batch, training=False))
    return dict(zip(photos, probs, strict=True))


def test_class_index_anchors(class_index: list[dict[str, Any]]) -> None:
    assert len(class_index) == 1000
    assert [c["index"] for c in class_index] == list(range(1000))
    assert class_index[1]["wnid"] == "n01443537" and class_index[1]["name"] == "goldfish"
    assert class_index[281]["wnid"] == "n02123045" and class_index[281]["name"] == "tabby"
    assert class_index[652]["wnid"] == "n03763968" and class_index[652]["name"] == "military uniform"
    assert len({c["wnid"] for c in class_index}) == 1000


def test_model_signature(model: Any) -> None:
    assert tuple(model.input_shape) == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert tuple(model.output_shape) == (None, 1000)
    assert model.count_params() == 4_694_024
    meta = json.loads(MODEL_PATH.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["name"] == "efficientnet_lite0"
    assert meta["class_index_file"] == CLASS_INDEX_PATH.name


@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_sample_photo_top5(photo: str, photo_probs: dict[str, np.ndarray], class_index: list) -> None:
    probs = photo_probs[photo]
    assert probs.shape == (1000,)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(probs.min()) >= 0.0
    top5 = [class_index[i]["wnid"] for i in np.argsort(-probs)[:5]]
    names = [class_index[i]["name"] for i in np.argsort(-probs)[:5]]
    assert EXPECTED[photo] & set(top5), f"{photo}: top-5 was {names}"
    if photo in EXPECTED_TOP1:
        assert top5[0] in EXPECTED[photo], f"{photo}: top-1 was {names[0]}"


def test_featureless_images_are_not_confident(model: Any, class_index: list) -> None:
    rng = np.random.default_rng(1234)
    images = [
        rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8),  # uniform noise
        np.full((256, 256, 3), 128, dtype=np.uint8),  # flat grey
        np.zeros((256, 256, 3), dtype=np.uint8),  # black
        np.full((256, 256, 3), 255, dtype=np.uint8),  # white
        np.tile(np.array([200, 30, 30], dtype=np.uint8), (256, 256, 1)),  # flat red
    ]
    batch = np.stack([prepare_rgb(Image.fromarray(a)) for a in images]).astype("float32")
    probs = np.asarray(model(batch, training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    watched = sorted({c["index"] for c in class_index if any(c["wnid"] in s for s in EXPECTED.values())})
    assert len(watched) == sum(len(s) for s in EXPECTED.values())
    assert float(probs[:, watched].max()) < 0.5


# --- preprocessing: every input the pipeline may meet becomes (224, 224, 3) uint8 RGB ---


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "CMYK", "YCbCr", "I", "F"])
def test_prepare_rgb_modes(mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8)).convert(mode)
    out = prepare_rgb(image)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert out.dtype == np.uint8


def test_prepare_rgb_sixteen_bit_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((64, 64), 32896, dtype=np.uint16))  # mid-grey in 16 bits
    assert grey16.mode.startswith("I;16")
    out = prepare_rgb(grey16)
    assert np.all(out == 128)


def test_prepare_rgb_transparency_becomes_white() -> None:
    clear = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert np.all(prepare_rgb(clear) == 255)
    palette = Image.new("P", (40, 30), 0)
    palette.info["transparency"] = 0
    assert np.all(prepare_rgb(palette) == 255)


def test_prepare_rgb_applies_exif_orientation() -> None:
    # Left half red, right half black; orientation 6 means "rotate 90 degrees clockwise to view",
    # which puts the red half on top.
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 150, 100))
    exif = image.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    buf.seek(0)
    out = prepare_rgb(Image.open(buf), crop_fraction=1.0).astype(int)
    assert out[:20, :, 0].mean() > 200 and out[:20, :, 1].mean() < 40
    assert out[-20:].mean() < 40
