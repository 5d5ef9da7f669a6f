"""A loopback site that declares every opt-out in every place and licences its photos in every
markup and file-metadata form, with what a harvest of it must record for each image.

Every image is a distinct real photo (the packages' sample photos, each turned or mirrored so no
two are near duplicates); the file-metadata forms carry XMP or IPTC written into a copy.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

from loopback_site import Response, SiteServer, html
from PIL import Image
from staged import sample_photos

CC = "https://creativecommons.org"
AGENT = "image-harvester"


@dataclass(frozen=True)
class Expect:
    """What the harvest must record for one image: kept or the skip reason's start, the SPDX id
    and the author (None: no author in clear)."""

    status: str
    reason: str | None = None
    license: str | None = None
    author: str | None = None
    directive: str | None = None


def _photo(index: int) -> Image.Image:
    photos = list(sample_photos().values())
    turns = [
        None,
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
    ]
    photo = photos[index % len(photos)]
    turn = turns[index // len(photos)]
    photo = photo if turn is None else photo.transpose(turn)
    photo.thumbnail((480, 480))
    return photo


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """A copy of a JPEG with one more APPn segment after its start marker."""
    return data[:2] + struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload + data[2:]


def with_xmp(data: bytes, *, web_statement=None, usage_terms=None, rights=None, creator=None) -> bytes:
    """XMP as Adobe and exiftool write it: WebStatement as an attribute, the rest as elements."""
    attribute = f' xmpRights:WebStatement="{web_statement}"' if web_statement else ""
    elements = ""
    if creator:
        elements += f"<dc:creator><rdf:Seq><rdf:li>{creator}</rdf:li></rdf:Seq></dc:creator>"
    if rights:
        elements += (
            f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{rights}</rdf:li></rdf:Alt></dc:rights>'
        )
    if usage_terms:
        elements += (
            "<xmpRights:UsageTerms><rdf:Alt>"
            f'<rdf:li xml:lang="x-default">{usage_terms}</rdf:li></rdf:Alt></xmpRights:UsageTerms>'
        )
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/"'
        f"{attribute}>{elements}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )
    return with_segment(data, 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet.encode("utf-8"))


def with_iptc(data: bytes, records: dict[int, str]) -> bytes:
    """IPTC-IIM records in a Photoshop APP13 resource block, as Photoshop writes them."""
    iim = b"".join(
        b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(text.encode())) + text.encode()
        for dataset, text in records.items()
    )
    resource = (
        b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim + (b"\x00" if len(iim) % 2 else b"")
    )
    return with_segment(data, 0xED, b"Photoshop 3.0\x00" + resource)


def _jpeg(body: bytes, **headers: str) -> Response:
    return Response(body, content_type="image/jpeg", headers=headers)


def _figure(src: str, inner: str = "", alt: str = "a photo") -> str:
    return f'<figure><img src="{src}" alt="{alt}" width="400" height="300"><figcaption>{inner}</figcaption></figure>'


BY_PAGE = f'<footer><a rel="license" href="{CC}/licenses/by/4.0/">CC BY 4.0</a></footer>'


def build(server: SiteServer) -> dict[str, Expect]:
    """Routes on ``server``; returns image path -> what the harvest must record."""
    routes: dict[str, Response] = {}
    expect: dict[str, Expect] = {}
    pages: list[str] = []
    counter = iter(range(48))

    def page(path: str, body: str, head: str = "", **headers: str) -> None:
        response = html(body, head)
        response.headers.update(headers)
        routes[path] = response
        pages.append(path)

    def image(path: str, expectation: Expect, body: bytes | None = None, **headers: str) -> str:
        routes[path] = _jpeg(body if body is not None else jpeg_bytes(_photo(next(counter))), **headers)
        expect[path] = expectation
        return path

    skip = lambda directive, where: Expect("skipped", where, directive=directive)  # noqa: E731
    kept_by = Expect("done", license="CC-BY-4.0")

    # opt-outs in every place; each page otherwise licenses its images CC BY (page-wide)
    img = image("/o/page-header.jpg", skip("noai", "X-Robots-Tag header of the page"))
    page("/o/page-header.html", _figure(img) + BY_PAGE, **{"X-Robots-Tag": "noai"})
    img = image("/o/page-header-other-agent.jpg", kept_by)
    page("/o/page-header-other-agent.html", _figure(img) + BY_PAGE, **{"X-Robots-Tag": "otherbot: noai"})
    page(
        "/o/images-with-headers.html",
        "".join(
            _figure(image(path, expectation, **headers))
            for path, expectation, headers in (
                (
                    "/o/image-header.jpg",
                    skip("noimageai", "X-Robots-Tag header of the image"),
                    {"X-Robots-Tag": "noimageai"},
                ),
                (
                    "/o/image-header-ours.jpg",
                    skip("noai", "X-Robots-Tag header of the image"),
                    {"X-Robots-Tag": f"{AGENT}: noai"},
                ),
                ("/o/image-header-google.jpg", kept_by, {"X-Robots-Tag": "googlebot: noindex"}),
                (
                    "/o/image-tdm.jpg",
                    skip("tdm-reservation: 1", "TDMRep header of the image"),
                    {"tdm-reservation": "1"},
                ),
            )
        )
        + BY_PAGE,
    )
    img = image("/o/meta-robots.jpg", skip("noai", '<meta name="robots"> of the page'))
    page("/o/meta-robots.html", _figure(img) + BY_PAGE, '<meta name="robots" content="noai, noimageai">')
    img = image("/o/meta-agent.jpg", skip("noimageindex", f'<meta name="{AGENT}"> of the page'))
    page("/o/meta-agent.html", _figure(img) + BY_PAGE, f'<meta name="{AGENT}" content="noimageindex">')
    img = image("/o/page-tdm.jpg", skip("tdm-reservation: 1", "TDMRep header of the page"))
    page("/o/page-tdm.html", _figure(img) + BY_PAGE, **{"tdm-reservation": "1"})
    img = image("/o/meta-tdm.jpg", skip("tdm-reservation: 1", '<meta name="tdm-reservation"> of the page'))
    page("/o/meta-tdm.html", _figure(img) + BY_PAGE, '<meta name="tdm-reservation" content="1">')
    reserved = image(
        "/reserved/photo.jpg", skip("tdm-reservation: 1", "/.well-known/tdmrep.json rule '/reserved/*'")
    )
    reopened = image("/reserved/open/photo.jpg", kept_by)
    private = image("/private/photo.jpg", skip(f"Disallow for {AGENT}", "robots.txt of 127.0.0.1"))
    no_gpt = image("/no-gpt/photo.jpg", skip("Disallow for GPTBot", "robots.txt of 127.0.0.1"))
    page("/o/paths.html", "".join(_figure(p) for p in (reserved, reopened, private, no_gpt)) + BY_PAGE)
    routes["/.well-known/tdmrep.json"] = Response(
        json.dumps(
            [
                {
                    "location": "/reserved/*",
                    "tdm-reservation": 1,
                    "tdm-policy": "https://example.org/tdm.json",
                },
                {"location": "/reserved/open/*", "tdm-reservation": 0},
            ]
        ).encode(),
        content_type="application/json",
    )
    routes["/robots.txt"] = Response(
        f"User-agent: {AGENT}\nDisallow: /private/\n\nUser-agent: GPTBot\nDisallow: /no-gpt/\n\n"
        "User-agent: *\nAllow: /\n".encode(),
        content_type="text/plain",
    )

    # licences in each markup form
    a = image("/l/figure-rel.jpg", Expect("done", license="CC-BY-4.0", author="Ana Author"))
    b = image("/l/figure-badge.jpg", Expect("skipped", "licence CC-BY-NC-4.0", license="CC-BY-NC-4.0"))
    routes["/badges/by-nc.png"] = Response(_badge(), content_type="image/png")
    page(
        "/l/figures.html",
        _figure(
            a,
            f'Photo: <a rel="author" href="/ana">Ana Author</a>, <a rel="license" href="{CC}/licenses/by/4.0/">CC BY</a>',
        )
        + _figure(
            b,
            f'<a href="{CC}/licenses/by-nc/4.0/"><img src="/badges/by-nc.png" width="88" height="31" alt="CC BY-NC 4.0"></a>',
        ),
    )
    c = image("/l/json-ld.jpg", Expect("done", license="CC0-1.0", author="Chris Commons"))
    ld = {
        "@context": "https://schema.org",
        "@type": "ImageObject",
        "contentUrl": c,
        "license": f"{CC}/publicdomain/zero/1.0/",
        "acquireLicensePage": "/licensing",
        "creator": {"@type": "Person", "name": "Chris Commons"},
        "creditText": "Chris Commons",
    }
    page("/l/json-ld.html", _figure(c), f'<script type="application/ld+json">{json.dumps(ld)}</script>')
    d = image("/l/page-wide.jpg", Expect("done", license="CC-BY-SA-4.0"))
    page(
        "/l/page-wide.html",
        f'<p><img src="{d}" alt="x" width="400" height="300"></p>'
        f'<footer><a rel="license" href="{CC}/licenses/by-sa/4.0/">CC BY-SA</a></footer>',
    )
    e = image("/l/all-rights.jpg", Expect("skipped", "licence unknown", license="unknown"))
    page("/l/all-rights.html", _figure(e, "© 2026 Bob Photographer. All rights reserved."))
    f = image("/l/none.jpg", Expect("skipped", "licence unknown", license="unknown"))
    page("/l/none.html", _figure(f, "A photo"))
    k = image("/l/article-ld.jpg", Expect("skipped", "licence CC-BY-NC-4.0", license="CC-BY-NC-4.0"))
    article = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "license": f"{CC}/licenses/by-nc/4.0/",
    }
    page(
        "/l/article-ld.html", _figure(k), f'<script type="application/ld+json">{json.dumps(article)}</script>'
    )

    # licences in the file's metadata (the page names none, or only a page-wide one)
    g = image(
        "/f/xmp-by.jpg",
        Expect("done", license="CC-BY-4.0", author="Xavier Xmp"),
        with_xmp(
            jpeg_bytes(_photo(next(counter))), web_statement=f"{CC}/licenses/by/4.0/", creator="Xavier Xmp"
        ),
    )
    h = image(
        "/f/xmp-by-nc.jpg",
        Expect("skipped", "licence CC-BY-NC-4.0", license="CC-BY-NC-4.0"),
        with_xmp(jpeg_bytes(_photo(next(counter))), usage_terms="CC BY-NC 4.0", creator="Nina Noncommercial"),
    )
    i = image(
        "/f/xmp-reserved.jpg",
        Expect("skipped", "licence unknown", license="unknown", author=None),
        with_xmp(
            jpeg_bytes(_photo(next(counter))),
            rights="© Rita Reserved. All rights reserved.",
            creator="Rita Reserved",
        ),
    )
    j = image(
        "/f/iptc-by.jpg",
        Expect("done", license="CC-BY-4.0", author="Ivan Iptc"),
        with_iptc(
            jpeg_bytes(_photo(next(counter))), {80: "Ivan Iptc", 116: "CC BY 4.0", 110: "Ivan Iptc / Agency"}
        ),
    )
    page(
        "/f/files.html",
        "".join(f'<p><img src="{p}" alt="x" width="400" height="300"></p>' for p in (h, i, j)),
    )
    # the file's own licence wins over the page-wide one
    page(
        "/f/xmp-over-page.html",
        f'<p><img src="{g}" alt="x" width="400" height="300"></p>'
        f'<footer><a rel="license" href="{CC}/licenses/by-sa/4.0/">CC BY-SA</a></footer>',
    )

    routes["/index.html"] = html("".join(f'<a href="{p}">{p}</a> ' for p in pages))
    server.routes.update(routes)
    return expect


def _badge() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (88, 31), (170, 170, 170)).save(buffer, "PNG")
    return buffer.getvalue()
