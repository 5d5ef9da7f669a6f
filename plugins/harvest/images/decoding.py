"""What decoding an image will cost in memory, read from its header, and a budget that bounds it.

A file's size says little about its decoded size: a 250 KB PNG can hold 64 megapixels, and Pillow
keeps most images at 4 bytes a pixel however few bits the file spends on each. So every decode first
reserves its cost from a budget shared by the whole process; a decode waits while the others in
flight leave too little room, and an image that alone costs more than the whole budget is refused.

The cost comes from a few fixed header fields read here in pure Python, never from Pillow: the
download stage reserves the cost of images it hands to its inspecting processes before sending them,
so the budget of the download process bounds the decodes of all its inspecting processes together.
The inspection then refuses an image whose decoder sees more pixels than its header declared, so a
reservation is never too small. Bytes per pixel are measured figures (Pillow 13, libwebp, libjpeg-turbo):

* PNG, GIF, BMP, TIFF: the pixels as Pillow holds them, 1 byte for palette and grey images (2 for
  16-bit grey), 4 for everything else (RGB is stored as 4 bytes too);
* JPEG: decoded at reduced scale (``draft``), so only the reduced image and row buffers, unless the
  file is progressive or its first scan leaves out components (so more scans follow): libjpeg then
  buffers every DCT coefficient, 2 bytes per sample of each component;
* WebP: 17 bytes a pixel, 20 for lossless files. libwebp's animation decoder, which Pillow uses for
  every WebP, keeps two full RGBA canvases, hands the frame over as a third copy, and Pillow decodes
  it into a fourth; the lossless decoder works through one more full buffer;
* TIFF: 4 bytes a pixel plus libtiff's buffer for one strip or tile (the whole image for a file
  written as one strip).

Each decode also gets BASE_COST for decoder state, row buffers and the bands harvest.images.perceptual.shrink converts.
"""

from __future__ import annotations

import ctypes
import math
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from harvest.settings.config import DEFAULT_DECODE_BUDGET_MB

MB = 1024 * 1024
#: Bytes of working memory any decode gets on top of its pixels: decoder state and row buffers.
BASE_COST = 16 * MB
#: Bytes a pixel costs at most, by format, when the header cannot be read.
MAX_BYTES_PER_PIXEL = {"JPEG": 8, "PNG": 4, "GIF": 4, "WEBP": 20, "BMP": 4, "TIFF": 12}
WEBP_BYTES_PER_PIXEL = 17
WEBP_LOSSLESS_BYTES_PER_PIXEL = 20
#: JPEG start-of-frame markers, and those among them whose frames are progressive
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


class BudgetExceeded(Exception):
    """One decode would cost more than the whole budget: it can never run, so it is refused."""


@dataclass(frozen=True)
class Declared:
    """What a header says about the pixels: their size and what decoding them takes."""

    width: int
    height: int
    #: bytes a decoded pixel takes (formats other than JPEG)
    bytes_per_pixel: float = 4.0
    #: JPEG: samples per pixel over all components (3 for 4:4:4, 1.5 for 4:2:0); None otherwise
    jpeg_samples: float | None = None
    #: JPEG: progressive or several scans, so libjpeg buffers every coefficient at any scale
    jpeg_buffered: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


def declared_size(data: bytes, fmt: str) -> Declared | None:
    """The size and cost per pixel the header of ``data`` (already sniffed as ``fmt``) declares;
    None when the header cannot be read (the decoder then refuses the file, or the reservation
    assumes the worst the format allows)."""
    reader = _READERS.get(fmt)
    if reader is None:
        return None
    try:
        return reader(data)
    except Exception:  # noqa: BLE001 - hostile bytes: whatever this reader cannot follow is unknown
        return None


