"""The small grey copy the describing pass measures, and what it measures: the perceptual hash and the
grey-level entropy, and the detail beside the background (detail_bits). The copy is made by box reduction in bands of rows, so no step copies a whole
decoded image; the gallery's thumbnails are reduced the same way.

NumPy is imported by the measuring functions, not with the module: a download process that leaves
inspection to its inspecting processes reads HASH_SIDE from here and never needs NumPy itself."""

from __future__ import annotations

import functools
from collections.abc import Callable

from PIL import Image as PILImage

#: The side, in pixels, the describing pass needs: the perceptual hash looks at 32x32 and the
#: grey-level histogram is stable from a few thousand pixels on.
HASH_SIDE = 64
#: The perceptual hash: a 32x32 grey copy, its 2-D DCT-II, the 8x8 lowest frequencies against their
#: median (imagehash.phash's definition, so hashes stored by earlier versions stay comparable).
PHASH_SIDE, PHASH_BITS_SIDE = 32, 8
_MIDDLE = PHASH_BITS_SIDE * PHASH_BITS_SIDE // 2


@functools.cache
def _dct_rows():
    import numpy as np

    return 2.0 * np.cos(
        np.pi
        * np.arange(PHASH_BITS_SIDE)[:, None]
        * (2 * np.arange(PHASH_SIDE)[None, :] + 1)
        / (2 * PHASH_SIDE)
    )


def phash_hex(grey: PILImage.Image) -> str:
    """The 64-bit perceptual hash of a grey image as 16 hex digits, first coefficient most significant.

    Only the 8 lowest of the 32 DCT frequencies are ever looked at, so the transform is two small
    matrix products (8x32 by 32x32 by 32x8) rather than two full FFT-based DCTs."""
    import numpy as np

    rows = _dct_rows()
    pixels = np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), PILImage.Resampling.LANCZOS), dtype=np.float64)
    low = rows @ pixels @ rows.T
    ranked = np.sort(low, axis=None)  # np.median's own value, without its overhead (~10 us)
    median = (ranked[_MIDDLE - 1] + ranked[_MIDDLE]) / 2
    return np.packbits(low > median).tobytes().hex()


def entropy_bits(grey: PILImage.Image) -> float:
    """Shannon entropy of the grey-level histogram: ~0 for flat fills, 7+ for photos."""
    import numpy as np

    counts = np.asarray(grey.histogram(), dtype=np.float64)
    shares = counts[counts > 0] / (counts.sum() or 1.0)
    return float(-(shares * np.log2(shares)).sum())


#: Grey-level steps between neighbours of the small copy: below MOVING a pixel is flat; from MOVING
#: up to STEP it is texture (a photo's surfaces); from STEP on, the hard edge of a flat shape.
MOVING, STEP = 6, 48
#: Levels this close to the most common one are the background (a fill, with JPEG noise).
BACKGROUND_LEVELS = 8


def detail_bits(grey: PILImage.Image) -> float:
    """How much a picture shows besides its background, in bits: the grey-level entropy of the
    pixels away from the most common level (the object, whatever share of the frame it fills),
    weighted by the share of the changing pixels that change gradually. A photo of an object on a
    black or white background scores 4 and more; a flat logo (its changes are the steps between a
    few fills, JPEG ringing included), a solid fill and a smooth gradient (nothing changes from one
    pixel to the next) score below 2.5. Computed on the small copy the hash uses: a few thousand
    pixels."""
    import numpy as np

    pixels = np.asarray(grey, dtype=np.int16)
    if pixels.ndim != 2 or min(pixels.shape) < 2:
        return 0.0
    step = np.maximum(np.abs(np.diff(pixels, axis=1))[:-1, :], np.abs(np.diff(pixels, axis=0))[:, :-1])
    moving = int((step >= MOVING).sum())
    if moving == 0:
        return 0.0
    texture = int(((step >= MOVING) & (step < STEP)).sum()) / moving
    counts = np.bincount(pixels.ravel(), minlength=256)
    mode = int(counts.argmax())
    levels = np.arange(256)
    rest = counts[np.abs(levels - mode) > BACKGROUND_LEVELS].astype(np.float64)
    if rest.sum() == 0:
        return 0.0
    shares = rest[rest > 0] / rest.sum()
    return float(-(shares * np.log2(shares)).sum() * texture)


def shrink(image: PILImage.Image) -> PILImage.Image:
    """Roughly HASH_SIDE to twice that a side: box reduction is several times cheaper than a
    resampling filter, and the hash only looks at 32x32 anyway. Callers never change the result in
    place, so an image that is already small enough (a JPEG decoded at 1/8 scale) is used as is.
    Neither path copies the whole image: see reduce_in_bands and _thumbnail."""
    factor = max(1, min(image.size) // HASH_SIDE)
    if factor > 1 and image.mode not in ("P", "PA", "1"):
        try:
            return reduce_in_bands(image, factor)
        except ValueError:  # a mode reduce() does not handle
            pass
    if image.width <= 2 * HASH_SIDE and image.height <= 2 * HASH_SIDE:
        return image  # thumbnail() would leave it as it is
    return _thumbnail(image, 2 * HASH_SIDE)


#: Rows of the image reduce_in_bands() copies at a time: about this many bytes at 4 bytes a pixel
BAND_BYTES = 4 * 1024 * 1024


def reduce_in_bands(
    image: PILImage.Image,
    factor: int,
    convert: Callable[[PILImage.Image], PILImage.Image] | None = None,
) -> PILImage.Image:
    """``convert(image).reduce(factor)`` (or ``image.reduce(factor)``), pixel for pixel, in bands
    of rows, so that no step copies the whole image: Pillow reduces RGBA and LA through a
    premultiplied copy of all of it, and a conversion (to RGB for a thumbnail) copies all of it too.
    Blocks of ``factor`` rows never straddle two bands, so the bands reduce to the same pixels."""
    if convert is None and image.mode not in ("RGBA", "LA"):
        return image.reduce(factor)
    rows = factor * max(1, BAND_BYTES // (4 * image.width * factor))
    if convert is None and rows >= image.height:
        return image.reduce(factor)
    small = None
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(top + rows, image.height)))
        if convert is not None:
            band = convert(band)
        if factor > 1:
            band = band.reduce(factor)
        if small is None:
            small = PILImage.new(band.mode, (-(-image.width // factor), -(-image.height // factor)))
        small.paste(band, (0, top // factor))
    return small


def _thumbnail(image: PILImage.Image, side: int) -> PILImage.Image:
    """``image.copy().thumbnail((side, side), BILINEAR)`` without the copy: the thumbnail is made
    on a second Image object that shares the decoded pixels (thumbnail() only replaces them with
    the resized ones, it never writes into them)."""
    small = image._new(image.im)  # noqa: SLF001 - a new Image around the same pixels, not a copy
    small.thumbnail((side, side), PILImage.Resampling.BILINEAR)
    return small
