"""inspect_image: only fully decodable raster images of a sane size get through."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from harvest.stages.download import MAX_PIXELS, ImageRejected, Inspected, inspect_image


def encode(fmt: str, size: tuple[int, int] = (100, 80), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=(200, 120, 40) if mode == "RGB" else 1).save(buffer, fmt)
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG written by hand: huge in pixels, tiny in bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rejection(data: bytes, min_width: int = 64, min_height: int = 64) -> str:
    with pytest.raises(ImageRejected) as info:
        inspect_image(data, min_width, min_height)
    return str(info.value)


@pytest.mark.parametrize(
    ("fmt", "extension", "mime_type"),
    [
        ("JPEG", "jpg", "image/jpeg"),
        ("PNG", "png", "image/png"),
        ("GIF", "gif", "image/gif"),
        ("WEBP", "webp", "image/webp"),
        ("BMP", "bmp", "image/bmp"),
        ("TIFF", "tif", "image/tiff"),
    ],
)
def test_valid_images_pass(fmt, extension, mime_type):
    data = encode(fmt, (100, 80))
    result = inspect_image(data, 64, 64)
    assert isinstance(result, Inspected)
    assert (result.format, result.width, result.height) == (fmt, 100, 80)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.data == data
    assert result.extension == extension
    assert result.mime_type == mime_type
    assert result.staging_key == f"images/{result.sha256[:2]}/{result.sha256}.{extension}"


def test_image_exactly_at_the_minimum_passes():
    assert inspect_image(encode("PNG", (64, 64)), 64, 64).width == 64


@pytest.mark.parametrize("size", [(63, 64), (64, 63), (16, 16), (1, 1)])
def test_too_small_is_rejected_naming_both_sizes(size):
    reason = rejection(encode("PNG", size))
    assert reason == f"too small ({size[0]}x{size[1]} < 64x64)"


def test_minimum_comes_from_the_caller():
    assert rejection(encode("PNG", (300, 100)), min_width=200, min_height=150) == (
        "too small (300x100 < 200x150)"
    )


def test_empty_body_is_rejected():
    assert rejection(b"") == "empty body"


def test_truncated_jpeg_is_rejected():
    buffer = io.BytesIO()
    Image.effect_noise((400, 300), 64).convert("RGB").save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    assert rejection(data[: len(data) // 2]).startswith("not a decodable image")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            b"<!doctype html><html><head><title>Not found</title></head><body>404</body></html>",
            "not an image: an HTML page served in its place",
        ),
        (b"  <html><body>gone</body></html>", "not an image: an HTML page served in its place"),
        (b'{"error": "forbidden"}', "not an image: JSON served in its place"),
        (b"\x00\x01\x02garbage" * 50, "not a decodable image: unknown format (starts with 0001026761726261)"),
    ],
)
def test_non_image_bytes_are_rejected_by_their_magic_bytes(data, reason):
    assert rejection(data) == reason


def test_svg_is_rejected():
    svg = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500">'
        b'<rect width="500" height="500" fill="red"/></svg>'
    )
    assert rejection(svg) == "SVG is not kept: vector markup that can carry scripts"


def test_jpeg_bytes_behind_a_png_name_are_judged_by_content():
    # the format comes from the bytes; nothing about a URL or header is consulted
    assert inspect_image(encode("JPEG"), 64, 64).format == "JPEG"


def test_decodable_but_unsupported_format_is_rejected():
    assert rejection(encode("ICO", (64, 64))) == "unsupported image format ICO"


def test_hand_written_png_is_a_real_image():
    result = inspect_image(blank_png(300, 200), 64, 64)
    assert (result.format, result.width, result.height) == ("PNG", 300, 200)


def test_decompression_bomb_is_rejected():
    bomb = blank_png(20_000, 20_000)  # 400 megapixels in ~50 KB
    assert len(bomb) < 100_000
    assert rejection(bomb).startswith("decompression bomb")


def test_image_past_pillows_warning_limit_is_rejected(monkeypatch):
    # between MAX_IMAGE_PIXELS and twice that Pillow only warns; the warning must count as a rejection
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)
    assert rejection(encode("PNG", (100, 80))).startswith("decompression bomb")


def test_image_over_our_own_pixel_cap_is_rejected():
    side = int(MAX_PIXELS**0.5) + 100  # above MAX_PIXELS but below Pillow's own bomb limit
    assert side * side < Image.MAX_IMAGE_PIXELS
    assert rejection(blank_png(side, side)) == f"too many pixels ({side}x{side})"


def photo_like(seed: int, size: tuple[int, int], mode: str) -> Image.Image:
    """Smooth colour fields plus noise, in ``mode``: something a perceptual hash has to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x * y) % 256], axis=-1)
    noisy = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).convert(mode)


