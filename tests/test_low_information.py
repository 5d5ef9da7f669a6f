"""The low-information rule on real photos of an object on a plain black or white background (kept,
though their grey-level entropy is under the threshold) and on flat pictures (rejected)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from skimage import data
from sklearn.datasets import load_sample_image

from harvest.dataset.curate import low_information
from harvest.images.imagecheck import inspect_image
from harvest.settings.config import HarvestConfig

CFG = HarvestConfig(
    run_id="r",
    seeds=(),
    labels=(),
    destination="/tmp/unused",
    staging="/tmp/unused",
    database_url="sqlite://",
)
#: wide enough that the background is most of the frame: the object alone keeps the image
MARGIN = 250


def _encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _on_canvas(photo: np.ndarray, box: tuple[int, int, int, int], background: tuple[int, int, int]) -> bytes:
    """An object cut out of a real photo, placed on a plain canvas with a wide margin: a product shot."""
    cut = Image.fromarray(photo).crop(box)
    canvas = Image.new("RGB", (cut.width + 2 * MARGIN, cut.height + 2 * MARGIN), background)
    canvas.paste(cut, (MARGIN, MARGIN))
    return _encode(canvas)


def _logo(fill, ink, accent=None, text="ACME Corp") -> bytes:
    logo = Image.new("RGB", (600, 200), fill)
    draw = ImageDraw.Draw(logo)
    if accent is not None:
        draw.ellipse((20, 20, 180, 180), fill=accent)
    draw.text((200, 60), text, fill=ink, font=ImageFont.load_default(size=60))
    return _encode(logo, "PNG")


BLACK, WHITE = (0, 0, 0), (255, 255, 255)
PHOTOS = {
    "coffee cup on black": lambda: _on_canvas(data.coffee(), (170, 20, 460, 300), BLACK),
    "coffee cup on white": lambda: _on_canvas(data.coffee(), (170, 20, 460, 300), WHITE),
    "cat on black": lambda: _on_canvas(data.chelsea(), (60, 30, 300, 280), BLACK),
    "astronaut on white": lambda: _on_canvas(data.astronaut(), (150, 20, 300, 200), WHITE),
    "flower on black": lambda: _on_canvas(load_sample_image("flower.jpg"), (200, 100, 450, 350), BLACK),
}


def _subtle_gradient() -> bytes:
    """A button background: three grey levels from top to bottom."""
    rows = np.linspace(240, 242.9, 200).astype(np.uint8)[:, None].repeat(600, axis=1)
    return _encode(Image.fromarray(rows), "PNG")


FLAT = {
    "two-colour logo": lambda: _logo(WHITE, (20, 40, 160)),
    "three-colour logo": lambda: _logo((0, 51, 102), (255, 204, 0), (200, 30, 30), "Joe's"),
    "white text on black": lambda: _logo(BLACK, WHITE, text="NIGHT"),
    "two-colour logo as JPEG": lambda: _encode(Image.open(io.BytesIO(_logo(WHITE, (20, 40, 160))))),
    "solid fill": lambda: _encode(Image.new("RGB", (400, 300), (200, 30, 30))),
    "blank white": lambda: _encode(Image.new("RGB", (400, 300), WHITE), "PNG"),
    "subtle gradient": _subtle_gradient,
}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photo_of_an_object_on_a_plain_background_is_kept(name):
    inspected = inspect_image(PHOTOS[name](), 64, 64)
    # the case the grey-level entropy alone gets wrong: most of the frame is one level
    assert inspected.entropy < CFG.min_entropy
    assert inspected.detail >= CFG.min_detail
    assert low_information(inspected, CFG.min_entropy, CFG.min_detail) is None


@pytest.mark.parametrize("name", sorted(FLAT))
def test_flat_pictures_are_still_rejected(name):
    inspected = inspect_image(FLAT[name](), 64, 64)
    reason = low_information(inspected, CFG.min_entropy, CFG.min_detail)
    assert reason is not None and reason.startswith("low information (grey-level entropy")
    assert inspected.detail < CFG.min_detail


def test_rows_described_before_the_detail_was_measured_keep_the_entropy_rule():
    inspected = inspect_image(PHOTOS["cat on black"](), 64, 64)
    inspected.detail = None
    assert low_information(inspected, CFG.min_entropy, CFG.min_detail) == (
        f"low information (grey-level entropy {inspected.entropy:.2f} bits < 2)"
    )


def test_a_photo_filling_the_frame_scores_high_on_both():
    inspected = inspect_image(_encode(Image.fromarray(data.astronaut())), 64, 64)
    assert inspected.entropy > 6 and inspected.detail > 3
