"""Image files that carry more than pixels, built here with Pillow and hand-written segments and
chunks: identifying metadata where earlier versions did not look (XMP, extended XMP, IPTC, IFD0,
PNG iTXt, WebP XMP), and archives or markup after the image's end (polyglots). Each comes with
the values that must never be published and the picture it shows, for a pixel comparison."""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

#: the Airflow DAG a polyglot smuggles into a DAGs folder
DAG_SOURCE = b"from airflow import DAG\nprint('owned')\n" + b"\xff\xd9" * 4  # EOI bytes to fool rfind()
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A picture of its own: coarse random blocks, so no two seeds are near duplicates, and enough
    detail that no quality rule holds it back."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    grain = rng.integers(-12, 13, (size[1], size[0], 3))
    big = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8)).astype(int) + grain
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB profile (made once: littleCMS stamps each with the time it was made)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def allowed_exif(**ifd0: object) -> Image.Exif:
    """EXIF with what the allow-list keeps (make, model, orientation, capture time) plus ``ifd0``."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    exif[0x0112] = 6
    for tag, value in ifd0.items():
        exif[int(tag, 16)] = value
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"
    return exif


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, exif: Image.Exif | None = None, **options) -> bytes:
    exif = exif if exif is not None else allowed_exif()
    return encode(
        picture(seed), "JPEG", quality=90, exif=exif, icc_profile=srgb_profile(), dpi=(300, 300), **options
    )


def insert_segments(data: bytes, *segments: bytes) -> bytes:
    """``segments`` put into a JPEG after its APPn segments, before the first table or frame header."""
    pos = 2
    while data[pos + 1] in range(0xE0, 0xF0):
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[:pos] + b"".join(segments) + data[pos:]


def segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def xmp_packet(attributes: str = "", elements: str = "") -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        f' xmlns:xmpNote="http://ns.adobe.com/xmp/note/" {attributes}>{elements}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def app1_xmp(packet: bytes) -> bytes:
    return segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet)


def extended_xmp(packet: bytes) -> tuple[str, bytes]:
    """(GUID, APP1 segment) of an Extended XMP packet in one chunk, as Photoshop writes large ones."""
    guid = hashlib.md5(packet).hexdigest().upper()  # noqa: S324 - the GUID the XMP spec defines
    header = b"http://ns.adobe.com/xmp/extension/\x00" + guid.encode("ascii")
    return guid, segment(0xE1, header + struct.pack(">II", len(packet), 0) + packet)


def app13_iptc(datasets: dict[int, str]) -> bytes:
    """An APP13 Photoshop segment with an IPTC-IIM block (record 2) holding ``datasets``."""
    iim = b"\x1c\x02\x00\x00\x02\x00\x04"  # record version
    for number, text in datasets.items():
        value = text.encode("utf-8")
        iim += bytes((0x1C, 2, number)) + struct.pack(">H", len(value)) + value
    resource = (
        b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim + (b"\x00" if len(iim) & 1 else b"")
    )
    return segment(0xED, b"Photoshop 3.0\x00" + resource)


def gps_xmp(latitude: str, longitude: str) -> str:
    return f'exif:GPSLatitude="{latitude}" exif:GPSLongitude="{longitude}"'


def creator_xmp(name: str) -> str:
    return f"<dc:creator><rdf:Seq><rdf:li>{name}</rdf:li></rdf:Seq></dc:creator>"


@dataclass
class Leak:
    """A file with identifying metadata in one place, the values that must not be published, and
    the private fields (name -> expected value) that must be kept encrypted instead."""

    name: str
    data: bytes
    content_type: str
    needles: list[bytes]
    private: dict[str, object] = field(default_factory=dict)


def leak_cases() -> list[Leak]:
    """The seven places private metadata survived the deny-list of earlier versions."""
    guid_packet = xmp_packet(gps_xmp("48,51.4N", "2,21.1E"))
    guid, extension = extended_xmp(guid_packet)
    png_xmp = xmp_packet(gps_xmp("40,26.8N", "3,42.2W"), creator_xmp("Petra Pngauthor")).decode("utf-8")
    png_info = PngInfo()
    png_info.add_itxt("XML:com.adobe.xmp", png_xmp)
    webp_xmp = xmp_packet(gps_xmp("35,41.4N", "139,41.5E"), creator_xmp("Wendy Webp"))
    return [
        Leak(
            "xmp-gps.jpg",
            insert_segments(jpeg(11), app1_xmp(xmp_packet(gps_xmp("52,22.5N", "4,53.0E")))),
            "image/jpeg",
            [b"52,22.5N", b"4,53.0E", b"GPSLatitude"],
            {"xmp_gps": {"latitude": 52.375, "longitude": 4.8833333}},
        ),
        Leak(
            "xmp-creator.jpg",
            insert_segments(jpeg(12), app1_xmp(xmp_packet(elements=creator_xmp("Jane Q. Photographer")))),
            "image/jpeg",
            [b"Jane Q. Photographer", b"dc:creator"],
            {"xmp_creator": ["Jane Q. Photographer"]},
        ),
        Leak(
            "iptc.jpg",
            insert_segments(jpeg(13), app13_iptc({80: "Ivan Bylineson", 90: "Springfield"})),
            "image/jpeg",
            [b"Ivan Bylineson", b"Springfield", b"Photoshop 3.0"],
            {"iptc_by_line": ["Ivan Bylineson"], "iptc_city": "Springfield"},
        ),
        Leak(
            "extended-xmp.jpg",
            insert_segments(jpeg(14), app1_xmp(xmp_packet(f'xmpNote:HasExtendedXMP="{guid}"')), extension),
            "image/jpeg",
            [b"48,51.4N", b"2,21.1E", b"xmp/extension", guid.encode("ascii")],
            {"xmp_gps": {"latitude": 48.8566667, "longitude": 2.3516667}},
        ),
        Leak(
            "ifd0-serial.jpg",
            jpeg(15, allowed_exif(A431="SN-IFD0-4711", A430="Olga Owner")),
            "image/jpeg",
            [b"SN-IFD0-4711", b"Olga Owner"],
            {"body_serial_number": "SN-IFD0-4711", "owner_name": "Olga Owner"},
        ),
        Leak(
            "itxt-xmp.png",
            encode(
                picture(16),
                "PNG",
                pnginfo=png_info,
                exif=allowed_exif(),
                icc_profile=srgb_profile(),
                dpi=(300, 300),
            ),
            "image/png",
            [b"40,26.8N", b"3,42.2W", b"Petra Pngauthor", b"XML:com.adobe.xmp"],
            {
                "xmp_gps": {"latitude": 40.4466667, "longitude": -3.7033333},
                "xmp_creator": ["Petra Pngauthor"],
            },
        ),
        Leak(
            "xmp.webp",
            encode(
                picture(17),
                "WEBP",
                lossless=True,
                xmp=webp_xmp,
                exif=allowed_exif(),
                icc_profile=srgb_profile(),
            ),
            "image/webp",
            [b"35,41.4N", b"139,41.5E", b"Wendy Webp", b"XMP "],
            {"xmp_gps": {"latitude": 35.69, "longitude": 139.6916667}, "xmp_creator": ["Wendy Webp"]},
        ),
    ]


def dag_zip() -> bytes:
    """A ZIP archive holding a DAG file, stored uncompressed (its bytes include 0xFF 0xD9 pairs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("dags/owned.py", DAG_SOURCE)
    return buffer.getvalue()


def gif(seed: int) -> bytes:
    """A still GIF with a comment and a NETSCAPE loop extension (neither is kept)."""
    return encode(
        picture(seed).convert("P", palette=Image.Palette.ADAPTIVE), "GIF", comment=b"by Gina Gif", loop=0
    )


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def polyglot_cases() -> dict[str, tuple[bytes, bytes, str]]:
    """name -> (the image as its writer made it, the same with something appended, Content-Type)."""
    zipped = dag_zip()
    baseline = jpeg(21)
    progressive = jpeg(22, progressive=True)
    restarts = jpeg(23, restart_marker_blocks=1)  # an RSTn marker after every MCU
    png = encode(picture(24), "PNG")
    still_gif = gif(25)
    webp = encode(picture(26), "WEBP", quality=80)
    bmp = encode(picture(27), "BMP")
    tiff = encode(picture(28), "TIFF")
    html_jpeg = jpeg(29)
    return {
        "jpeg-zip.jpg": (baseline, baseline + zipped, "image/jpeg"),
        "progressive-zip.jpg": (progressive, progressive + zipped, "image/jpeg"),
        "restarts-zip.jpg": (restarts, restarts + zipped, "image/jpeg"),
        "png-zip.png": (png, png + zipped, "image/png"),
        "gif-zip.gif": (still_gif, still_gif + zipped, "image/gif"),
        "webp-past-riff.webp": (webp, webp + zipped, "image/webp"),
        "bmp-zip.bmp": (bmp, bmp + zipped, "image/bmp"),
        "tiff-zip.tif": (tiff, tiff + zipped, "image/tiff"),
        "jpeg-html.jpg": (html_jpeg, html_jpeg + HTML, "image/jpeg"),
    }


def markup_in_profile() -> bytes:
    """A JPEG whose colour profile segment (kept by the allow-list) carries a script: the copy
    cannot be made clean, so the file must be rejected."""
    plain = encode(picture(30), "JPEG", quality=90)
    return insert_segments(plain, segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + HTML))


