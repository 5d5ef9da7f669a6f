"""EXIF: public and private fields apart; stripping removes exactly the private ones, pixels untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from stage_setup import encode

from harvest.exif import read_exif, strip_sensitive
from harvest.imagecheck import inspect_image


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Nikon"
    exif[0x0112] = 3
    exif[0x9C9D] = "Owner Name".encode("utf-16-le")
    exif.get_ifd(0x8769).update({0xA430: "Owner Name", 0xA435: "LENS-77", 0x829A: 0.01})
    exif.get_ifd(0x8825).update({1: "S", 2: (33.0, 51.0, 0.0), 3: "W", 4: (70.0, 30.0, 0.0)})
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_private_fields_are_removed_and_the_rest_kept(fmt):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(image, fmt, exif=_exif(), **options)
    result = inspect_image(data, 64, 64)
    assert result.sensitive["gps"] == {"latitude": -33.85, "longitude": -70.5}
    assert (
        result.sensitive["owner_name"] == "Owner Name" and result.sensitive["lens_serial_number"] == "LENS-77"
    )
    assert result.exif["make"] == "Nikon" and result.orientation == 3
    clean = result.clean_data
    assert clean is not None and b"LENS-77" not in clean and b"Owner Name" not in clean
    with Image.open(io.BytesIO(clean)) as a, Image.open(io.BytesIO(data)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        public, private, orientation = read_exif(a)
    assert (
        private == {} and orientation == 3 and public["make"] == "Nikon" and public["exposure_time"] == 0.01
    )


def test_images_without_private_fields_get_no_copy():
    result = inspect_image(encode(Image.new("RGB", (80, 80), "red"), "JPEG"), 64, 64)
    assert result.sensitive == {} and result.clean_data is None and result.clean_key is None


def test_private_fields_in_a_tiff_block_publication():
    data = encode(Image.new("RGB", (80, 80), "red"), "TIFF", exif=_exif())
    result = inspect_image(data, 64, 64)
    assert result.clean_data is None
    assert result.clean_error == "private metadata in a TIFF file cannot be stripped"


def test_unsupported_container_is_refused():
    gif = encode(Image.new("RGB", (8, 8)), "GIF")
    with Image.open(io.BytesIO(gif)) as image, pytest.raises(ValueError, match="cannot strip"):
        strip_sensitive(b"", image, "GIF")
