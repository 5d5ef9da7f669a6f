"""Resized copies, square thumbnails and the training copy of published images, made once each.

Each variant set is an ImageFolder of its own (``variants/w256/<label>/...``,
``thumbnails/s128/<label>/...``). Variants are upright (EXIF orientation applied) and carry no
metadata at all; formats that can be transparent (PNG, WebP, GIF) become PNG, the rest JPEG.

The training copy (``publish_format: jpeg``) is ``training/<label>/<sha256>.jpg``, named after the
published original's hash: every image at full size as an RGB JPEG (transparency flattened onto
white, an animation's first frame), which every loader decodes alike; the originals stay as they are.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from PIL import Image, ImageOps

from harvest.settings.config import HarvestConfig
from harvest.storage import Store, Stores

LOSSLESS = ("PNG", "WEBP", "GIF")
TRAINING_PREFIX = "training/"
#: JPEG quality of the training copy: high enough that re-encoding a JPEG loses nothing visible
TRAINING_JPEG_QUALITY = 90


def training_key(key: str) -> str:
    """The training copy of ``images/<label>/<sha256>.<ext>``: ``training/<label>/<sha256>.jpg``."""
    return TRAINING_PREFIX + key.removeprefix("images/").rsplit(".", 1)[0] + ".jpg"


def training_copy(data: bytes) -> bytes:
    """The image upright, in RGB, as a JPEG at :data:`TRAINING_JPEG_QUALITY`, no metadata."""
    with Image.open(io.BytesIO(data)) as source:
        image = ImageOps.exif_transpose(source)
        if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=TRAINING_JPEG_QUALITY, optimize=True)
        return buffer.getvalue()


def variant_keys(
    item, variant_widths: Iterable[int], thumbnail_size: int
) -> list[tuple[str, int | None, int | None]]:
    """(key, width, square side) for every variant of ``item`` the settings ask for."""
    ext = "png" if item.format in LOSSLESS else "jpg"
    name = f"{item.label}/{item.published_sha256}.{ext}"
    keys: list[tuple[str, int | None, int | None]] = [
        (f"variants/w{width}/{name}", width, None) for width in variant_widths if width < item.width
    ]
    if thumbnail_size:
        keys.append((f"thumbnails/s{thumbnail_size}/{name}", None, thumbnail_size))
    return keys


def render(data: bytes, width: int | None, square: int | None, as_png: bool) -> bytes:
    with Image.open(io.BytesIO(data)) as source:
        image = ImageOps.exif_transpose(source)
        alpha = as_png and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info)
        image = image.convert("RGBA" if alpha else "RGB")
        if square:
            image = ImageOps.fit(image, (square, square), Image.Resampling.LANCZOS)
        else:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if as_png:
            image.save(buffer, "PNG", optimize=True)
        else:
            image.save(buffer, "JPEG", quality=88, optimize=True)
        return buffer.getvalue()


def publish_variants(cfg: HarvestConfig, destination: Store, stores: Stores, kept: list) -> int:
    """Make the variants (and training copies) that do not exist yet; returns how many were written."""
    written = 0
    for item in kept:
        wanted = [
            v
            for v in variant_keys(item, cfg.variant_widths, cfg.thumbnail_size)
            if not destination.exists(v[0])
        ]
        training = cfg.publish_format == "jpeg" and not destination.exists(training_key(item.key))
        if not wanted and not training:
            continue
        data = stores(item.staging).get(item.staging_key)
        if training:
            destination.put(training_key(item.key), training_copy(data), "image/jpeg")
            written += 1
        for key, width, square in wanted:
            out = render(data, width, square, key.endswith(".png"))
            destination.put(key, out, "image/png" if key.endswith(".png") else "image/jpeg")
            written += 1
    return written
