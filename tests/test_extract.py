"""Image discovery in HTML: the best URL for every image a page shows, each listed once."""

from __future__ import annotations

import pytest

from harvest.pages.images import Found, find_images, markup_junk_reason
from harvest.pages.srcset import best_from_srcset
from harvest.settings.config import HarvestConfig
from harvest.urls import shard_of

PAGE = "http://example.com/gallery/page.html"


def urls(html: str, page: str = PAGE) -> list[str]:
    return [item.url for item in find_images(html, page)]


def only(html: str, page: str = PAGE) -> Found:
    [item] = find_images(html, page)
    return item


def test_img_src_is_resolved_against_the_page():
    item = only('<img src="cat.jpg" alt="  A   cat " title="Chelsea" width="120px" height="90">')
    assert item == Found(
        url="http://example.com/gallery/cat.jpg",
        source="img",
        alt="A cat",
        title="Chelsea",
        width=120,
        height=90,
    )


def test_bytes_input_is_accepted():
    assert urls(b'<img src="/a.jpg">') == ["http://example.com/a.jpg"]


def test_non_numeric_sizes_are_ignored():
    item = only('<img src="a.jpg" width="100%" height="auto">')
    assert (item.width, item.height) == (None, None)


def test_srcset_picks_the_largest_width_descriptor():
    item = only('<img src="s.jpg" srcset="s.jpg 300w, l.jpg 1200w, m.jpg 600w">')
    assert item.url == "http://example.com/gallery/l.jpg"
    assert item.source == "srcset"


def test_srcset_picks_the_largest_density_descriptor():
    assert urls('<img src="a.jpg" srcset="a.jpg 1x, c.jpg 3x, b.jpg 2x">') == [
        "http://example.com/gallery/c.jpg"
    ]


def test_lazy_data_srcset_beats_placeholder_src():
    item = only('<img src="blank.gif" data-srcset="x.jpg 200w, y.jpg 400w">')
    assert (item.url, item.source) == ("http://example.com/gallery/y.jpg", "data-srcset")


@pytest.mark.parametrize("attribute", ["data-src", "data-original", "data-lazy-src"])
def test_lazy_src_beats_placeholder_src(attribute):
    item = only(f'<img class="lazy" src="placeholder.gif" {attribute}="real.jpg" alt="lazy">')
    assert (item.url, item.source, item.alt) == ("http://example.com/gallery/real.jpg", attribute, "lazy")


def test_picture_source_is_preferred_and_the_fallback_img_is_not_listed():
    html = """<picture>
        <source type="image/jpeg" srcset="big.jpg 1600w, medium.jpg 800w">
        <img src="fallback.jpg" alt="A palace">
    </picture>"""
    item = only(html)
    assert item.url == "http://example.com/gallery/big.jpg"
    assert item.source == "picture"
    assert item.alt == "A palace"


def test_picture_without_source_falls_back_to_its_img():
    assert urls('<picture><img src="only.jpg"></picture>') == ["http://example.com/gallery/only.jpg"]


def test_linked_thumbnail_yields_the_full_image_with_the_thumbnail_alt():
    item = only('<a href="full.jpg" title="link"><img src="thumb.jpg" alt="Grace Hopper" width="96"></a>')
    assert item.url == "http://example.com/gallery/full.jpg"
    assert item.source == "a[href]"
    assert item.alt == "Grace Hopper"
    assert item.width is None  # the thumbnail's size says nothing about the full image


def test_image_inside_a_link_to_a_page_is_kept():
    assert urls('<a href="next.html"><img src="thumb.jpg"></a>') == ["http://example.com/gallery/thumb.jpg"]


@pytest.mark.parametrize("prop", ['property="og:image"', 'property="og:image:url"', 'name="twitter:image"'])
def test_social_preview_images(prop):
    item = only(f'<html><head><meta {prop} content="/share.jpg"></head><body></body></html>')
    assert item.url == "http://example.com/share.jpg"


