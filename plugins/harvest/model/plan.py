"""Which runtime runs the network, on which device, with how many images per call: pure decisions.

The Keras model is the reference; its TensorFlow Lite export (made and checked by
``include/models/convert_efficientnet_lite.py``) gives the same top-5 classes and scores within
``SCORE_TOLERANCE`` and runs about twice as fast on CPUs through LiteRT's XNNPACK kernels, in a
process that never imports TensorFlow (a third of the memory). A GPU is only reached through
TensorFlow, so when TensorFlow sees one the Keras model runs there, with batches sized to fill it.

These functions take what was observed (GPUs, whether an export exists and is current) and return
a decision, so every branch is tested without the hardware; harvest.model.runtime observes and acts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: ``HARVEST_RUNTIME`` values: ``auto`` picks by the rules below, the others force a runtime
RUNTIMES = ("auto", "litert", "keras")
#: largest difference allowed between the Keras and the TFLite probability of any class; the
#: converter refuses an export outside it, and the tests hold the runtime to it
SCORE_TOLERANCE = 1e-4
#: images per LiteRT call on a CPU: small calls keep the activations in the caches (Lite0, one
#: XNNPACK thread: 5.5 CPU ms per image at 2, 6.2 at 8, 6.7 at 16) and hold less memory
CPU_FAST_BATCH = 2
#: device memory one image's activations take in a Keras forward pass of EfficientNet-Lite at
#: 224x224 (float32, TensorFlow's allocator, with headroom); larger inputs scale by area
GPU_BYTES_PER_IMAGE_224 = 24 * 2**20
#: share of the GPU's memory the batch may fill (the weights, cuDNN workspaces and fragmentation
#: take the rest)
GPU_MEMORY_SHARE = 0.5
GPU_BATCH_MIN, GPU_BATCH_MAX = 32, 1024
#: when the GPU's memory cannot be read
GPU_BATCH_DEFAULT = 256


@dataclass(frozen=True)
class Gpu:
    name: str
    #: total device memory, None when it could not be read
    memory_bytes: int | None = None


@dataclass(frozen=True)
class RuntimePlan:
    #: ``litert`` (the .tflite export on the CPU) or ``keras`` (the reference, on ``device``)
    runtime: str
    device: str
    #: images per network call; None: whatever the stage's batch is
    batch_size: int | None
    #: why this runtime, in words for the log (a fallback says what was wrong)
    reason: str


def gpu_batch_size(memory_bytes: int | None, image_size: int) -> int:
    """The largest power of two whose activations fit in GPU_MEMORY_SHARE of the device's memory.

    Powers of two because GPU kernels are tuned for them; clamped to GPU_BATCH_MIN..GPU_BATCH_MAX
    (below 32 a GPU idles between calls, above 1024 the decode threads cannot keep up anyway).
    """
    if not memory_bytes or memory_bytes <= 0:
        return GPU_BATCH_DEFAULT
    per_image = GPU_BYTES_PER_IMAGE_224 * (image_size / 224) ** 2
    fits = memory_bytes * GPU_MEMORY_SHARE / per_image
    if fits < 1:
        return GPU_BATCH_MIN
    return max(GPU_BATCH_MIN, min(GPU_BATCH_MAX, 2 ** int(math.floor(math.log2(fits)))))


def plan_runtime(
    requested: str, gpus: Sequence[Gpu], fast_path_problem: str | None, image_size: int
) -> RuntimePlan:
    """Choose the runtime.

    ``fast_path_problem`` is None when a current .tflite export and LiteRT are there, else what is
    wrong (missing, stale, LiteRT not installed). Rules: a GPU seen by TensorFlow runs the Keras
    model with a batch that fills it; otherwise the TFLite export runs on the CPU; without a usable
    export the Keras model runs on the CPU, and the reason says why.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime {requested!r} is not one of {', '.join(RUNTIMES)}")
    if gpus and requested != "litert":
        gpu = gpus[0]
        batch = gpu_batch_size(gpu.memory_bytes, image_size)
        memory = f"{gpu.memory_bytes / 2**30:.1f} GiB" if gpu.memory_bytes else "memory unknown"
        return RuntimePlan("keras", "gpu", batch, f"TensorFlow sees GPU {gpu.name} ({memory}): batch {batch}")
    if requested == "keras":
        return RuntimePlan("keras", "cpu", None, "runtime keras requested")
    if fast_path_problem is None:
        return RuntimePlan("litert", "cpu", CPU_FAST_BATCH, "TensorFlow Lite export with XNNPACK on the CPU")
    return RuntimePlan("keras", "cpu", None, f"Keras reference on the CPU: {fast_path_problem}")