def decode_cost(data: bytes, fmt: str, max_pixels: int, draft_side: int | None = None) -> int:
    """Bytes to reserve before decoding ``data``: nothing if its header already declares more than
    ``max_pixels`` (the inspection refuses it before decoding), the worst case when the header
    cannot be read. ``draft_side`` is the side a JPEG is decoded down to (``Image.draft``)."""
    declared = declared_size(data, fmt)
    if declared is None:
        return BASE_COST + max_pixels * MAX_BYTES_PER_PIXEL.get(fmt, 16)
    if declared.pixels > max_pixels:
        return 0
    return declared_cost(declared, draft_side)


def declared_cost(declared: Declared, draft_side: int | None = None) -> int:
    """Bytes a decode of the declared pixels takes (see the module's docstring for the figures)."""
    if declared.jpeg_samples is None:
        return BASE_COST + math.ceil(declared.pixels * declared.bytes_per_pixel)
    scale = jpeg_draft_scale(declared.width, declared.height, draft_side)
    reduced = -(-declared.width // scale) * -(-declared.height // scale) * 4
    coefficients = declared.pixels * declared.jpeg_samples * 2 if declared.jpeg_buffered else 0
    rows = declared.width * 16 * 8  # libjpeg's row buffers: 16 rows of every component, in and out
    return BASE_COST + reduced + math.ceil(coefficients) + rows


def jpeg_draft_scale(width: int, height: int, side: int | None) -> int:
    """The reduction Pillow's JPEG ``draft(mode, (side, side))`` picks: 8, 4, 2 or 1."""
    if not side:
        return 1
    fits = min(width // side, height // side)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


def _png(data: bytes) -> Declared:
    if data[12:16] != b"IHDR":
        raise ValueError("IHDR is not the first chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour in (0, 3):  # grey or palette: one byte a pixel, two for 16-bit grey ("I;16")
        return Declared(width, height, 2 if depth == 16 else 1)
    return Declared(width, height)


def _gif(data: bytes) -> Declared:
    """The logical screen, grown to the first frame if that is larger (Pillow does the same)."""
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x21:  # an extension: label, then sub-blocks up to an empty one
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif block == 0x2C:
            left, top, frame_w, frame_h = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
            return Declared(max(width, left + frame_w), max(height, top + frame_h), 1)
        else:
            break
    return Declared(width, height, 1)


def _webp(data: bytes) -> Declared:
    """The canvas size, and whether the image is lossless (VP8L decodes through one more full
    buffer than lossy VP8)."""
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        lossless = b"VP8L" in _riff_chunks(data)
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = (value & 0x3FFF for value in struct.unpack("<HH", data[26:30]))
        lossless = False
    elif chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        lossless = True
    else:
        raise ValueError("no VP8, VP8L or VP8X header")
    return Declared(width, height, WEBP_LOSSLESS_BYTES_PER_PIXEL if lossless else WEBP_BYTES_PER_PIXEL)


def _riff_chunks(data: bytes) -> set[bytes]:
    """The kinds of chunk in a RIFF file, up to the first image data chunk."""
    kinds, pos = set(), 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        kinds.add(kind)
        if kind in (b"VP8 ", b"VP8L"):
            break
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return kinds


def _bmp(data: bytes) -> Declared:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _planes, bits = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, _planes, bits = struct.unpack("<iiHH", data[18:30])
    return Declared(abs(width), abs(height), 1 if bits <= 8 else 4)


def _tiff(data: bytes) -> Declared:
    """Width and length from the first directory, the one Pillow decodes. libtiff reads a whole
    compressed strip (or tile) at a time into a buffer of its own: a file written as one strip needs
    that buffer as large as the image, so the buffer is counted too, at the 8 bytes a pixel of
    16-bit RGBA."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    tags: dict[int, int] = {}
    for index in range(count):
        entry = offset + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257, 259, 278, 322, 323):  # size, compression, rows per strip, tile size
            form = order + ("H" if kind == 3 else "I")
            tags[tag] = struct.unpack(form, data[entry + 8 : entry + 8 + struct.calcsize(form)])[0]
    width, height = tags[256], tags[257]
    if tags.get(259, 1) == 1:  # uncompressed: Pillow reads the rows itself, without libtiff
        buffered = 0
    elif 322 in tags and 323 in tags:
        buffered = tags[322] * tags[323]
    else:
        buffered = width * min(tags.get(278, height), height)
    return Declared(width, height, 4 + 8 * buffered / max(width * height, 1))


def _jpeg(data: bytes) -> Declared:
    """The largest frame before the first scan, and whether libjpeg buffers every coefficient: it
    does for a progressive frame, and for a sequential one whose first scan leaves out some of the
    frame's components (more scans follow), the test libjpeg itself makes (jdinput.c)."""
    pos, frames, buffered, components = 2, [], False, 0
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF:
            height, width, components = struct.unpack(">HHB", data[pos + 5 : pos + 10])
            factors = [data[pos + 11 + 3 * i] for i in range(components)]
            full = max(f >> 4 for f in factors) * max(f & 15 for f in factors) or 1
            samples = max(sum((f >> 4) * (f & 15) for f in factors) / full, 1.0)
            frames.append(Declared(width, height, jpeg_samples=samples))
            buffered = buffered or marker in _PROGRESSIVE
        elif marker == 0xDA:  # the first scan
            buffered = buffered or data[pos + 4] < components
            break
        pos += 2 + length
    if not frames:
        raise ValueError("no frame header before the first scan")
    largest = max(frames, key=lambda frame: frame.pixels * (frame.jpeg_samples or 1))
    return Declared(largest.width, largest.height, jpeg_samples=largest.jpeg_samples, jpeg_buffered=buffered)


_READERS = {"PNG": _png, "GIF": _gif, "WEBP": _webp, "BMP": _bmp, "TIFF": _tiff, "JPEG": _jpeg}


class DecodeBudget:
    """Bytes of decoded pixels in flight in this process, at most ``capacity``. Reservations are
    granted in the order they were asked for, so a large image is not starved by a stream of small
    ones; one larger than the whole capacity is refused at once, it would wait for ever."""

    def __init__(self, capacity: int, setting: str = "HARVEST_DECODE_BUDGET_MB"):
        self.capacity = capacity
        #: the setting that sizes this budget, named when a decode is refused
        self.setting = setting
        self.in_use = 0
        #: the largest ``in_use`` seen, for tests and reports
        self.high_water = 0
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()

    def resize(self, capacity: int) -> None:
        """A new capacity (from the run's settings); decodes in flight keep their reservations."""
        with self._changed:
            self.capacity = capacity
            self._changed.notify_all()

    def _check(self, cost: int) -> None:
        if cost > self.capacity:
            raise BudgetExceeded(
                f"needs {cost / MB:.0f} MB to decode, more than the whole decode budget of "
                f"{self.capacity / MB:.0f} MB ({self.setting})"
            )

    @contextmanager
    def reserve(self, cost: int) -> Iterator[None]:
        """Hold ``cost`` bytes of the budget for the duration of the block."""
        self._acquire(cost)
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= cost
                self._changed.notify_all()

    def _acquire(self, cost: int) -> None:
        ticket = object()
        with self._changed:
            self._check(cost)
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.in_use + cost > self.capacity:
                    self._changed.wait()
                    self._check(cost)  # the capacity may have shrunk while this one waited
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()
            self.in_use += cost
            self.high_water = max(self.high_water, self.in_use)


#: Decodes at least this costly give their memory back to the system when they are done.
TRIM_FROM = 32 * MB


def _malloc_trim():
    """glibc's malloc_trim, or None where there is none (other C libraries, other systems)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def give_back(cost: int) -> None:
    """After a decode of ``cost`` bytes, hand the freed pixels back to the system. glibc keeps what
    a thread frees in that thread's own arena, for that thread to reuse: with several threads taking
    turns at large decodes, each arena grows to the largest decode it saw and the process holds the
    sum, whatever the budget says. malloc_trim releases the free pages of every arena (a few
    milliseconds, so only after large decodes)."""
    if cost >= TRIM_FROM and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


#: The decode budget of this process, shared by every thread that decodes images in it.
BUDGET = DecodeBudget(DEFAULT_DECODE_BUDGET_MB * MB)
