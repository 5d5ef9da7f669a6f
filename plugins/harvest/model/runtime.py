"""The network at run time: a model spec loaded into TensorFlow (Keras, SavedModel) or LiteRT
(TFLite), fed uint8 RGB batches, giving class probabilities.

A Keras model with a current TensorFlow Lite export runs that export on the CPU through LiteRT's
XNNPACK kernels (about twice as fast, same top-5, scores within harvest.model.plan.SCORE_TOLERANCE)
without importing TensorFlow at all; a GPU that TensorFlow sees runs the Keras model instead. The
choice is harvest.model.plan.plan_runtime's, forced by ``HARVEST_RUNTIME`` (auto, litert, keras);
when the fast path cannot load, the Keras reference runs and the log says why. Nothing heavy is
imported until a network is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import math
import os
import queue
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from harvest.images.pixels import prepare_rgb
from harvest.model import scores
from harvest.model.labels import ImageNetClass
from harvest.model.plan import RUNTIMES, Gpu, RuntimePlan, plan_runtime
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
    #: ``keras``, ``savedmodel`` or ``litert``, and where it runs
    runtime: str = "keras"
    device: str = "cpu"
    #: images per network call (larger batches are split); None: as given
    chunk: int | None = None
    #: images per stage batch this runtime wants (a GPU's fill); None: the configured batch size
    batch_size: int | None = None
    #: batches that may be scored at once from different threads, each decoding its own images
    #: between network calls, so decoding and inference overlap on every core
    lanes: int = 2

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
        batch = np.asarray(batch, dtype=np.float32)
        if self.chunk and len(batch) > self.chunk:
            parts = [self.run(batch[i : i + self.chunk]) for i in range(0, len(batch), self.chunk)]
            probabilities = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
        else:
            probabilities = np.asarray(self.run(batch), dtype=np.float32)
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


def _tflite_interpreter(path: Path, threads: int) -> object:
    """LiteRT's interpreter (XNNPACK applied by default to float models); TensorFlow's copy if absent."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=threads)