def zip_in_profile() -> bytes:
    """A small JPEG with a ZIP archive inside a colour profile segment, near enough to the end
    for a ZIP reader to find it."""
    small = encode(picture(31, (64, 64)), "JPEG", quality=50)
    return insert_segments(small, segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + dag_zip()))


@dataclass
class Harvest:
    """What one download + publish of a site left: its config, the site's base URL and, per path
    on the site, the published bytes (None when nothing was published for it)."""

    cfg: object
    base: str
    published: dict[str, bytes | None]


def harvest(
    database_url: str,
    run_id: str,
    destination: str,
    files: dict[str, tuple[bytes, str]],
    s3=None,
    before_publish=None,
    **env: str,
) -> Harvest:
    """The real download and publish stages over ``files`` (path -> (bytes, Content-Type)) served on
    loopback, every image answered as an Egyptian cat; ``before_publish(cfg)`` runs in between."""
    from fixed_server import Response, serve
    from helpers import manifest_rows
    from sqlalchemy import select
    from stage_setup import make_config, record_answers, seed_candidates

    from harvest.stages.download import run_download
    from harvest.stages.publish import manifest_key, run_publish
    from harvest.state.db import session_scope
    from harvest.state.models import Candidate
    from harvest.storage import open_store

    routes = {path: Response(data, content_type) for path, (data, content_type) in files.items()}
    with serve(routes) as base:
        cfg = make_config(database_url, run_id, destination, s3=s3, HARVEST_EXPORTS="none", **env)
        seed_candidates(cfg, [base + path for path in files])
        run_download(cfg, 0)
    with session_scope(cfg.database_url) as session:
        shas = set(
            session.scalars(
                select(Candidate.sha256).where(Candidate.run_id == cfg.run_id, Candidate.sha256.is_not(None))
            )
        )
    record_answers(cfg, dict.fromkeys(shas, "egyptian_cat"))
    if before_publish is not None:
        before_publish(cfg)
    run_publish(cfg)
    store = open_store(cfg.destination, cfg.s3)
    rows = manifest_rows(store.get(manifest_key(cfg.run_id)))
    published: dict[str, bytes | None] = dict.fromkeys(files)
    for row in rows:
        published[row["url"].removeprefix(base)] = store.get(row["key"])
    return Harvest(cfg, base, published)
