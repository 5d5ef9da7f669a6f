"""The gallery in a real browser: thumbnails render, filters and the threshold slider change what is
shown and counted, the metadata panel opens. Screenshots for the README are taken here."""

from __future__ import annotations

import requests
from conftest import free_port

from harvest_ui.app import create_app

from .browser import chromium, looks_like_a_photo, screenshot, screenshot_dir, serve_app
from .conftest import RUN_ALL_LABELS

ALL_THUMBNAILS_DRAWN = """() => {
  const images = [...document.querySelectorAll('#grid img.thumb')];
  return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
}"""


def _cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#grid .card",
        "cards => cards.map(c => ({id: c.dataset.id, status: c.dataset.status, label: c.querySelector('.meta .label').textContent}))",
    )


def _wait_for_grid_change(page, before: str) -> None:
    page.wait_for_function(
        "(before) => document.querySelector('#summary').textContent !== before", arg=before
    )


def test_gallery_in_headless_chromium(harvested, tmp_path):
    shots = screenshot_dir(tmp_path)
    with serve_app(create_app(harvested.settings()), free_port()) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        page.wait_for_selector("#grid .card")

        # one run: every downloaded image of it has a thumbnail the browser could decode
        before = page.text_content("#summary")
        page.select_option("#run", RUN_ALL_LABELS)
        _wait_for_grid_change(page, before)
        page.wait_for_function(ALL_THUMBNAILS_DRAWN, timeout=20_000)
        run_items = requests.get(f"{base}/api/items", params={"run": RUN_ALL_LABELS, "limit": 1000}).json()
        cards = _cards(page)
        assert len(cards) == run_items["total"]
        # skipped and failed candidates are counts, not cards, until asked for
        assert not {c["status"] for c in cards} & {"skipped", "failed"}
        assert run_items["collapsed"]["failed"] >= 1
        with_bytes = [i for i in run_items["items"] if i["sha256"] and i["status"] != "failed"]
        widths = page.eval_on_selector_all("#grid img.thumb", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == len(with_bytes) and min(widths) > 0
        # and the browser really drew them: every kept card's pixels are a photo, not a blank box
        for thumb in page.locator("#grid .card.kept img.thumb").all():
            assert looks_like_a_photo(thumb.screenshot())
        # every card lists the runs that found its image, by the names Airflow gives them
        assert set(page.eval_on_selector_all("#grid .card .runs", "rs => rs.map(r => r.textContent)")) == {
            RUN_ALL_LABELS
        }
        assert f"{run_items['collapsed']['failed']} failed" in page.text_content("#collapsed")
        before = page.text_content("#summary")
        page.click("#collapsed button[data-status=failed]")
        _wait_for_grid_change(page, before)
        assert not looks_like_a_photo(page.locator("#grid .card.failed .nothumb").first.screenshot())
        assert len(_cards(page)) == run_items["total"] + run_items["collapsed"]["failed"]
        for status in ("failed", "skipped"):  # back to the default view
            page.locator(f"#statuses input[value={status}]").set_checked(False)
        page.locator("#statuses input[value=kept]").set_checked(False)
        for status in ("rejected", "duplicate", "unclassified", "pending"):
            page.locator(f"#statuses input[value={status}]").set_checked(False)
        page.wait_for_function("(n) => document.querySelectorAll('#grid .card').length === n", arg=len(cards))
        assert screenshot(page, shots, "gallery.png").stat().st_size > 10_000

        # the thumbnail size slider scales the grid
        small = page.eval_on_selector("#grid .card", "c => c.getBoundingClientRect().width")
        page.fill("#size", "300")
        large = page.eval_on_selector("#grid .card", "c => c.getBoundingClientRect().width")
        assert large > small * 1.5
        page.fill("#size", "160")

        # the threshold slider: counts follow the scores the API returned
        scores = requests.get(f"{base}/api/scores", params={"run": RUN_ALL_LABELS}).json()["scores"]

        def expected(t: float) -> int:
            return sum(1 for s in scores if s["score"] is not None and s["score"] >= t)

        at_run_threshold = int(page.get_attribute("#threshold-summary", "data-would-keep"))
        assert at_run_threshold == expected(0.2) == sum(1 for c in cards if c["status"] == "kept")
        page.fill("#threshold", "0.5")
        assert (
            int(page.get_attribute("#threshold-summary", "data-would-keep"))
            == expected(0.5)
            < at_run_threshold
        )
        dropped = page.eval_on_selector_all("#grid .card.would-drop", "cs => cs.length")
        assert dropped == at_run_threshold - expected(0.5)
        assert "at 0.50" in page.text_content("#threshold-summary")
        screenshot(page, shots, "threshold.png")
        page.fill("#threshold", "0.2")

        # the label filter narrows the grid and the counts
        before = page.text_content("#summary")
        page.select_option("#label", "espresso")
        _wait_for_grid_change(page, before)
        cards = _cards(page)
        assert cards and {c["label"] for c in cards} == {"espresso"} and len(cards) < len(with_bytes)
        assert page.text_content("#statuses label[data-status=kept] .count") == "(1)"

        # the metadata panel of the espresso photo
        page.click("#grid .card")
        page.wait_for_selector("#panel:not([hidden]) dl")
        panel = page.text_content("#panel")
        assert (
            "coffee-large.jpg" in panel
            and "An espresso on a saucer" in panel
            and "espresso (n07920052)" in panel
        )
        page.wait_for_function("() => document.querySelector('#panel img').naturalWidth > 0")
        screenshot(page, shots, "metadata-panel.png")

        # per-domain statistics for the selection
        page.select_option("#label", "")
        page.select_option("#run", "")
        page.wait_for_function("() => document.querySelectorAll('#stats tbody tr').length === 2")
        assert "HTTP 404: 1" in page.text_content("#stats tbody")
        assert errors == []