def test_unrelated_meta_tags_are_ignored():
    assert urls('<meta property="og:title" content="/not-an-image.jpg"><meta name="description">') == []


def test_base_href_is_honoured():
    html = '<head><base href="https://cdn.example.net/assets/"></head><img src="x.jpg"><img src="/y.jpg">'
    assert urls(html) == ["https://cdn.example.net/assets/x.jpg", "https://cdn.example.net/y.jpg"]


def test_relative_base_href_is_resolved_against_the_page():
    assert urls('<base href="../static/"><img src="x.jpg">') == ["http://example.com/static/x.jpg"]


def test_data_uris_are_ignored():
    html = """<img src="data:image/png;base64,iVBORw0KGgo=">
        <img src=" DATA:image/gif;base64,R0lGOD">
        <img data-src="data:image/gif;base64,R0lGOD" src="real.jpg">"""
    assert urls(html) == []


def test_non_http_urls_and_empty_src_are_ignored():
    assert (
        urls('<img src="javascript:alert(1)"><img src=""><img alt="no src"><img src="ftp://x/a.jpg">') == []
    )


def test_duplicate_urls_are_merged_keeping_what_each_mention_knows():
    html = """<head><meta property="og:image" content="/gallery/cat.jpg"></head>
        <body><img src="cat.jpg#zoom" alt="The cat" width="640" height="480">
        <img src="http://EXAMPLE.com:80/gallery/cat.jpg?utm_source=x" title="again"></body>"""
    item = only(html)
    assert item.url == "http://example.com/gallery/cat.jpg"
    assert item.source == "og:image"
    assert item.alt == "The cat"
    assert item.title == "again"
    assert (item.width, item.height) == (640, 480)


def test_linked_full_image_also_shown_inline_is_listed_once():
    html = '<a href="full.jpg"><img src="thumb.jpg" alt="thumb"></a><img src="full.jpg" alt="inline">'
    item = only(html)
    assert (item.url, item.alt) == ("http://example.com/gallery/full.jpg", "thumb")


def test_every_kind_of_image_on_one_page_is_found_once():
    html = """<head><meta property="og:image" content="og.jpg"></head>
        <body><img src="one.jpg"><a href="big.png"><img src="small.png"></a>
        <picture><source srcset="wide.webp 2x"><img src="narrow.jpg"></picture>
        <img src="blank.gif" data-src="lazy.jpg"><img src="two.jpg" srcset="two-2x.jpg 2x"></body>"""
    assert sorted(urls(html)) == [
        f"http://example.com/gallery/{name}"
        for name in ["big.png", "lazy.jpg", "og.jpg", "one.jpg", "two-2x.jpg", "wide.webp"]
    ]


def test_sloppy_html_is_still_read():
    html = '<div><IMG SRC="a.jpg"<p><img src=b.jpg></div></span><p>unclosed'
    assert urls(html) == ["http://example.com/gallery/a.jpg", "http://example.com/gallery/b.jpg"]


def test_found_images_do_not_keep_their_page_in_memory():
    """The extract stage holds every page's findings until the run's last page is read; a parsed
    page kept alive by them would make its memory grow with the whole crawl."""
    import gc

    from bs4 import Tag

    def live_tags() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if isinstance(obj, Tag))

    html = "".join(
        f'<figure><img src="{n}.jpg" alt="a"><figcaption>c</figcaption></figure>' for n in range(50)
    )
    before = live_tags()
    items = find_images(html, PAGE)
    assert len(items) == 50 and items[0].caption == "c"
    assert live_tags() <= before


@pytest.mark.parametrize(
    ("srcset", "expected"),
    [
        ("a.jpg", "a.jpg"),
        ("a.jpg 100w", "a.jpg"),
        ("a.jpg 100w,b.jpg 200w", "b.jpg"),
        ("  a.jpg   100w ,   b.jpg   50w  ", "a.jpg"),
        ("a.jpg 1x, b.jpg 1.5x", "b.jpg"),
        ("a.jpg, b.jpg 2x", "b.jpg"),
        ("a.jpg 300w, b.jpg", "a.jpg"),
        ("a.jpg 500w, b.jpg 500w", "a.jpg"),
        ("a.jpg junk, b.jpg 10w", "b.jpg"),
        ("a.jpg 200w,", "a.jpg"),
    ],
)
def test_best_from_srcset(srcset, expected):
    assert best_from_srcset(srcset) == expected


