"""The network at run time: a model spec loaded into TensorFlow (Keras, SavedModel or TFLite),
fed uint8 RGB batches, giving class probabilities. TensorFlow is imported only when a network
is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from harvest.images.pixels import prepare_rgb
from harvest.model import scores
from harvest.model.labels import ImageNetClass
from harvest.model.registry import ModelSpec, Preprocess, resolve_model

log = logging.getLogger(__name__)


#: top entries kept in ``predictions.top`` for reading by eye; the whole vector is in ``scores``
STORED_TOP = 10


def worker_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(cores: int | None = None) -> None:
    """Fit TensorFlow's pools to the cores this worker may use (TF's default assumes the whole host).

    Must run before TensorFlow executes its first op; later calls are ignored by TensorFlow.
    """
    import tensorflow as tf

    cores = cores or worker_cores()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
    except RuntimeError:
        log.debug("TensorFlow already initialised; keeping its thread settings")


@dataclass
class Classifier:
    """A loaded network: uint8 RGB batches in, class probabilities out, in ``spec.classes`` order."""

    spec: ModelSpec
    model: object
    run: Callable[[np.ndarray], np.ndarray]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def classes(self) -> tuple[ImageNetClass, ...]:
        return self.spec.classes

    def predict(self, batch: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(self.run(np.asarray(batch, dtype=np.float32)), dtype=np.float32)
        if self.spec.output == "logits":
            shifted = np.exp(probabilities - probabilities.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return probabilities

    def top(self, probabilities: np.ndarray, k: int = STORED_TOP) -> list[dict]:
        return scores.top_entries(
            probabilities, [c.wnid for c in self.classes], [c.name for c in self.classes], k
        )


def _scaler(spec: ModelSpec) -> Callable:
    scale = spec.preprocess.scale
    if scale == "unit":
        return lambda x: x / 255.0
    if scale == "symmetric":
        return lambda x: x / 127.5 - 1.0
    if scale == "keras.applications":
        import importlib

        import keras

        module = importlib.import_module(getattr(keras.applications, spec.name[len("keras-") :]).__module__)
        return module.preprocess_input
    return lambda x: x


def _keras_runner(model: object, scale: Callable) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def call(batch):
        return model(scale(batch), training=False)

    return lambda batch: call(tf.convert_to_tensor(batch)).numpy()


def _savedmodel_runner(path: Path, scale: Callable) -> tuple[object, Callable]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    [input_name] = list(signature.structured_input_signature[1])
    [output_name, *_] = sorted(signature.structured_outputs)

    def run(batch: np.ndarray) -> np.ndarray:
        return signature(**{input_name: tf.constant(scale(batch))})[output_name].numpy()

    return loaded, run


def _tflite_runner(path: Path, scale: Callable) -> tuple[object, Callable]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=worker_cores())
    [input_detail] = interpreter.get_input_details()
    output_index = interpreter.get_output_details()[0]["index"]
    shape = {"batch": None}

    def run(batch: np.ndarray) -> np.ndarray:
        if shape["batch"] != len(batch):
            interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
            interpreter.allocate_tensors()
            shape["batch"] = len(batch)
        interpreter.set_tensor(input_detail["index"], scale(batch).astype(input_detail["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return interpreter, run


def load_classifier(model: str | ModelSpec, models_dir: Path) -> Classifier:
    """Load the network the ``model`` setting names (see harvest.model.registry for the forms)."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, Path(models_dir))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_threads()
    scale = _scaler(spec)
    if spec.format == "keras":
        import keras

        network = keras.models.load_model(spec.path, compile=False)
        return Classifier(spec, network, _keras_runner(network, scale))
    if spec.format == "savedmodel":
        return Classifier(spec, *_savedmodel_runner(spec.path, scale))
    if spec.format == "tflite":
        return Classifier(spec, *_tflite_runner(spec.path, scale))
    import keras

    network = getattr(keras.applications, spec.name[len("keras-") :])(weights="imagenet")
    return Classifier(spec, network, _keras_runner(network, scale))


def decode_for_model(data: bytes, preprocess: Preprocess | None = None) -> np.ndarray:
    """Decode and resize for the network; a JPEG much larger than needed is decoded at 1/2..1/8 scale.

    JPEG's DCT scaling costs a fraction of a full decode and still leaves the short side at least
    as long as the crop needs, so the final antialiased resize sees the same detail.
    """
    preprocess = preprocess or Preprocess()
    with PILImage.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            side = math.ceil(preprocess.size / preprocess.crop_fraction)
            image.draft("RGB", (side, side))
        return prepare_rgb(image, preprocess.size, preprocess.crop_fraction)
