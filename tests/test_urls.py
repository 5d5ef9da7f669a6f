"""URL canonicalisation: one resource must map to one string however a page spelled the link."""

from __future__ import annotations

import pytest

from harvest.urls import canonicalize, looks_like_image, same_site

PAGE = "http://example.com/dir/page.html"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("img/a.jpg", "http://example.com/dir/img/a.jpg"),
        ("/top.png", "http://example.com/top.png"),
        ("../up.png", "http://example.com/up.png"),
        ("?page=2", "http://example.com/dir/page.html?page=2"),
        ("//cdn.example.net/x.jpg", "http://cdn.example.net/x.jpg"),
        ("https://other.example.org/a.jpg", "https://other.example.org/a.jpg"),
    ],
)
def test_relative_links_resolve_against_the_base(link, expected):
    assert canonicalize(link, PAGE) == expected


def test_base_with_mixed_case_host_is_normalised_too():
    assert canonicalize("a.jpg", "HTTP://Example.COM/dir/") == "http://example.com/dir/a.jpg"


def test_fragment_is_dropped():
    assert canonicalize("http://example.com/a.html#section-2") == "http://example.com/a.html"
    assert canonicalize("#top", PAGE) == PAGE


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
    ],
)
def test_only_the_default_port_of_the_scheme_is_dropped(url, expected):
    assert canonicalize(url) == expected


def test_scheme_and_host_are_lower_cased_but_path_is_not():
    assert canonicalize("HTTPS://WWW.Example.COM/Photos/Cat.JPG") == "https://www.example.com/Photos/Cat.JPG"


def test_trailing_dot_of_host_is_dropped():
    assert canonicalize("http://example.com./a") == "http://example.com/a"


def test_empty_path_becomes_slash():
    assert canonicalize("http://example.com") == "http://example.com/"


def test_query_parameters_are_sorted():
    assert canonicalize("http://example.com/s?b=2&a=1&c=3") == "http://example.com/s?a=1&b=2&c=3"


def test_tracking_parameters_are_removed():
    url = "http://example.com/p?utm_source=news&id=7&fbclid=abc&utm_campaign=x&gclid=1"
    assert canonicalize(url) == "http://example.com/p?id=7"


def test_query_made_only_of_tracking_parameters_disappears():
    assert canonicalize("http://example.com/p?utm_medium=email&fbclid=z") == "http://example.com/p"


def test_spellings_of_the_same_resource_are_equal():
    spellings = [
        "http://Example.com:80/dir/./img/../a.jpg?b=2&a=1#frag",
        "http://example.com/dir/a.jpg?a=1&b=2&utm_source=feed",
        "/dir/a.jpg?a=1&b=2",
    ]
    assert {canonicalize(s, PAGE) for s in spellings} == {"http://example.com/dir/a.jpg?a=1&b=2"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a/./b/../c.jpg", "http://example.com/a/c.jpg"),
        ("http://example.com/a/b/../../c.jpg", "http://example.com/c.jpg"),
        ("http://example.com/../../c.jpg", "http://example.com/c.jpg"),
        ("http://example.com/a/b/", "http://example.com/a/b/"),
        ("http://example.com/a/c/../", "http://example.com/a/"),
    ],
)
def test_dot_segments_are_removed(url, expected):
    assert canonicalize(url) == expected


def test_percent_encoding_is_normalised():
    assert canonicalize("http://example.com/a b.jpg") == "http://example.com/a%20b.jpg"
    assert canonicalize("http://example.com/a%20b.jpg") == "http://example.com/a%20b.jpg"
    assert canonicalize("http://example.com/%7Euser/x.jpg") == "http://example.com/~user/x.jpg"


def test_encoded_slash_in_path_is_preserved():
    url = "https://firebasestorage.googleapis.com/v0/b/app/o/images%2Fcat.jpg?alt=media"
    assert canonicalize(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "mailto:someone@example.com",
        "javascript:void(0)",
        "data:image/png;base64,iVBORw0KGgo=",
        "http://",
        "http://example.com:99999/",
        "",
        "   ",
    ],
)
def test_non_http_or_broken_urls_give_none(url):
    assert canonicalize(url) is None


def test_non_http_links_give_none_even_with_a_base():
    assert canonicalize("mailto:x@example.com", PAGE) is None
    assert canonicalize("javascript:alert(1)", PAGE) is None


def test_idn_host_becomes_punycode():
    assert canonicalize("http://Bücher.example/katalog") == "http://xn--bcher-kva.example/katalog"


def test_ipv6_host_keeps_its_brackets():
    assert canonicalize("http://[::1]:8080/x.jpg") == "http://[::1]:8080/x.jpg"


def test_credentials_are_not_kept():
    assert canonicalize("https://user:secret@example.com/a.jpg") == "https://example.com/a.jpg"


@pytest.mark.parametrize(
    ("url", "seed", "expected"),
    [
        ("http://www.example.com/a", "https://example.com/", True),
        ("http://img.cdn.example.com/a.jpg", "http://www.example.com/", True),
        ("http://EXAMPLE.com/a", "http://example.com/", True),
        ("http://example.org/a", "http://example.com/", False),
        ("http://example.com.evil.net/a", "http://example.com/", False),
        ("http://127.0.0.1:8001/x", "http://127.0.0.1:8000/", True),
        ("http://127.0.0.2/x", "http://127.0.0.1/", False),
    ],
)
def test_same_site(url, seed, expected):
    assert same_site(url, seed) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a.jpg", True),
        ("http://example.com/a.JPEG", True),
        ("http://example.com/a.png?w=200", True),
        ("http://example.com/a.webp", True),
        ("http://example.com/a.avif", True),
        ("http://example.com/page.html", False),
        ("http://example.com/a.svg", False),
        ("http://example.com/jpg", False),
        ("http://example.com/show.php?file=a.jpg", False),
    ],
)
def test_looks_like_image_uses_the_path_extension(url, expected):
    assert looks_like_image(url) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://a.example/p;jsessionid=0A1B2C?x=1", "http://a.example/p?x=1"),
        ("http://a.example/p?PHPSESSID=abc&page=2", "http://a.example/p?page=2"),
        ("http://a.example/p?sid=9&gclid=1&msclkid=2&pk_campaign=x", "http://a.example/p"),
        ("http://a.example/p?Utm_Source=x&q=cat", "http://a.example/p?q=cat"),
    ],
)
def test_session_ids_and_more_tracking_parameters_are_removed(url, expected):
    assert canonicalize(url) == expected