@pytest.mark.parametrize("srcset", ["", "   ", " , ,, "])
def test_best_from_empty_srcset_is_none(srcset):
    assert best_from_srcset(srcset) is None


def test_best_from_srcset_keeps_commas_inside_urls():
    srcset = (
        "https://res.cloudinary.com/demo/image/upload/w_400,c_fill/cat.jpg 400w, "
        "https://res.cloudinary.com/demo/image/upload/w_800,c_fill/cat.jpg 800w"
    )
    assert best_from_srcset(srcset) == "https://res.cloudinary.com/demo/image/upload/w_800,c_fill/cat.jpg"


def test_shard_of_is_stable_and_in_range():
    urls_ = [f"http://example.com/img/{i}.jpg" for i in range(2000)]
    shards = [shard_of(u, 4) for u in urls_]
    assert set(shards) == {0, 1, 2, 3}
    assert all(300 < shards.count(s) < 700 for s in range(4))
    assert shards == [shard_of(u, 4) for u in urls_]
    assert all(0 <= shard_of(u, 7) < 7 for u in urls_)
    assert {shard_of(u, 1) for u in urls_} == {0}


@pytest.mark.parametrize(
    ("url", "shard"),
    [
        ("http://example.com/a.jpg", 54),
        ("http://example.com/b.jpg", 230),
        ("https://example.org/photos/cat.png", 124),
    ],
)
def test_shard_of_is_the_same_in_every_process(url, shard):
    # pinned values: a per-process hash() (PYTHONHASHSEED) would send a retried shard other rows
    assert shard_of(url, 256) == shard


def config(min_width: int = 64, min_height: int = 64) -> HarvestConfig:
    return HarvestConfig(
        run_id="r",
        seeds=(),
        labels=(),
        destination="/tmp/unused",
        staging="/tmp/unused",
        database_url="sqlite://",
        min_width=min_width,
        min_height=min_height,
    )


@pytest.mark.parametrize(
    "url", ["http://example.com/logo.svg", "http://example.com/LOGO.SVG", "http://example.com/i.svg?v=3"]
)
def test_svg_is_skipped(url):
    assert markup_junk_reason(Found(url, "img"), config()) == "SVG images are not harvested"


@pytest.mark.parametrize(("width", "height"), [(1, 1), (24, 24), (63, 500), (500, 63)])
def test_declared_tiny_size_is_skipped(width, height):
    reason = markup_junk_reason(
        Found("http://example.com/a.jpg", "img", width=width, height=height), config()
    )
    assert reason == f"declared size {width}x{height} below minimum 64x64"


@pytest.mark.parametrize(("width", "height"), [(64, 64), (None, None), (10, None), (None, 10), (800, 600)])
def test_large_or_undeclared_size_is_not_skipped(width, height):
    item = Found("http://example.com/a.jpg", "img", width=width, height=height)
    assert markup_junk_reason(item, config()) is None


def test_skip_uses_the_configured_minimum():
    item = Found("http://example.com/a.jpg", "img", width=100, height=100)
    assert markup_junk_reason(item, config(min_width=200, min_height=50)) == (
        "declared size 100x100 below minimum 200x50"
    )


def test_srcset_variants_are_remembered_with_their_descriptors():
    item = only('<img src="s.jpg" srcset="s.jpg 300w, l.jpg 1200w, m.jpg 600w" width="300" height="200">')
    assert item.url == "http://example.com/gallery/l.jpg"
    assert item.variants == [
        {"url": "http://example.com/gallery/m.jpg", "descriptor": "600w"},
        {"url": "http://example.com/gallery/s.jpg", "descriptor": "300w"},
    ]
    assert (item.width, item.height) == (1200, None)  # the w descriptor, not the display size


