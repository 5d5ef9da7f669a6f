"""url_allow / url_deny patterns are the user's, the URLs they are matched against are the crawled
sites': a pattern with nested quantifiers backtracks exponentially on a URL made to miss it
(``(a+)+$`` against 40 a's and a slash: hours in Python's re). The patterns run on RE2, whose time
is linear in the URL; a pattern RE2 cannot run (backreferences, lookaround) is refused up front
with the pattern and the reason.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
from crawl_helpers import crawl_config, pages
from loopback_site import html, serve

from harvest.settings.config import ConfigError
from harvest.stages.crawl import run_crawl
from harvest.web.scope import Scope

#: backtracks 2**n times in a backtracking engine on n a's followed by a character it cannot match
NESTED = r"/(a+)+$"
TRAP_URL = "http://example.com/" + "a" * 40 + "/"


def _refusal(cfg, url: str, seed: str, queue) -> None:
    started = time.monotonic()
    refusal = Scope(cfg).refusal(url, seed)
    queue.put((refusal, time.monotonic() - started))


def _refusal_in_child(cfg, url: str, seed: str, seconds: float) -> tuple[str | None, float | None]:
    """(refusal, seconds it took) in a process of its own; seconds is None if it was still matching
    after ``seconds`` (a backtracking match holds the interpreter: a thread could not be timed)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_refusal, args=(cfg, url, seed, queue))
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        return None, None
    return queue.get(timeout=5)


@pytest.mark.parametrize("param", ["url_allow", "url_deny"])
def test_a_nested_quantifier_costs_linear_time_on_a_hostile_url(tmp_path, param):
    cfg = crawl_config("http://example.com/", tmp_path, {param: [NESTED]})
    refusal, seconds = _refusal_in_child(cfg, TRAP_URL, "http://example.com/", 20.0)
    assert seconds is not None, f"{param} pattern {NESTED!r} still matching after 20 s"
    assert seconds < 1.0
    assert refusal == ("matches no url_allow pattern" if param == "url_allow" else None)


def test_patterns_still_select_links_in_a_crawl(tmp_path):
    with serve() as server:
        server.routes.update(
            {
                "/": html('<a href="/blog/1">1</a><a href="/blog/tag/x">t</a><a href="/shop">s</a>'),
                "/blog/1": html("post"),
                "/blog/tag/x": html("tag"),
                "/shop": html("shop"),
            }
        )
        cfg = crawl_config(
            f"{server.base}/", tmp_path, {"url_allow": [r"/blog/\d+$|/$"], "url_deny": [r"/tag/"]}
        )
        run_crawl(cfg)
        assert pages(cfg, server.base) == {"/": ("done", None), "/blog/1": ("done", None)}


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"/(\w+)/\1/", "invalid escape sequence: \\1"),
        (r"/(?=private)", "invalid perl operator: (?="),
        (r"/(?<!www)\.example", "invalid perl operator: (?<"),
        (r"(unclosed", "missing )"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_with_the_pattern_and_the_reason(tmp_path, pattern, reason):
    with pytest.raises(ConfigError) as refused:
        crawl_config("http://example.com/", tmp_path, {"url_deny": ["/ok/", pattern]})
    (problem,) = refused.value.problems
    assert problem.startswith(f"url_deny: {pattern!r} is not a valid regular expression (")
    assert reason in problem and "RE2" in problem
