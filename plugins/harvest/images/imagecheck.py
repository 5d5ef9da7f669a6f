"""Decide whether downloaded bytes are an image we keep, and describe it in one decoding pass.

Servers lie about types (HTML error pages served as ``image/jpeg``, SVG with scripts, empty 200s),
so the format comes from the magic bytes, never from Content-Type or the URL. Pillow then decodes
every pixel under a pixel budget: ``verify()`` alone accepts truncated files, and the budget stops
decompression bombs before they allocate gigabytes. The same pass yields what later stages need
without opening the file again: perceptual hash, entropy, EXIF and the copy that is published (its
own bytes up to its own end, metadata by allow-list: :mod:`harvest.images.sanitize`).
The hash and entropy are measured by :mod:`harvest.images.perceptual`, the copy proved by
:mod:`harvest.images.copy_proof`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import sys
import warnings
from dataclasses import dataclass, field

from PIL import Image as PILImage

from harvest.images.copy_proof import prove_copy
from harvest.images.decoding import (
    BUDGET,
    BudgetExceeded,
    DecodeBudget,
    declared_size,
    decode_cost,
    give_back,
)
from harvest.images.exif import read_exif
from harvest.images.perceptual import HASH_SIDE, detail_bits, entropy_bits, phash_hex, shrink
from harvest.images.pixels import to_rgb
from harvest.images.rights import file_rights
from harvest.images.sanitize import MetadataError, clean_file, polyglot_reason
from harvest.settings.config import DEFAULT_MAX_PIXELS

#: Images with more pixels are refused before decoding (HARVEST_MAX_PIXELS sets it for a run).
MAX_PIXELS = DEFAULT_MAX_PIXELS
FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "GIF": ("gif", "image/gif"),
    "WEBP": ("webp", "image/webp"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tif", "image/tiff"),
}
#: Raster formats Pillow can decode but that we do not keep; found by their magic bytes.
UNSUPPORTED = {"ICO": b"\x00\x00\x01\x00", "PSD": b"8BPS", "JPEG2000": b"\x00\x00\x00\x0cjP  "}
#: The transpose that shows an image upright, by its EXIF orientation (the gallery uses it too).
ORIENTATION_TRANSPOSE = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}


class ImageRejected(Exception):
    """The bytes are not an image we keep; the message is the recorded reason."""


@dataclass
class Inspected:
    sha256: str
    format: str
    width: int
    height: int
    data: bytes
    mode: str = "RGB"
    has_alpha: bool = False
    phash: str | None = None
    entropy: float | None = None
    detail: float | None = None
    orientation: int | None = None
    exif: dict = field(default_factory=dict)
    sensitive: dict = field(default_factory=dict)
    #: what the file's metadata says about its rights and licence (harvest.images.rights)
    rights: dict = field(default_factory=dict)
    #: the bytes to publish: the file up to its end with metadata by allow-list (``data`` itself
    #: when nothing had to go); None when no such copy could be made, or after staging
    clean_data: bytes | None = None
    #: sha256 of the bytes to publish (kept when ``clean_data`` is dropped after staging)
    clean_sha256: str | None = None
    #: why no copy to publish could be made (the image is then never published)
    clean_error: str | None = None
    #: len(data), kept when the bytes are dropped after staging
    size_bytes: int = 0
    #: the inspecting process already wrote the bytes (and the clean copy) into the staging store
    staged: bool = False

    @property
    def extension(self) -> str:
        return FORMATS[self.format][0]

    @property
    def mime_type(self) -> str:
        return FORMATS[self.format][1]

    @property
    def staging_key(self) -> str:
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.extension}"

    @property
    def clean_key(self) -> str | None:
        """Where the copy to publish is staged: the download's own key when nothing was removed."""
        digest = self.clean_sha256
        if digest is None:
            return None
        return self.staging_key if digest == self.sha256 else clean_key(digest, self.extension)


def clean_key(digest: str, extension: str) -> str:
    return f"clean/{digest[:2]}/{digest}.{extension}"


def sniff(data: bytes) -> str:
    """The format named by the first bytes, or ImageRejected with what the bytes are instead."""
    if not data:
        raise ImageRejected("empty body")
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    for name, magic in UNSUPPORTED.items():
        if data.startswith(magic):
            raise ImageRejected(f"unsupported image format {name}")
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        raise ImageRejected(f"unsupported image format {brand.upper() or 'ISO-BMFF'} (AVIF/HEIC)")
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in head):
        raise ImageRejected("SVG is not kept: vector markup that can carry scripts")
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        raise ImageRejected("not an image: an HTML page served in its place")
    if head[:1] in (b"{", b"["):
        raise ImageRejected("not an image: JSON served in its place")
    raise ImageRejected(f"not a decodable image: unknown format (starts with {data[:8].hex()})")