def test_a_smaller_rendition_shown_elsewhere_is_folded_into_its_image():
    html = '<img srcset="s.jpg 300w, l.jpg 1200w" alt="big"><p><img src="s.jpg" alt="small copy"></p>'
    assert urls(html) == ["http://example.com/gallery/l.jpg"]


@pytest.mark.parametrize("attribute", ["data-srcset", "data-lazy-srcset"])
def test_lazy_srcset_attributes(attribute):
    item = only(f'<img src="data:image/gif;base64,R0lGOD" {attribute}="a.jpg 1x, b.jpg 2x" loading="lazy">')
    assert item.url == "http://example.com/gallery/b.jpg"
    assert item.variants == [{"url": "http://example.com/gallery/a.jpg", "descriptor": "1x"}]


def test_loading_lazy_placeholder_alone_is_junk():
    item = only('<img src="/img/lazy-placeholder.gif" loading="lazy" alt="x">')
    assert item.junk == "lazy-load placeholder without a real image URL"
    assert markup_junk_reason(item, config()) == item.junk


def test_data_uri_only_image_yields_nothing_but_is_counted():
    from harvest.pages.images import extract_page

    page = extract_page('<img src="data:image/png;base64,iVBOR" alt="inline">', PAGE)
    assert (page.items, page.data_uris) == ([], 1)


def test_twitter_and_og_secure_url_meta():
    html = """<meta name="twitter:image:src" content="/t.jpg">
        <meta property="og:image:secure_url" content="https://example.com/s.jpg">"""
    assert sorted(urls(html)) == ["http://example.com/t.jpg", "https://example.com/s.jpg"]


def test_json_ld_images_in_every_shape():
    html = """<script type="application/ld+json">
        {"@context": "https://schema.org", "@graph": [
          {"@type": "NewsArticle", "image": ["/a.jpg", {"@type": "ImageObject", "url": "/b.jpg"}],
           "publisher": {"@type": "Organization", "logo": {"@type": "ImageObject", "url": "/logo.png"}}},
          {"@type": "Recipe", "image": {"@type": "ImageObject", "contentUrl": "/c.jpg"}}]}
        </script><script type="application/ld+json">{"image": "/d.jpg"}</script>
        <script type="application/ld+json">{not json</script>"""
    assert sorted(urls(html)) == [f"http://example.com/{n}.jpg" for n in "abcd"]


def test_inline_background_images():
    html = """<div class="hero" style="background-image: url('/hero.jpg'); color: red" aria-label="Hero"></div>
        <section style='background: #000 url("bg.png") no-repeat'></section>
        <span style="color: blue"></span>"""
    items = find_images(html, PAGE)
    assert [i.url for i in items] == ["http://example.com/hero.jpg", "http://example.com/gallery/bg.png"]
    assert items[0].source == "style" and items[0].alt == "Hero"


def test_noscript_fallback_gives_the_real_image_of_a_script_only_lazy_loader():
    html = """<p><img class="js-lazy" data-anything="x" src="/static/blank.gif" alt="Lazy">
        <noscript><img src="/photos/real.jpg" alt="Lazy"></noscript></p>"""
    items = {i.url: i for i in find_images(html, PAGE)}
    assert items["http://example.com/photos/real.jpg"].junk is None
    assert items["http://example.com/static/blank.gif"].junk is not None


def test_picture_prefers_a_format_we_can_keep_and_remembers_the_others():
    html = """<picture>
        <source type="image/avif" srcset="/p.avif 1x, /p@2x.avif 2x">
        <source type="image/webp" srcset="/p.webp 1x, /p@2x.webp 2x">
        <img src="/p.jpg" alt="P"></picture>"""
    item = only(html)
    assert (item.url, item.source, item.alt) == ("http://example.com/p@2x.webp", "picture", "P")
    assert [v["url"].rsplit("/", 1)[1] for v in item.variants] == ["p@2x.avif", "p.avif", "p.webp", "p.jpg"]
    assert item.variants[0]["descriptor"] == "image/avif"


