"""Pixels as the classifier and the gallery need them: RGB conversion, centre crop and resize (NumPy + Pillow only).

Why this module is separate and tiny: the same transform must be applied
wherever images are prepared for the classifier (harvest tasks, tests,
notebooks), and those callers should not have to import TensorFlow just to
turn a photo into an input array. Pixel normalisation is *not* done here: it
is baked into the Keras model, so this module only deals with geometry and
colour mode and always hands back plain uint8 RGB.

The geometry mirrors the standard ImageNet evaluation protocol the weights
were validated with: a centre crop of 87.5% of the short side, resized to
224x224. Bilinear resampling is used: as accurate as bicubic and Lanczos on the
reference photos, and the cheapest (bench/README.md).
Pillow's resize is antialiased when shrinking, so large photos do not alias.

NumPy is imported by the functions that use it: a download process needs only to_rgb on 8-bit
images, and starts faster without NumPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image, ImageOps

if TYPE_CHECKING:
    import numpy as np

IMAGE_SIZE = 224
DEFAULT_CROP_FRACTION = 0.875
RESAMPLE = Image.Resampling.BILINEAR

_WHITE = (255, 255, 255)


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """Map 16/32-bit integer or float greyscale to 8-bit 'L'.

    Pillow's own conversion clips these modes to 0..255 instead of scaling,
    which turns most 16-bit scans white.
    """
    import numpy as np

    arr = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    else:
        arr = arr.astype(np.float64)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if image.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = arr
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = arr / 257.0
        else:
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit RGB, compositing any transparency onto white.

    White is used because transparent regions of web images (logos, product
    shots, icons) are meant to be seen on a light page; compositing onto black
    would invent a dark background the classifier never saw.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "La":
        # Premultiplied: Pillow cannot convert it, but compositing onto white is
        # simply L + (255 - alpha).
        import numpy as np

        arr = np.asarray(image).astype(np.int16)
        grey = np.clip(arr[..., 0] + (255 - arr[..., 1]), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode.startswith("I") or mode == "F":
        image = _high_bit_depth_to_l(image)
    elif mode == "1":
        image = image.convert("L")

    mode = image.mode
    if mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    # L, CMYK, YCbCr, LAB, HSV, ...: Pillow knows how to reach RGB.
    return image.convert("RGB")


def prepare_rgb(
    image: Image.Image,
    size: int = IMAGE_SIZE,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> np.ndarray:
    """Turn an arbitrary PIL image into the classifier's input: uint8 array (size, size, 3).

    Steps: honour the EXIF orientation (phone photos are often stored
    sideways), convert to RGB, take a centred square of ``crop_fraction``
    times the short side (objects in ImageNet photos are usually centred; the
    margin trimmed matches how the model was evaluated), and resize it to
    ``size`` x ``size``. Cropping and resizing happen in one resampling pass.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF must not reject an otherwise fine image
        pass
    image = to_rgb(image)

    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError("image has no pixels")
    side = max(1.0, crop_fraction * min(width, height))
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    box = (left, top, left + side, top + side)
    resized = image.resize((size, size), resample=RESAMPLE, box=box)
    import numpy as np

    arr = np.asarray(resized, dtype=np.uint8)
    return np.ascontiguousarray(arr)