def inspect_image(
    data: bytes,
    min_width: int,
    min_height: int,
    max_pixels: int = MAX_PIXELS,
    budget: DecodeBudget = BUDGET,
) -> Inspected:
    """Prove ``data`` is a still raster image of a sane size and describe it (hash, EXIF, entropy).

    The decode first reserves its memory from ``budget`` (the process's, shared by its threads):
    it waits while other decodes leave too little room, and is refused if it alone needs more."""
    fmt = sniff(data)
    cost = inspection_cost(data, fmt, max_pixels)
    try:
        with budget.reserve(cost):
            try:
                return _decode(data, fmt, min_width, min_height, max_pixels)
            finally:
                give_back(cost)
    except ImageRejected:
        raise
    except BudgetExceeded as exc:
        raise ImageRejected(str(exc)) from None
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except Exception as exc:
        raise ImageRejected(f"not a decodable image ({type(exc).__name__}: {exc})") from exc


#: Copies of the file that making the copy to publish and proving it hold at once, beside the
#: decode: the copy and its second cleaning for JPEG and PNG; the rebuilt containers of the other
#: formats hold more (see docs/security/memory.md)
_CLEANING_COPIES = {"JPEG": 2, "PNG": 2, "TIFF": 5}


def inspection_cost(data: bytes, fmt: str, max_pixels: int = MAX_PIXELS) -> int:
    """Bytes of the decode budget that inspecting ``data`` (sniffed as ``fmt``) reserves."""
    decode = decode_cost(data, fmt, max_pixels, draft_side=HASH_SIDE)
    return decode + _CLEANING_COPIES.get(fmt, 3) * len(data) if decode else 0


def _decode(data: bytes, fmt: str, min_width: int, min_height: int, max_pixels: int) -> Inspected:
    """Open, check and decode the image, and describe it; its pixels are freed before returning,
    whatever happens, so that they never outlive the reservation made for them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        with PILImage.open(io.BytesIO(data), formats=[fmt]) as image:
            try:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageRejected(f"too many pixels ({width}x{height})")
                declared = declared_size(data, fmt)
                if declared is not None and declared.pixels > max_pixels:  # nothing was reserved
                    raise ImageRejected(
                        f"too many pixels (its header declares {declared.width}x{declared.height})"
                    )
                if declared is not None and width * height > declared.pixels:
                    raise ImageRejected(
                        f"decodes to {width}x{height}, more pixels than its header declares "
                        f"({declared.width}x{declared.height})"
                    )
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise ImageRejected(f"animated {fmt} ({frames} frames): only still images are kept")
                if width < min_width or height < min_height:
                    raise ImageRejected(f"too small ({width}x{height} < {min_width}x{min_height})")
                if fmt == "JPEG":
                    # every block of the stream is still entropy-decoded (so truncation and
                    # corruption fail here), only the inverse DCT runs at reduced scale; the mode
                    # stays as it is, so hashes match those stored earlier (bench/README.md)
                    image.draft(image.mode, (HASH_SIDE, HASH_SIDE))
                image.load()
                return _describe(image, data, fmt, width, height)
            finally:
                image.close()


def _describe(image: PILImage.Image, data: bytes, fmt: str, width: int, height: int) -> Inspected:
    public, sensitive, orientation = read_exif(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    small = shrink(image)
    # to_rgb() and back is the identity on grey pixels: skip both conversions
    grey = small if small.mode == "L" else to_rgb(small).convert("L")
    if orientation in ORIENTATION_TRANSPOSE:
        grey = grey.transpose(ORIENTATION_TRANSPOSE[orientation])
    inspected = Inspected(
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        width=width,
        height=height,
        data=data,
        size_bytes=len(data),
        mode=image.mode,
        has_alpha=has_alpha,
        phash=phash_hex(grey),
        entropy=round(entropy_bits(grey), 3),
        detail=round(detail_bits(grey), 3),
        orientation=orientation,
        exif=public,
        sensitive=sensitive,
    )
    _clean(inspected, image)
    return inspected


def _clean(inspected: Inspected, image: PILImage.Image) -> None:
    """Make the copy to publish, for every image, and prove it (:func:`harvest.images.copy_proof.prove_copy`). Identifying values
    found in the removed blocks (XMP, IPTC) join the private fields. A copy that would still be an
    archive or carry markup rejects the file."""
    try:
        cleaned = clean_file(inspected.data, inspected.format)
    except MetadataError as exc:
        inspected.clean_error = f"metadata could not be removed ({exc})"
        return
    for name, value in cleaned.private.items():
        inspected.sensitive.setdefault(name, value)
    inspected.rights = file_rights(
        cleaned.xmp, cleaned.iptc, inspected.exif.get("copyright"), inspected.sensitive.get("artist")
    )
    reason = polyglot_reason(cleaned.data)
    if reason:
        raise ImageRejected(reason)
    if cleaned.data == inspected.data:
        inspected.clean_data, inspected.clean_sha256 = inspected.data, inspected.sha256
        return
    try:
        prove_copy(cleaned, image, inspected.format)
    except Exception as exc:  # noqa: BLE001 - the image stays unpublished with the reason
        inspected.clean_error = f"metadata could not be removed ({type(exc).__name__}: {exc})"
        return
    inspected.clean_data = cleaned.data
    inspected.clean_sha256 = hashlib.sha256(cleaned.data).hexdigest()


#: Inspected fields that travel between an inspecting process and the download stage as JSON
_WIRE_FIELDS = (
    "sha256", "format", "width", "height", "mode", "has_alpha", "phash", "entropy", "detail", "orientation",
    "exif", "sensitive", "rights", "clean_sha256", "clean_error", "size_bytes",
)  # fmt: skip
_LENGTH = struct.Struct(">I")


def serve_inspections(
    min_width: int,
    min_height: int,
    staging: str | None = None,
    max_pixels: int = MAX_PIXELS,
    budget_bytes: int | None = None,
) -> None:
    """Inspect every image that arrives on stdin and answer on stdout, until stdin closes.

    Runs in a process of its own (``python -c``) beside the download stage. Each request is the
    bytes, length-prefixed; each answer is a JSON description (or the reason for rejecting them)
    followed by the copy to publish when it differs from the request and is not staged here
    (``"clean"`` says which: "sent", "same", "staged" or null). JSON rather than pickle: what comes
    back from the process that parsed hostile bytes is data, never code. With ``staging`` (a local staging
    folder), the process also writes the kept bytes there, unsynced (the stage syncs the batch
    before any row names them): a file write costs the downloading process's threads about as much
    as the request itself, in system calls that each hand its interpreter lock over."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the answers
    if budget_bytes is not None:  # the same refusals as in the download process
        BUDGET.resize(budget_bytes)
    store = None
    if staging is not None:
        from harvest.storage import LocalStore

        store = LocalStore(staging)
    with store.synced_elsewhere() if store is not None else contextlib.nullcontext():
        while True:
            data = _read_frame(stdin)
            if data is None:
                return
            clean = b""
            try:
                inspected = inspect_image(data, min_width, min_height, max_pixels)
                answer = {"inspected": {name: getattr(inspected, name) for name in _WIRE_FIELDS}}
                if store is not None:
                    try:
                        stage_inspected(store, inspected)
                        answer["staged"] = True
                    except Exception:  # noqa: BLE001 - the download thread writes it, and reports what fails
                        pass
                answer["clean"] = _clean_answer(inspected, answer.get("staged", False))
                clean = inspected.clean_data if answer["clean"] == "sent" else b""
            except ImageRejected as exc:
                answer = {"rejected": str(exc)}
            write_frame(stdout, json.dumps(answer).encode("utf-8"), clean)