def test_favicons_and_touch_icons_are_listed_as_junk():
    html = """<link rel="icon" href="/favicon.png"><link rel="shortcut icon" href="/favicon.ico">
        <link rel="apple-touch-icon" href="/touch.png"><link rel="stylesheet" href="/s.css">
        <link rel="image_src" href="/share.jpg">"""
    items = {i.url.rsplit("/", 1)[1]: i for i in find_images(html, PAGE)}
    assert sorted(items) == ["favicon.ico", "favicon.png", "share.jpg", "touch.png"]
    assert items["touch.png"].junk == "favicon or touch icon (rel=apple-touch-icon)"
    assert items["favicon.ico"].junk.startswith("favicon or touch icon")
    assert items["share.jpg"].junk is None


def test_caption_and_nearby_text_are_kept():
    html = """<article><h2>Cats</h2><p>Our cat Chelsea likes to sleep in the sun all afternoon.
        <img src="/c.jpg" alt="Chelsea" title="Sleeping"></p>
        <figure><img src="/f.jpg" alt="F"><figcaption>A  flower in May</figcaption></figure>
        <div class="wp-caption"><img src="/w.jpg"><p class="wp-caption-text">A WordPress caption</p></div></article>"""
    items = {i.url.rsplit("/", 1)[1]: i for i in find_images(html, PAGE)}
    assert items["c.jpg"].nearby_text == "Our cat Chelsea likes to sleep in the sun all afternoon."
    assert (items["c.jpg"].alt, items["c.jpg"].title) == ("Chelsea", "Sleeping")
    assert items["f.jpg"].caption == "A flower in May"
    assert items["w.jpg"].caption == "A WordPress caption"


def test_images_in_header_nav_footer_are_marked_as_chrome():
    html = """<header><img src="/logo.png"></header><div role="navigation"><img src="/nav.png"></div>
        <main><img src="/content.jpg"></main><footer><img src="/badge.png"></footer>"""
    chrome = {i.url.rsplit("/", 1)[1]: i.in_chrome for i in find_images(html, PAGE)}
    assert chrome == {"logo.png": True, "nav.png": True, "content.jpg": False, "badge.png": True}


def test_chrome_images_repeated_on_most_pages_of_a_site():
    from harvest.pages.images import chrome_images

    logo = Found("http://a.example/logo.png", "img", in_chrome=True)
    once = Found("http://a.example/header-photo.jpg", "img", in_chrome=True)
    content = Found("http://a.example/cat.jpg", "img")
    pages = [(f"http://a.example/{i}.html", [logo, content] + ([once] if i == 0 else [])) for i in range(4)]
    pages.append(("http://b.example/x.html", [Found("http://b.example/logo.png", "img", in_chrome=True)]))
    assert chrome_images(pages) == {
        "http://a.example/logo.png": "site chrome: in header/nav/footer on 4 of 4 pages"
    }


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/t/pixel.gif", "tracking pixel or spacer (by file name)"),
        ("http://example.com/img/spacer.gif?x=1", "tracking pixel or spacer (by file name)"),
        ("http://example.com/css/icons-sprite.png", "CSS sprite sheet"),
        ("http://example.com/img/Sprite_2x.png", "CSS sprite sheet"),
    ],
)
def test_trackers_and_sprites_by_name(url, reason):
    assert markup_junk_reason(Found(url, "img"), config()) == reason


def test_svg_is_kept_when_asked_for():
    cfg = config().with_(allow_svg=True)
    assert markup_junk_reason(Found("http://example.com/a.svg", "img"), cfg) is None


def test_tiny_largest_srcset_width_is_skipped():
    item = only('<img srcset="a.jpg 20w, b.jpg 40w">')
    assert markup_junk_reason(item, config()) == "largest srcset width 40 below minimum width 64"
