"""Image URLs of an inline style's background declarations, scanned in one linear pass.

A style attribute is text a site chooses: it is scanned by code instead of a regular expression, so
a hostile value costs time linear in its length.
"""

from __future__ import annotations

import re

#: CSS properties whose url() values are images of the element (a custom property such as
#: ``--hero-background`` counts too, as it usually feeds one of them)
_BACKGROUND_PROPERTIES = ("background", "background-image")
#: a style attribute in pieces: a run of ordinary characters, or one character that matters
_CSS_TOKEN = re.compile(r"""[^"'()\\;\n]+|\\.?|.""", re.DOTALL)
_URL_OPEN = re.compile(r"url\(", re.IGNORECASE)
_SPACES = re.compile(r"\s*")
_UNQUOTED_URL = re.compile(r"""[^()"'\s]*""")


def _style_declarations(style: str) -> list[tuple[str, str]]:
    """(property, value) of each declaration of a style attribute, split at the semicolons outside
    strings and parentheses (a data: URI or a URL may hold one), in one pass over the text."""
    declarations: list[tuple[str, str]] = []
    current: list[str] = []
    quote, depth = "", 0
    for match in _CSS_TOKEN.finditer(style):
        token = match.group()
        if quote:
            if token == quote or token == "\n":
                quote = ""
        elif token in ('"', "'"):
            quote = token
        elif token == "(":
            depth += 1
        elif token == ")":
            depth = max(depth - 1, 0)
        elif token == ";" and depth == 0:
            declarations.append(_declaration("".join(current)))
            current = []
            continue
        current.append(token)
    declarations.append(_declaration("".join(current)))
    return declarations


def _declaration(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip().lower(), value


def _css_urls(value: str) -> list[str]:
    """The arguments of the ``url(...)`` functions in a CSS value, quoted or not. Scanned left to
    right without going back, so a value of ``url(`` a million times costs one pass."""
    urls: list[str] = []
    position = 0
    while (opening := _URL_OPEN.search(value, position)) is not None:
        start = _SPACES.match(value, opening.end()).end()
        quote = value[start : start + 1]
        if quote in ('"', "'"):
            end = value.find(quote, start + 1)
            if end < 0:
                break  # the string never closes: the rest of the value is inside it
            url, after = value[start + 1 : end], end + 1
        else:
            after = _UNQUOTED_URL.match(value, start).end()
            url = value[start:after]
        after = _SPACES.match(value, after).end()
        if value[after : after + 1] == ")" and url.strip():
            urls.append(url.strip())
            after += 1
        position = max(after, opening.end())
    return urls


def background_urls(style: str) -> list[str]:
    """Image URLs of an inline style's ``background`` and ``background-image`` declarations."""
    return [
        url
        for name, value in _style_declarations(style)
        if name.endswith(_BACKGROUND_PROPERTIES)
        for url in _css_urls(value)
    ]
