"""Which network scores the images, chosen by the ``model`` setting, and how it wants its input.

A model is described without TensorFlow (name, version, classes, preprocessing), so the state DB key
of its predictions and the labels it can answer are known at parse and publish time; the network
itself is loaded only by the classification stage. Accepted ``model`` values:

* a name with ``<models_dir>/<name>.json`` beside a ``.keras``/``.tflite`` file or SavedModel
  folder (the bundled ``efficientnet_lite0`` and ``efficientnet_lite2``, filters made by
  ``make train-filter``);
* a path to a ``.keras`` file, a ``.tflite`` file or a SavedModel folder, described by a
  ``<path>.json`` / ``<stem>.json`` sidecar (or ``model.json`` inside the folder) that lists its classes;
* ``keras.applications.<Name>`` (e.g. ``keras.applications.MobileNetV2``): ImageNet weights that
  Keras downloads once into ``~/.keras`` on a machine with internet.

The sidecar's ``input`` says how pixels are prepared, so preprocessing travels with the model:
``{"shape": [224, 224, 3], "crop_fraction": 0.875, "scale": "raw"}`` where ``scale`` is ``raw``
(0..255, normalisation inside the network), ``unit`` (0..1), ``symmetric`` (-1..1) or
``keras.applications`` (that application's own ``preprocess_input``). ``output`` is
``probabilities`` (default) or ``logits`` (softmax applied here).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harvest.images.pixels import DEFAULT_CROP_FRACTION, IMAGE_SIZE
from harvest.model.labels import CLASS_INDEX_FILE, ImageNetClass, load_classes, make_classes
from harvest.settings.config import ConfigError

KERAS_APPLICATIONS = "keras.applications."
SCALES = ("raw", "unit", "symmetric", "keras.applications")
FORMATS = ("keras", "savedmodel", "tflite", "keras.applications")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Preprocess:
    size: int = IMAGE_SIZE
    crop_fraction: float = DEFAULT_CROP_FRACTION
    scale: str = "raw"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    format: str
    #: the .keras/.tflite file or SavedModel folder; None for keras.applications
    path: Path | None
    classes: tuple[ImageNetClass, ...]
    preprocess: Preprocess
    output: str = "probabilities"
    #: for trained filter heads: the network whose embeddings the head reads
    base: str | None = None
    #: the TensorFlow Lite export of a .keras reference (``tflite_file`` in its description), run
    #: instead of it on CPUs when present and current (harvest.model.plan); may not be built yet
    fast_path: Path | None = None

    @property
    def key(self) -> str:
        """What predictions are stored under: a new version is a new key, so both results are kept."""
        return f"{self.name}@{self.version}"


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.suffix == ".json" and file.parent == path:
            continue
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def _format_of(path: Path) -> str | None:
    if path.is_dir() and (path / "saved_model.pb").exists():
        return "savedmodel"
    if path.is_file() and path.suffix == ".keras":
        return "keras"
    if path.is_file() and path.suffix == ".tflite":
        return "tflite"
    return None


def _classes(meta: dict, base_dir: Path, models_dir: Path, where: str) -> tuple[ImageNetClass, ...]:
    if "classes" in meta:
        return make_classes(meta["classes"])
    index_file = meta.get("class_index_file")
    if index_file:
        if index_file == CLASS_INDEX_FILE and (Path(models_dir) / CLASS_INDEX_FILE).exists():
            return load_classes(Path(models_dir))
        path = base_dir / index_file
        if path.exists():
            return make_classes(json.loads(path.read_text(encoding="utf-8")))
    raise ConfigError([f"model {where}: its description lists no classes ('classes' or 'class_index_file')"])


def _preprocess(meta: dict, where: str) -> Preprocess:
    spec = meta.get("input") or {}
    shape = spec.get("shape") or [IMAGE_SIZE, IMAGE_SIZE, 3]
    scale = spec.get("scale", "raw")
    if scale not in SCALES:
        raise ConfigError([f"model {where}: input scale {scale!r} is not one of {', '.join(SCALES)}"])
    return Preprocess(
        size=int(shape[0]), crop_fraction=float(spec.get("crop_fraction", DEFAULT_CROP_FRACTION)), scale=scale
    )


def _sidecar(path: Path) -> Path | None:
    options = [path.with_suffix(".json"), path.parent / f"{path.name}.json"]
    if path.is_dir():
        options.insert(0, path / "model.json")
    return next((p for p in options if p.is_file()), None)


def _from_file(path: Path, models_dir: Path, name: str | None = None) -> ModelSpec:
    where = str(path)
    fmt = _format_of(path)
    if fmt is None:
        raise ConfigError([f"model {where}: not a .keras file, .tflite file or SavedModel folder"])
    meta_path = _sidecar(path)
    if meta_path is None:
        raise ConfigError(
            [f"model {where}: no description found ({path.with_suffix('.json')}) listing its classes"]
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    output = meta.get("output_kind", "probabilities")
    if output not in ("probabilities", "logits"):
        raise ConfigError([f"model {where}: output_kind must be 'probabilities' or 'logits', got {output!r}"])
    return ModelSpec(
        name=str(meta.get("name") or name or path.stem),
        version=str(meta.get("version") or _fingerprint(path)),
        format=fmt,
        path=path,
        classes=_classes(meta, meta_path.parent, models_dir, where),
        preprocess=_preprocess(meta, where),
        output=output,
        base=meta.get("base"),
        fast_path=path.parent / meta["tflite_file"] if fmt == "keras" and meta.get("tflite_file") else None,
    )


def _keras_application(model: str, models_dir: Path) -> ModelSpec:
    name = model[len(KERAS_APPLICATIONS) :]
    if not _NAME.match(name):
        raise ConfigError([f"model {model!r}: not a keras.applications name"])
    sizes = {"InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299, "NASNetLarge": 331}
    sizes.update({f"EfficientNetB{i}": s for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))})
    return ModelSpec(
        name=f"keras-{name}",
        version=f"imagenet-keras{metadata.version('keras')}",
        format="keras.applications",
        path=None,
        classes=load_classes(Path(models_dir)),
        preprocess=Preprocess(size=sizes.get(name, IMAGE_SIZE), scale="keras.applications"),
    )


def resolve_model(model: str, models_dir: Path) -> ModelSpec:
    """Describe the model named by the ``model`` setting, refusing what cannot be loaded."""
    model = model.strip()
    models_dir = Path(models_dir)
    if model.startswith(KERAS_APPLICATIONS):
        return _keras_application(model, models_dir)
    if _NAME.match(model) and (models_dir / f"{model}.json").is_file():
        meta = json.loads((models_dir / f"{model}.json").read_text(encoding="utf-8"))
        artefact = models_dir / meta.get("model_file", f"{model}.keras")
        if not artefact.exists():
            raise ConfigError(
                [
                    f"model {model!r}: {artefact} is missing; run `make setup` (or the converter named in "
                    f"{models_dir / (model + '.json')}) to build it"
                ]
            )
        return _from_file(artefact, models_dir, name=model)
    path = Path(model).expanduser()
    if not path.is_absolute() and not path.exists():
        path = models_dir / path
    if path.exists():
        return _from_file(path, models_dir)
    known = sorted(
        p.stem
        for p in models_dir.glob("*.json")
        if p.name not in (CLASS_INDEX_FILE,) and "hierarchy" not in p.name
    )
    raise ConfigError(
        [
            f"model {model!r}: no such model; use one of {', '.join(known) or '(none built)'}, a path to a "
            f".keras/.tflite file or SavedModel folder, or keras.applications.<Name>"
        ]
    )


def model_key(name: str, models_dir: Path) -> str:
    """The key predictions are stored under, without loading TensorFlow."""
    return resolve_model(name, Path(models_dir)).key