def _tflite_runner(path: Path, scale: Callable, lanes: int = 1) -> tuple[object, Callable]:
    """Run a .tflite file; with ``lanes`` > 1, up to that many one-thread interpreters run at once.

    On a small CPU, one XNNPACK thread per core, each scoring its own batch while decoding happens
    in between, keeps every core busy without the threads of one interpreter waiting for each other
    (a multi-threaded interpreter stalls whenever a decode takes one of its cores). An interpreter
    is not thread-safe: each call borrows a free one from the pool (made on first need).
    """
    threads = 1 if lanes > 1 else worker_cores()
    free: queue.SimpleQueue = queue.SimpleQueue()

    def make() -> dict:
        it = _tflite_interpreter(path, threads)
        [detail] = it.get_input_details()
        return {"it": it, "detail": detail, "output": it.get_output_details()[0]["index"], "batch": None}

    def run(batch: np.ndarray) -> np.ndarray:
        try:
            slot = free.get_nowait()
        except queue.Empty:
            slot = make()
        try:
            it, detail = slot["it"], slot["detail"]
            if slot["batch"] != len(batch):
                it.resize_tensor_input(detail["index"], list(batch.shape))
                it.allocate_tensors()
                slot["batch"] = len(batch)
            it.set_tensor(detail["index"], scale(batch).astype(detail["dtype"]))
            it.invoke()
            return it.get_tensor(slot["output"]).copy()
        finally:
            free.put(slot)

    # a first call allocates the tensors, so a file LiteRT cannot run fails here, not mid-stage
    first = make()
    free.put(first)
    run(np.zeros((1, *first["detail"]["shape"][1:]), dtype=np.float32))
    return first["it"], run


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fast_path_problem(spec: ModelSpec) -> str | None:
    """None when ``spec`` has a TFLite export made from its current .keras file and LiteRT is
    installed; otherwise what is wrong, for the log."""
    if spec.format != "keras" or spec.fast_path is None:
        return f"{spec.name} has no TensorFlow Lite export in its description"
    if not spec.fast_path.is_file():
        return f"{spec.fast_path} is missing (make model builds it)"
    record_path = spec.fast_path.with_name(spec.fast_path.name + ".json")
    try:
        built_from = json.loads(record_path.read_text(encoding="utf-8"))["built_from"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{record_path} does not say which .keras file the export was made from ({exc})"
    if built_from != _sha256(Path(spec.path)):
        return f"{spec.fast_path} was made from another {Path(spec.path).name} (make model rebuilds it)"
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as exc:
        return f"LiteRT is not installed ({exc})"
    return None


def _gpu_possible() -> bool:
    """A GPU driver's device node exists: only then is TensorFlow imported to look for GPUs."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"))


def _gpu_memory() -> list[int]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return [int(line.strip()) * 2**20 for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def visible_gpus() -> list[Gpu]:
    """The GPUs TensorFlow sees (with their memory when nvidia-smi tells), [] without importing it
    when no GPU driver is on the machine."""
    if not _gpu_possible():
        return []
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    memory = _gpu_memory()
    gpus = []
    for index, device in enumerate(devices):
        try:
            tf.config.experimental.set_memory_growth(device, True)  # share the card, take what is used
        except (RuntimeError, ValueError):
            pass
        gpus.append(Gpu(device.name, memory[index] if index < len(memory) else None))
    return gpus


def choose_runtime(spec: ModelSpec, requested: str | None = None) -> RuntimePlan:
    requested = (requested or os.environ.get("HARVEST_RUNTIME") or "auto").strip().lower()
    if requested not in RUNTIMES:
        raise ValueError(f"HARVEST_RUNTIME={requested!r} is not one of {', '.join(RUNTIMES)}")
    if spec.format != "keras":
        return RuntimePlan(spec.format, "cpu", None, f"the model is a {spec.format} file")
    problem = fast_path_problem(spec) if requested != "keras" else "runtime keras requested"
    gpus = visible_gpus() if requested != "litert" else []
    return plan_runtime(requested, gpus, problem, spec.preprocess.size)


def _load_keras(spec: ModelSpec, scale: Callable, plan: RuntimePlan) -> Classifier:
    import keras

    configure_threads()
    network = keras.models.load_model(spec.path, compile=False)
    return Classifier(
        spec, network, _keras_runner(network, scale), "keras", plan.device, None, plan.batch_size
    )


def load_classifier(model: str | ModelSpec, models_dir: Path, runtime: str | None = None) -> Classifier:
    """Load the network the ``model`` setting names (see harvest.model.registry for the forms).

    ``runtime`` (default: ``HARVEST_RUNTIME``, else ``auto``) picks how a Keras model runs; see
    harvest.model.plan. A fast path that fails to load falls back to the Keras reference, logged.
    """
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, Path(models_dir))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scale = _scaler(spec)
    if spec.format == "keras":
        plan = choose_runtime(spec, runtime)
        if plan.runtime == "litert":
            try:
                interpreter, run = _tflite_runner(Path(spec.fast_path), scale, worker_cores())
            except Exception as exc:  # noqa: BLE001 - any failure of the fast path leaves the reference
                log.warning(
                    "classifier %s: the TensorFlow Lite export %s cannot be loaded (%s: %s); "
                    "running the Keras model instead",
                    spec.key,
                    spec.fast_path,
                    type(exc).__name__,
                    exc,
                )
                return _load_keras(spec, scale, RuntimePlan("keras", "cpu", None, str(exc)))
            log.info("classifier %s: %s", spec.key, plan.reason)
            return Classifier(spec, interpreter, run, "litert", "cpu", plan.batch_size, lanes=worker_cores())
        log.info("classifier %s: %s", spec.key, plan.reason)
        return _load_keras(spec, scale, plan)
    if spec.format == "savedmodel":
        configure_threads()
        return Classifier(spec, *_savedmodel_runner(spec.path, scale), runtime="savedmodel")
    if spec.format == "tflite":
        lanes = worker_cores()
        return Classifier(spec, *_tflite_runner(spec.path, scale, lanes), runtime="litert", lanes=lanes)
    import keras

    configure_threads()
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
