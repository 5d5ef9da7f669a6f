"""Avatars, emoji, site logos and <noscript> counters on real page markup: skipped before download
with the reason their markup gives, while the content photos beside them are fetched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from crawl_helpers import candidates, crawl_config
from loopback_site import Response, html, serve
from PIL import Image, ImageDraw
from skimage import data

from harvest.pages.images import extract_page, markup_junk_reason
from harvest.pages.roles import emoji_reason, is_emoji_text, markup_role_reason, tokens
from harvest.settings.config import HarvestConfig
from harvest.stages.crawl import run_crawl
from harvest.stages.download import run_download
from harvest.stages.extract import run_extract

FIXTURES = Path(__file__).parent / "fixtures" / "html"
CFG = HarvestConfig(
    run_id="r",
    seeds=(),
    labels=(),
    destination="/tmp/unused",
    staging="/tmp/unused",
    database_url="sqlite://",
)


def _jpeg(image: Image.Image) -> Response:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return Response(buffer.getvalue(), content_type="image/jpeg")


def _gif(image: Image.Image) -> Response:
    buffer = io.BytesIO()
    image.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "GIF")
    return Response(buffer.getvalue(), content_type="image/gif")


def _photo(array, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(array).resize(size)


def _face(box: tuple[int, int, int, int]) -> Image.Image:
    """A 73x73 avatar cut from a real portrait."""
    return Image.fromarray(data.astronaut()).crop(box).resize((73, 73))


def _logo() -> Image.Image:
    logo = Image.new("RGB", (300, 90), (0, 51, 102))
    ImageDraw.Draw(logo).text((20, 35), "Joe's Astronomy Corner", fill=(255, 204, 0))
    return logo


def _site(server) -> None:
    server.routes["/"] = html(
        '<a href="/2026/03/coffee-roaster/">post</a> <a href="/@alice">profile</a> '
        '<a href="/astro/photos.html">photos</a>'
    )
    for path, name in (
        ("/2026/03/coffee-roaster/", "wordpress_emoji_post.html"),
        ("/@alice", "social_timeline.html"),
        ("/astro/photos.html", "table_layout.html"),
    ):
        server.routes[path] = Response((FIXTURES / name).read_bytes())
    coffee, cat, astronaut = data.coffee(), data.chelsea(), data.astronaut()
    server.routes["/wp-content/uploads/2026/03/cup.jpg"] = _jpeg(_photo(coffee, (640, 426)))
    server.routes["/wp-content/uploads/2026/03/user-feeding-cat.jpg"] = _jpeg(_photo(cat, (640, 426)))
    server.routes["/media_attachments/files/113/001/original/coffee.jpg"] = _jpeg(_photo(coffee, (600, 400)))
    server.routes["/media_attachments/files/113/002/original/cat.jpg"] = _jpeg(_photo(cat, (451, 300)))
    server.routes["/system/accounts/headers/109/341/original/8c1d.jpg"] = _jpeg(
        Image.fromarray(astronaut).crop((0, 300, 512, 470))
    )
    server.routes["/astro/photos/astronaut.jpg"] = _jpeg(_photo(astronaut, (512, 512)))
    # what the rules skip is served too: a page that fetched it would get a real image
    server.routes["/avatar/3f9e2c/96.png"] = _jpeg(_face((140, 20, 300, 180)).resize((96, 96)))
    for n, name in enumerate(("alice", "bob", "carol")):
        server.routes[f"/media/profile/{name}_bigger.jpg"] = _jpeg(_face((140 + 10 * n, 20, 300, 180)))
    for n in range(2):
        server.routes[
            f"/system/accounts/avatars/{('109/341', '110/002')[n]}/original/{('alice', 'dave')[n]}.jpg"
        ] = _jpeg(_face((150, 30 + n * 5, 290, 170)))
    for suggested in ("44884218_345707102882519", "39882351_221480948516131", "40901755_719440231785331"):
        server.routes[f"/v/t51.2885-19/{suggested}_n.jpg"] = _jpeg(_face((160, 25, 290, 155)))
    server.routes["/astro/images/logo.gif"] = _gif(_logo())
    server.routes["/astro/images/header_right.jpg"] = _jpeg(Image.fromarray(astronaut).crop((0, 0, 512, 96)))


CONTENT = {
    "/wp-content/uploads/2026/03/cup.jpg",
    "/wp-content/uploads/2026/03/user-feeding-cat.jpg",  # its alt mentions a user in a sentence
    "/media_attachments/files/113/001/original/coffee.jpg",
    "/media_attachments/files/113/002/original/cat.jpg",
    "/system/accounts/headers/109/341/original/8c1d.jpg",  # the profile's own header photo
    "/astro/photos/astronaut.jpg",
}
SUGGESTED_CLASS = "xpdipgo x972fbf xcfux6l x1qhh985 xm0m39n xk390pu x5yr21d"
REPEATED = f"repeated small image: 3 images of class '{SUGGESTED_CLASS}' at 73x73 (avatars or icons)"
SKIPPED = {
    "https://s.w.org/images/core/emoji/15.0.3/72x72/1f600.png": "emoji image (by class)",
    "https://s.w.org/images/core/emoji/2.2.1/72x72/1f642.png": "emoji image (by class)",
    "https://s.w.org/images/core/emoji/15.0.3/72x72/2615.png": "emoji image (by class)",
    "/avatar/3f9e2c/96.png": "avatar or profile picture (by class)",
    "/system/accounts/avatars/109/341/original/alice.jpg": "avatar or profile picture (by class)",
    "/system/accounts/avatars/110/002/original/dave.jpg": "avatar or profile picture (by class)",
    **{
        f"/media/profile/{name}_bigger.jpg": "avatar or profile picture (by class)"
        for name in ("alice", "bob", "carol")
    },
    **{
        f"/v/t51.2885-19/{suggested}_n.jpg?_nc_ht=cdn&stp=dst-jpg_s150x150": REPEATED
        for suggested in ("44884218_345707102882519", "39882351_221480948516131", "40901755_719440231785331")
    },
    "/astro/images/logo.gif": "site logo (by file name)",
    "/astro/images/header_right.jpg": "page header graphic (by file name)",
    "/astro/images/home.gif": "declared size 120x40 below minimum 64x64",
    "/astro/images/spacer.gif": "lazy-load placeholder without a real image URL",
    "/counter/counter.php?invisible=1&java=0&sc_project=1234567&security=ab12cd34": (
        "tracking pixel in <noscript> (not an image file)"
    ),
    "/matomo/matomo.php?idsite=1&rec=1": "tracking pixel in <noscript> (not an image file)",
    "https://stats.example/pixel.gif?id=1": "declared size 1x1 below minimum 64x64",
}


def test_avatars_emoji_logos_and_counters_are_skipped_and_photos_downloaded(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_HOST_DELAY="0", HARVEST_SHARDS="1")
        run_crawl(cfg)
        run_extract(cfg)
        found = candidates(cfg, server.base)
        skipped = {path: row.error for path, row in found.items() if row.status == "skipped"}
        pending = {path for path, row in found.items() if row.status == "pending"}
        assert skipped == SKIPPED
        assert pending == CONTENT
        server.hits.clear()
        report = run_download(cfg, 0)
        fetched = {hit.path for hit in server.hits}
    assert report.done == len(CONTENT)
    assert {path for path, row in candidates(cfg, server.base).items() if row.status == "done"} == CONTENT
    # none of the skipped images was requested: no avatar, no counter hit
    assert fetched - {"/robots.txt"} == CONTENT


@pytest.mark.parametrize(
    "snippet, reason",
    [
        # Discourse and GitHub write the shortcode as the alt of an emoji image
        (
            '<img src="/images/emoji/twitter/smile.png?v=12" title=":smile:" alt=":smile:">',
            "emoji image (by URL)",
        ),
        ('<img src="https://twemoji.maxcdn.com/v/14.0.2/72x72/1f44d.png" alt="👍">', "emoji image (by URL)"),
        (
            '<img src="/static/reactions/heart-eyes.png" alt="😍" width="72" height="72">',
            "emoji image (alt is an emoji)",
        ),
        ('<img src="/static/reactions/family.png" alt="👨‍👩‍👧">', "emoji image (alt is an emoji)"),
        (
            '<img src="https://secure.gravatar.com/avatar/8a7f?s=96&d=mm" alt="" width="96" height="96">',
            "avatar or profile picture (gravatar)",
        ),
        (
            '<img src="/uploads/u/91/x.jpg" alt="Marta\'s profile picture">',
            "avatar or profile picture (by alt text)",
        ),
        (
            '<div class="author-box"><img class="user-photo" src="/u/91.jpg" width="80" height="80"></div>',
            "avatar or profile picture (class names a profile picture, declared 80x80)",
        ),
        (
            '<a class="navbar-brand" href="https://shop.example/"><img src="/assets/brand.png" alt="Shop"></a>',
            "site logo (by class or id)",
        ),
        (
            '<a href="https://shop.example/"><img src="/assets/x.png" alt="Shop"></a>',
            "site logo (links to the site's home page)",
        ),
        ('<img src="/img/acme.png" alt="ACME logo">', "site logo (by alt text)"),
    ],
)
def test_role_rules_on_real_world_snippets(snippet, reason):
    page = extract_page(
        f"<html><body><main><p>Text</p>{snippet}</main></body></html>", "https://shop.example/a/b"
    )
    assert [markup_junk_reason(item, CFG) for item in page.items] == [reason]


@pytest.mark.parametrize(
    "snippet",
    [
        # sentences that merely mention users, profiles, logos or emoji are descriptions of a photo
        '<img src="/p/ducks.jpg" alt="A user feeding the ducks in the park on a cold morning">',
        '<img src="/p/heron.jpg" alt="Side profile photo of a grey heron standing in the reeds">',
        '<img src="/p/sign.jpg" alt="The old brewery logo painted on a brick wall in 1920">',
        '<img src="/p/userland.jpg" alt="Userland festival crowd" width="800" height="600">',
        '<a href="/a/c"><img src="/p/emojis-on-a-shirt.jpg" alt="Shirt"></a>',  # file name token test below
        '<img class="wp-image-12 size-large" src="/uploads/2026/03/profile-of-the-valley.jpg" width="1024" height="683">',
        '<noscript><img src="/uploads/2026/03/lazy-photo.jpg" alt="Lazy loaded photo"></noscript>',
    ],
)
def test_content_photos_whose_markup_only_mentions_a_word_are_kept(snippet):
    page = extract_page(f"<html><body><main>{snippet}</main></body></html>", "https://shop.example/a/b")
    assert [markup_junk_reason(item, CFG) for item in page.items] == [None]


def test_tokens_are_words_not_substrings():
    assert "logo" in tokens("custom-logo-link") and "avatar" in tokens("account__avatar")
    assert "logo" not in tokens("logotherapy-session") and "avatar" not in tokens("avatarium")
    assert is_emoji_text("😀") and is_emoji_text("☕") and is_emoji_text("👍🏽")
    assert not is_emoji_text("Smile") and not is_emoji_text("A 😀 face") and not is_emoji_text("")
    assert emoji_reason("https://example.com/emojis-on-a-shirt.jpg", "Shirt", set()) is None
    assert (
        markup_role_reason(None, "https://example.com/a.jpg", None, None, None, "https://example.com/", False)
        is None
    )
