"""Proof that the copy to publish holds what it should: a fixed point of the cleaning, no private
EXIF left, and, where its structure was rebuilt, the pixels of the download."""

from __future__ import annotations

import hashlib
import io

from PIL import Image as PILImage

from harvest.images.containers.cleaned import Cleaned
from harvest.images.exif import read_exif
from harvest.images.perceptual import BAND_BYTES, HASH_SIDE
from harvest.images.sanitize import clean_file


def prove_copy(cleaned: Cleaned, image: PILImage.Image, fmt: str) -> None:
    """The copy is a fixed point of the cleaning and Pillow finds no private EXIF in it. Where the
    cleaning changed more than metadata segments and trailing bytes (``cleaned.restructured``), it
    also decodes to the pixels of ``image`` (the source as inspect_image decoded it: a JPEG at the
    hashing scale); otherwise the scans or image data are the source's own bytes, which is proof
    enough without a second decode. ``image`` is closed here: the copy's decode must not hold a
    second set of pixels beside the source's, outside what the decode budget reserved."""
    clean = cleaned.data
    again = clean_file(clean, fmt)
    if again.data != clean or again.private:
        raise ValueError(f"cleaning it again removes {again.removed}")
    source = pixel_fingerprint(image) if cleaned.restructured else None
    mode = image.mode
    image.close()
    with PILImage.open(io.BytesIO(clean), formats=[fmt]) as check:
        # before loading: a TIFF's load applies and drops orientation. Pillow looks for a PNG's EXIF
        # after the image data by decoding all of it, outside the decode budget; the fixed point
        # above proves the copy has none there, so only an eXIf before the pixels is read
        late_png_exif = fmt == "PNG" and "exif" not in check.info
        left = {} if late_png_exif else read_exif(check)[1]
        if left:
            raise ValueError(f"fields left: {sorted(left)}")
        if check.mode != mode:
            raise ValueError(f"mode {check.mode} instead of {mode}")
        if source is None:
            return
        if fmt == "JPEG":
            check.draft(check.mode, (HASH_SIDE, HASH_SIDE))
        check.load()
        if pixel_fingerprint(check) != source:
            raise ValueError("the pixels (or palette) differ from the download's")


def pixel_fingerprint(image: PILImage.Image) -> tuple:
    """Size, palette and a digest of the pixels, read in bands of rows so that no step copies the
    whole image (``tobytes()`` would)."""
    digest = hashlib.sha256()
    rows = max(1, BAND_BYTES // (4 * max(1, image.width)))
    for top in range(0, image.height, rows):
        digest.update(image.crop((0, top, image.width, min(top + rows, image.height))).tobytes())
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    return image.size, palette, digest.digest()
