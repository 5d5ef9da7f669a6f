"""The optional text pre-filter: skips only on words naming other things, never on generic alt text."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EXPECTED_KEPT, candidate_states, manifest_rows

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.model.labels import resolve_labels
from harvest.pages.prefilter import judge_text, vocabulary, words_of
from harvest.pipeline import run_all
from harvest.settings.config import DEFAULT_MODELS_DIR, build_config


def verdict(alt, url="http://x.example/a.jpg", labels=("daisy",), title=None):
    targets = resolve_labels(list(labels), DEFAULT_MODELS_DIR)
    return judge_text(words_of(alt, title, url), targets, vocabulary(DEFAULT_MODELS_DIR))


@pytest.mark.parametrize(
    "alt", [None, "", "IMG_1234", "photo", "Photo", "image", "DSC_0042", "picture 3", "untitled"]
)
@pytest.mark.parametrize(
    "url", ["http://x.example/IMG_1234.JPG", "http://x.example/photo.jpg", "http://x.example/p?id=7"]
)
def test_generic_alt_and_file_names_are_never_skipped(alt, url):
    assert verdict(alt, url).action == "keep"


def test_text_naming_another_subject_is_skipped_with_what_it_named():
    result = verdict("An espresso on a saucer")
    assert result.action == "skip" and "espresso" in result.named


def test_text_naming_a_target_or_its_group_is_promoted():
    assert verdict("Daisies in the park").action == "promote"  # plural
    assert verdict("Chelsea the cat", labels=("Egyptian cat",)).named == ("cat",)  # a group holding it
    assert verdict("two golden retrievers", labels=("dog",)).action == "promote"  # a member of the group


def test_a_target_named_beside_something_else_is_kept():
    assert verdict("A daisy in an espresso cup").action == "promote"


def test_the_file_name_and_title_count_too():
    assert verdict("", "http://x.example/sportsCar-2.jpg", labels=("dog",)).action == "skip"
    assert verdict(None, title="a goldfish bowl", labels=("goldfish",)).action == "promote"


def test_proper_names_do_not_count_as_subjects():
    # "Hopper" is a grasshopper in ImageNet, but here it is part of a person's name
    assert verdict("Portrait of Grace Hopper", url="http://x.example/p1.jpg").action == "keep"


def test_broad_groups_say_too_little_to_skip():
    assert verdict("a lovely animal", labels=("daisy",)).action == "keep"


def _demo(site: str, run_id: str, labels, **params):
    return build_config({"seeds": [f"{site}/index.html"], "labels": list(labels), **params}, run_id)


def test_demo_site_fewer_downloads_same_dataset(site, classifier):
    plain = _demo(site, "manual__plain", DEMO_LABELS)
    screened = _demo(site, "manual__screened", DEMO_LABELS, text_prefilter=True)
    run_all(plain, classifier)
    reports = run_all(screened, classifier)

    def downloaded(cfg):
        states = candidate_states(cfg.database_url, cfg.run_id, site)
        return {
            path for path, (status, error) in states.items() if not (error or "").count("text pre-filter")
        }

    saved = downloaded(plain) - downloaded(screened)
    assert saved == {"photos/grace-hopper.jpg"}  # its file name names a grasshopper, no requested label
    states = candidate_states(screened.database_url, screened.run_id, site)
    assert states["photos/grace-hopper.jpg"][0] == "skipped"
    assert (
        "text pre-filter" in states["photos/grace-hopper.jpg"][1]
        and "hopper" in states["photos/grace-hopper.jpg"][1]
    )
    # generic or unknown alt text ("texture", "advertisement", empty) is still fetched
    assert states["photos/noise.png"][0] != "skipped" or "text pre-filter" not in (
        states["photos/noise.png"][1] or ""
    )
    kept = {}
    for cfg in (plain, screened):
        rows = manifest_rows((Path(cfg.destination) / manifest_key(cfg.run_id)).read_bytes())
        kept[cfg.run_id] = {row["url"].removeprefix(site + "/"): row["label"] for row in rows}
    assert kept["manual__plain"] == kept["manual__screened"] == EXPECTED_KEPT
    assert sum(r.skipped for r in reports if r.stage == "download") >= 1


def test_promoted_candidates_are_downloaded_first(site):
    from harvest.pages.prefilter import apply_prefilter
    from harvest.pipeline import collect_candidates, prepare_run
    from harvest.stages.crawl import run_crawl
    from harvest.stages.download import _claim

    cfg = build_config(
        {"seeds": [f"{site}/index.html"], "labels": ["espresso"], "text_prefilter": True}, "manual__promote"
    ).with_(num_shards=1)
    prepare_run(cfg)
    run_crawl(cfg)
    collect_candidates(cfg)
    report = apply_prefilter(cfg, 0)
    assert report.extra["promoted"] == 1
    claim = _claim(cfg, 0, 1, set())
    try:
        assert claim.chunk[0].url == f"{site}/photos/coffee-large.jpg"  # alt "An espresso on a saucer"
        assert claim.chunk[0].priority == 1 and all(c.priority == 0 for c in claim.chunk[1:])
    finally:
        claim.stack.close()