@pytest.mark.parametrize(
    ("fmt", "size", "mode"),
    [
        ("JPEG", (800, 600), "RGB"),
        ("JPEG", (544, 408), "RGB"),
        ("JPEG", (97, 1200), "L"),
        ("PNG", (640, 480), "RGBA"),
        ("PNG", (300, 200), "P"),
        ("GIF", (250, 250), "P"),
        ("WEBP", (1024, 300), "RGB"),
        ("BMP", (70, 70), "RGB"),
        ("TIFF", (400, 300), "CMYK"),
    ],
)
def test_perceptual_hash_is_imagehash_phash(fmt, size, mode):
    """The hash is computed without imagehash/SciPy but must stay bit for bit what imagehash.phash
    gives on the same reduced picture: near-duplicate checks compare against hashes stored earlier."""
    import imagehash

    from harvest.images.perceptual import phash_hex, shrink
    from harvest.images.pixels import to_rgb

    for seed in range(4):
        data = encode_image(photo_like(seed, size, mode), fmt)
        result = inspect_image(data, 64, 64)
        with Image.open(io.BytesIO(data)) as image:
            if fmt == "JPEG":
                image.draft(image.mode, (64, 64))
            image.load()
            grey = to_rgb(shrink(image)).convert("L")
        assert result.phash == phash_hex(grey) == str(imagehash.phash(grey))


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_inspecting_processes_answer_like_inspect_image_and_survive_a_crash():
    from harvest.images.inspectors import InspectorPool

    data = encode_image(photo_like(1, (320, 240), "RGB"), "JPEG")
    inspectors = InspectorPool(1, 64, 64)
    try:
        expected = inspect_image(data, 64, 64)
        assert inspectors.inspect(data) == expected
        with pytest.raises(ImageRejected, match="too small"):
            inspectors.inspect(encode("PNG", (10, 10)))
        (process,) = inspectors._processes
        process.kill()  # killed between two images: the next image gets a fresh process
        process.wait()
        assert inspectors.inspect(data) == expected
        assert inspectors._processes and inspectors._processes[0] is not process
    finally:
        inspectors.close()


def test_bytes_that_kill_the_inspecting_process_twice_are_rejected():
    from harvest.images.inspectors import InspectorPool

    inspectors = InspectorPool(1, 64, 64)
    try:
        # a process that dies on whatever it is sent, as a decoder crashing on hostile bytes would
        inspectors._command = [sys.executable, "-c", "import os, sys; sys.stdin.buffer.read(4); os._exit(7)"]
        (process,) = inspectors._processes
        process.kill()
        process.wait()
        with pytest.raises(ImageRejected, match="died twice on it, exit code 7"):
            inspectors.inspect(encode("PNG", (100, 100)))
    finally:
        inspectors.close()


def test_inspecting_processes_stage_the_bytes_they_accept(tmp_path):
    from harvest.images.inspectors import InspectorPool
    from harvest.storage import LocalStore

    data = encode_image(photo_like(2, (320, 240), "RGB"), "JPEG")
    inspectors = InspectorPool(2, 64, 64, str(tmp_path / "staging"))
    try:
        inspected = inspectors.inspect(data)
        with pytest.raises(ImageRejected, match="too small"):
            inspectors.inspect(encode("PNG", (10, 10)))
    finally:
        inspectors.close()
    store = LocalStore(tmp_path / "staging")
    assert inspected.staged and inspected == dataclasses.replace(inspect_image(data, 64, 64), staged=True)
    assert store.get(inspected.staging_key) == data
    assert sorted(store.keys()) == [inspected.staging_key]  # nothing for the rejected bytes


def test_bytes_an_inspecting_process_cannot_stage_are_left_to_the_download_thread(tmp_path):
    from harvest.images.inspectors import InspectorPool

    not_a_folder = tmp_path / "staging"
    not_a_folder.write_bytes(b"")  # every write under it fails
    data = encode_image(photo_like(3, (320, 240), "RGB"), "JPEG")
    inspectors = InspectorPool(1, 64, 64, str(not_a_folder))
    try:
        first, second = inspectors.inspect(data), inspectors.inspect(data)
    finally:
        inspectors.close()
    assert not first.staged and first == inspect_image(data, 64, 64)
    assert not second.staged  # the process lived on


#: an inspecting process that dies on bytes starting with DIE, as a decoder crashing would
DYING_INSPECTOR = """
import os
from harvest.images import imagecheck

real = imagecheck.inspect_image

def inspect(data, *limits):
    if data.startswith(b"DIE"):
        os._exit(9)
    return real(data, *limits)

imagecheck.inspect_image = inspect
imagecheck.serve_inspections(64, 64)
"""


def test_requests_queued_behind_bytes_that_kill_the_process_are_answered():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from harvest.images.inspectors import InspectorPool

    images = [encode_image(photo_like(seed, (160, 120), "RGB"), "PNG") for seed in range(6)]
    inspectors = InspectorPool(1, 64, 64)
    try:
        inspectors._command = [sys.executable, "-c", DYING_INSPECTOR]
        inspectors._replace(inspectors._inspectors[0])  # the one process now runs the command above
        started = threading.Event()

        def killer():
            started.set()
            return inspectors.inspect(b"DIE" + bytes(100))

        with ThreadPoolExecutor(len(images) + 1) as pool:
            doomed = pool.submit(killer)
            started.wait()
            time.sleep(0.1)  # the fatal request is in the process's pipe first, the others queue behind
            answers = [pool.submit(inspectors.inspect, data) for data in images]
            with pytest.raises(ImageRejected, match="died twice on it, exit code 9"):
                doomed.result(timeout=60)
            results = [answer.result(timeout=60) for answer in answers]
    finally:
        inspectors.close()
    assert [r.sha256 for r in results] == [hashlib.sha256(data).hexdigest() for data in images]


def test_shards_get_inspecting_processes_when_they_pay():
    from harvest.images.inspectors import PROCESSES_FROM, inspection_processes

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert inspection_processes(3, 10) == 3 and inspection_processes(0, 100_000) == 0
    assert inspection_processes(None, PROCESSES_FROM - 1) == 0  # a small shard: not worth starting them
    assert inspection_processes(None, PROCESSES_FROM) == (min(cores, 4) if cores >= 2 else 0)