def _clean_answer(inspected: Inspected, staged: bool) -> str | None:
    """How the copy to publish travels back: not at all when there is none, is the request itself
    or was staged by this process; else its bytes follow."""
    if inspected.clean_sha256 is None:
        return None
    if inspected.clean_sha256 == inspected.sha256:
        return "same"
    return "staged" if staged else "sent"


def stage_inspected(store, inspected: Inspected) -> None:
    """The bytes, and the copy to publish when it differs from them, under their content keys."""
    store.put_new(inspected.staging_key, inspected.data, inspected.mime_type)
    if inspected.clean_data is not None and inspected.clean_key != inspected.staging_key:
        store.put_new(inspected.clean_key, inspected.clean_data, inspected.mime_type)


def write_frame(stream, *frames: bytes) -> None:
    """Each frame as its length and bytes, all in one write: the reader wakes up once, with the
    whole message in the pipe (copying a typical image costs less than the extra system call and
    wake-up)."""
    stream.write(b"".join(part for data in frames for part in (_LENGTH.pack(len(data)), data)))
    stream.flush()


def _read_frame(stream) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        raise EOFError("the stream ended inside a frame")
    return body


def read_answer(stream, data: bytes) -> Inspected:
    """The description of ``data`` that an inspecting process sent, or its ImageRejected;
    EOFError when the process is gone."""
    text = _read_frame(stream)
    clean = _read_frame(stream) if text is not None else None
    if text is None or clean is None:
        raise EOFError("the inspecting process closed its output")
    answer = json.loads(text)
    if "rejected" in answer:
        raise ImageRejected(answer["rejected"])
    inspected = Inspected(data=data, **answer["inspected"])
    inspected.clean_data = {"sent": clean, "same": data}.get(answer["clean"])
    inspected.staged = answer.get("staged", False)
    return inspected
