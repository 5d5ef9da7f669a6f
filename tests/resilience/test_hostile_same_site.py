"""``same_domain`` keeps a crawl on its seed's site. Taking the last two labels of a host as the site
made ``evil.co.uk`` the same site as ``www.bbc.co.uk`` and any ``*.github.io`` the same as any other:
a seed's page could lead the crawl into every site registered under a public suffix. Sites are now
told apart by the Public Suffix List the publicsuffixlist package ships (nothing fetched at run
time), and a ``domains`` filter naming a public suffix is refused.
"""

from __future__ import annotations

import pytest
from crawl_helpers import crawl_config

from harvest.settings.config import ConfigError
from harvest.urls import registered_domain
from harvest.web.scope import Scope


@pytest.mark.parametrize(
    ("seed", "link"),
    [
        ("https://www.bbc.co.uk/news", "https://evil.co.uk/"),
        ("https://alice.github.io/", "https://mallory.github.io/"),
        ("https://shop.example.com.au/", "https://other.com.au/"),
        ("https://a.blogspot.com/", "https://b.blogspot.com/"),
        ("https://bucket-a.s3.amazonaws.com/", "https://bucket-b.s3.amazonaws.com/"),
        ("https://www.city.kawasaki.jp/", "https://www.city.yokohama.jp/"),
    ],
)
def test_a_host_under_the_same_public_suffix_is_another_site(tmp_path, seed, link):
    scope = Scope(crawl_config(seed, tmp_path))
    assert scope.refusal(link, seed) == "off-site link"


@pytest.mark.parametrize(
    ("seed", "link"),
    [
        ("https://www.bbc.co.uk/", "https://news.bbc.co.uk/world"),
        ("https://alice.github.io/", "https://alice.github.io/post"),
        ("https://example.com/", "https://img.cdn.example.com/a"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:9000/b"),
        ("http://[::1]:8000/", "http://[::1]/"),
        ("http://intranet/", "http://intranet/wiki"),
    ],
)
def test_hosts_of_one_registered_domain_are_one_site(tmp_path, seed, link):
    assert Scope(crawl_config(seed, tmp_path)).refusal(link, seed) is None


def test_registered_domains_follow_the_public_suffix_list():
    assert registered_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert registered_domain("evil.co.uk") == "evil.co.uk"
    assert registered_domain("deep.alice.github.io") == "alice.github.io"
    assert registered_domain("co.uk") == "co.uk"  # a bare suffix is its own (empty) site
    assert registered_domain("WWW.Example.COM.") == "example.com"
    assert registered_domain("192.168.1.10") == "192.168.1.10"


@pytest.mark.parametrize("domain", ["co.uk", "*.github.io", "com", "blogspot.com"])
def test_a_domains_filter_naming_a_public_suffix_is_refused(tmp_path, domain):
    with pytest.raises(ConfigError) as refused:
        crawl_config("https://example.com/", tmp_path, {"domains": ["flickr.com", domain]})
    name = domain.removeprefix("*.")
    assert refused.value.problems == [
        f"domains: {name!r} is a public suffix, shared by unrelated sites; name a site under it "
        f"(e.g. example.{name})"
    ]
