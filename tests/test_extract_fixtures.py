"""Hand-written pages in the style of real CMS output; each must yield exactly its expected images.

Kept: fetched by the download stage. Skipped: recorded with the reason, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest.pages.images import Found, extract_page, markup_junk_reason
from harvest.settings.config import HarvestConfig

FIXTURES = Path(__file__).parent / "fixtures" / "html"
CFG = HarvestConfig(
    run_id="r",
    seeds=(),
    labels=(),
    destination="/tmp/unused",
    staging="/tmp/unused",
    database_url="sqlite://",
)

WP = "https://greenthumb.example/wp-content/uploads/"
NEWS = "https://cdn.dailyledger.example/"
WIKI = "https://upload.freepedia.example/commons/thumb/"

EXPECTED = {
    "wordpress_post.html": (
        "https://greenthumb.example/2026/04/our-garden-in-spring/",
        {
            WP + "2026/04/tulips-1200x630.jpg": "og:image",
            WP + "2026/04/tulips.jpg": "json-ld",  # also the largest srcset entry of the featured image
            WP + "2026/04/shed.jpg": "a[href]",
            WP + "2026/04/bee.jpg": "srcset",
            WP + "2026/04/fern.jpg": "srcset",
            WP + "2026/04/pond-1024x683.jpg": "img",
        },
        {
            WP + "2025/01/cropped-icon-32x32.png": "favicon or touch icon (rel=icon)",
            WP + "2025/01/cropped-icon-192x192.png": "favicon or touch icon (rel=icon)",
            WP + "2025/01/cropped-icon-180x180.png": "favicon or touch icon (rel=apple-touch-icon)",
            "https://s.w.org/images/core/emoji/15.0.3/svg/1f331.svg": "SVG images are not harvested",
            "https://greenthumb.example/wp-content/plugins/share/icons/facebook.png": (
                "declared size 16x16 below minimum 64x64"
            ),
            "https://pixel.wp.com/g.gif?blog=1234&post=412": "declared size 6x5 below minimum 64x64",
            # the theme's logo and a commenter's gravatar: what their markup says they are
            WP + "2025/01/logo.png": "site logo (by class or id)",
            "https://secure.gravatar.com/avatar/8a7f?d=mm&r=g&s=120": "avatar or profile picture (by class)",
        },
        0,
    ),
    "news_lazy.html": (
        "https://www.dailyledger.example/news/2026/11/tiger-cubs",
        {
            NEWS + "images/w_1200,h_630,c_fill/tiger-cubs.jpg": "og:image",
            NEWS + "images/w_2000/tiger-cubs.jpg": "json-ld",
            NEWS + "authors/keeper.jpg": "json-ld",
            NEWS + "images/w_1600/tiger-cubs.webp": "picture",
            NEWS + "images/w_1200/tiger-mother.jpg": "data-lazy-srcset",
            NEWS + "images/w_1000/keeper-feeding.jpg": "data-original",
            NEWS + "images/w_160,h_90/zoo-expansion.jpg": "img",
            NEWS + "video/posters/cubs-video.jpg": "style",
        },
        {
            "https://www.dailyledger.example/favicon.ico": "favicon or touch icon (rel=icon shortcut)",
            "https://www.dailyledger.example/apple-touch-icon.png": "favicon or touch icon (rel=apple-touch-icon)",
            "https://www.dailyledger.example/static/ledger-logo.svg": "SVG images are not harvested",
            "https://www.dailyledger.example/static/ui-sprite.png": "CSS sprite sheet",
            NEWS + "images/w_48,h_48/lion-pride-thumb.jpg": "declared size 48x48 below minimum 64x64",
            "https://metrics.dailyledger.example/pixel.gif?page=tiger-cubs": "tracking pixel or spacer (by file name)",
            "https://www.facebook.example/tr?ev=PageView&id=12345&noscript=1": "declared size 1x1 below minimum 64x64",
        },
        0,  # the data: placeholder of the lazy <img> is not an image of its own
    ),
    "wiki_infobox.html": (
        "https://en.freepedia.example/wiki/Goldfish",
        {
            WIKI + "e/e9/Goldfish3.jpg/1200px-Goldfish3.jpg": "og:image",
            WIKI + "e/e9/Goldfish3.jpg/500px-Goldfish3.jpg": "srcset",
            WIKI + "a/a1/Goldfish_varieties.jpg/440px-Goldfish_varieties.jpg": "srcset",
            WIKI + "3/3c/Comet_goldfish.jpg/120px-Comet_goldfish.jpg": "img",
        },
        {
            "https://en.freepedia.example/static/favicon/wikipedia.ico": "favicon or touch icon (rel=icon)",
            "https://en.freepedia.example/static/apple-touch/wikipedia.png": (
                "favicon or touch icon (rel=apple-touch-icon)"
            ),
            "https://en.freepedia.example/static/images/icons/freepedia.png": "declared size 50x50 below minimum 64x64",
            WIKI + "f/f7/Status_iucn3.1_LC.svg/220px-Status_iucn3.1_LC.svg.png": (
                "declared size 220x48 below minimum 64x64"
            ),
            WIKI
            + "7/74/Red_Pencil_Icon.png/16px-Red_Pencil_Icon.png": "declared size 16x16 below minimum 64x64",
            WIKI + "b/b2/Bubble_eye.jpg/120px-Bubble_eye.jpg": "declared size 120x57 below minimum 64x64",
            WIKI + "0/0d/Fish_icon.svg/28px-Fish_icon.svg.png": "declared size 28x20 below minimum 64x64",
            "https://en.freepedia.example/static/images/footer/freepedia-button.svg": "SVG images are not harvested",
            "https://en.freepedia.example/w/resources/assets/poweredby_mediawiki.svg": "SVG images are not harvested",
            "https://login.freepedia.example/wiki/Special:CentralAutoLogin/start?type=1x1": (
                "declared size 1x1 below minimum 64x64"
            ),
        },
        0,
    ),
}


def _extract(name: str) -> tuple[dict[str, Found], dict[str, str], int]:
    page_url = EXPECTED[name][0]
    page = extract_page((FIXTURES / name).read_bytes(), page_url)
    kept = {item.url: item for item in page.items if markup_junk_reason(item, CFG) is None}
    skipped = {
        item.url: markup_junk_reason(item, CFG) for item in page.items if markup_junk_reason(item, CFG)
    }
    return kept, skipped, page.data_uris


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_yields_exactly_the_expected_images(name):
    _, kept_expected, skipped_expected, data_uris = EXPECTED[name]
    kept, skipped, found_data_uris = _extract(name)
    assert {url: item.source for url, item in kept.items()} == kept_expected
    assert skipped == skipped_expected
    assert found_data_uris == data_uris


def test_wordpress_metadata_and_variants():
    kept, _, _ = _extract("wordpress_post.html")
    tulips = kept[WP + "2026/04/tulips.jpg"]
    assert tulips.alt == "Red tulips in the morning light"
    assert [v["descriptor"] for v in tulips.variants] == ["1024w", "768w", "300w"]
    assert tulips.nearby_text == "Our Garden in Spring"
    bee = kept[WP + "2026/04/bee.jpg"]
    assert bee.caption == "A honey bee visiting the daisies by the shed."
    assert bee.alt == "A bee on a daisy" and bee.width == 1600
    shed = kept[WP + "2026/04/shed.jpg"]
    assert shed.caption == "The shed, freshly painted."
    assert shed.variants == [{"url": WP + "2026/04/shed-640x480.jpg", "descriptor": "thumbnail"}]
    page = extract_page((FIXTURES / "wordpress_post.html").read_bytes(), EXPECTED["wordpress_post.html"][0])
    assert next(item for item in page.items if item.url == WP + "2025/01/logo.png").in_chrome is True
    assert kept[WP + "2026/04/fern.jpg"].caption is None  # the gallery item has no caption of its own


def test_news_lazy_loading_metadata():
    kept, _, _ = _extract("news_lazy.html")
    lead = kept[NEWS + "images/w_1600/tiger-cubs.webp"]
    assert lead.alt == "Two white tiger cubs asleep on straw"
    assert lead.caption == "The two cubs, born on 2 November, sleep most of the day. Photo: City Zoo"
    assert {v["url"] for v in lead.variants} == {
        NEWS + "images/w_1600/tiger-cubs.avif",
        NEWS + "images/w_800/tiger-cubs.avif",
        NEWS + "images/w_800/tiger-cubs.webp",
        NEWS + "images/w_800/tiger-cubs.jpg",
    }
    mother = kept[NEWS + "images/w_1200/tiger-mother.jpg"]
    assert mother.caption == "Sita, the cubs' mother, came to the zoo in 2019."
    assert mother.nearby_text.startswith("Keepers at the city zoo are celebrating")
    assert mother.variants == [{"url": NEWS + "images/w_600/tiger-mother.jpg", "descriptor": "600w"}]
    assert kept[NEWS + "video/posters/cubs-video.jpg"].title == "Watch: the cubs' first week"


def test_wiki_infobox_metadata():
    kept, _, _ = _extract("wiki_infobox.html")
    lead = kept[WIKI + "e/e9/Goldfish3.jpg/500px-Goldfish3.jpg"]
    assert lead.caption == "A common goldfish in an aquarium"
    assert (lead.width, lead.height) == (500, 376)  # 250x188 at 2x
    varieties = kept[WIKI + "a/a1/Goldfish_varieties.jpg/440px-Goldfish_varieties.jpg"]
    assert varieties.caption == "Several goldfish varieties side by side"
    assert varieties.nearby_text.startswith("The goldfish ( Carassius auratus ) is a freshwater fish")
    assert kept[WIKI + "3/3c/Comet_goldfish.jpg/120px-Comet_goldfish.jpg"].caption == "Comet"
