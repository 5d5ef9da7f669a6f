"""EXIF: public and private fields apart; the published copy keeps only the allowed fields, pixels untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from stage_setup import encode

from harvest.images.exif import read_exif
from harvest.images.imagecheck import inspect_image
from harvest.images.sanitize import MetadataError, clean_file


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


def test_images_with_nothing_to_remove_are_their_own_clean_copy():
    data = encode(Image.new("RGB", (80, 80), "red"), "JPEG")
    result = inspect_image(data, 64, 64)
    assert result.sensitive == {} and result.clean_data == data
    assert result.clean_sha256 == result.sha256 and result.clean_key == result.staging_key


def test_private_fields_in_a_tiff_are_removed_by_rewriting_it():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    exif = _exif()
    exif[0x013B] = "Jane Doe"
    exif[0xA431] = "SN-TIFF-9"  # a serial number in IFD0, where a TIFF writer puts every tag
    data = encode(image, "TIFF", exif=exif)
    result = inspect_image(data, 64, 64)
    assert result.sensitive["artist"] == "Jane Doe" and result.sensitive["xp_author"] == "Owner Name"
    assert result.sensitive["body_serial_number"] == "SN-TIFF-9" and result.clean_error is None
    for value in (b"Jane Doe", b"SN-TIFF-9", "Owner Name".encode("utf-16-le")):
        assert value in data and value not in result.clean_data
    with Image.open(io.BytesIO(result.clean_data)) as clean, Image.open(io.BytesIO(data)) as source:
        public, private, orientation = read_exif(clean)  # before loading: Pillow applies it then
        assert np.array_equal(np.asarray(clean), np.asarray(source))
    assert private == {} and orientation == 3 and public["make"] == "Nikon"


def test_a_container_cut_short_is_refused():
    gif = encode(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(MetadataError, match="run past the end|cut short"):
        clean_file(gif[:40], "GIF")
