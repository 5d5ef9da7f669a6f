"""Licences as SPDX identifiers: reading them from the URLs and words sites and files use, the
groups the ``licenses`` Param accepts, and which licences require attribution.

A page or file names a licence by a Creative Commons deed URL (``creativecommons.org/licenses/by/4.0/``),
a badge image of the same path (``licensebuttons.net/l/by-nc/4.0/88x31.png``), or in words
("CC BY-SA 4.0", "Public Domain"). Everything else is ``unknown``: an "All rights reserved" notice is
recorded as evidence but names no licence that allows anything.
"""

from __future__ import annotations

import re

UNKNOWN = "unknown"
#: public domain as Creative Commons marks it (no SPDX id for the mark itself: this is the name
#: the SPDX list's users and img2dataset-style manifests use)
PDM = "PDM"
_CC_KINDS = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
#: ``licenses`` Param groups
GROUPS = {
    "open": "CC0, public domain, CC BY and CC BY-SA (any version)",
    "commercial": "every known licence without NC or ND",
}
_CC_URL = re.compile(
    r"(?:creativecommons\.org|licensebuttons\.net|i\.creativecommons\.org)/"
    r"(?:licenses|licences|l)/(by(?:-nc)?(?:-sa|-nd)?)/(\d\.\d)",
    re.I,
)
_CC_ZERO = re.compile(r"(?:creativecommons\.org|licensebuttons\.net)/(?:publicdomain|p)/zero/1\.0", re.I)
_CC_MARK = re.compile(r"(?:creativecommons\.org|licensebuttons\.net)/(?:publicdomain|p)/mark/1\.0", re.I)
_CC_WORDS = re.compile(r"\bCC[ -]?(BY(?:[ -]NC)?(?:[ -]SA|[ -]ND)?)(?:[ -](\d\.\d))?\b", re.I)
_CC0_WORDS = re.compile(r"\bCC[ -]?0\b|\bCC[ -]?zero\b", re.I)
_PD_WORDS = re.compile(r"\bpublic[ -]domain\b", re.I)


def _cc(kind: str, version: str | None) -> str:
    return f"CC-{kind.upper().replace(' ', '-')}-{version or '4.0'}"


def spdx_from_url(url: str | None) -> str | None:
    """The SPDX id a licence URL (deed, legal code, badge image) names, or None."""
    if not url:
        return None
    if _CC_ZERO.search(url):
        return "CC0-1.0"
    if _CC_MARK.search(url):
        return PDM
    match = _CC_URL.search(url)
    if match and match.group(1).lower() in _CC_KINDS:
        return _cc(match.group(1), match.group(2))
    return None


def spdx_from_text(text: str | None) -> str | None:
    """The SPDX id a licence named in words names ("CC BY-NC 4.0", "CC0", an SPDX id), or None."""
    if not text:
        return None
    text = text.strip()
    by_url = spdx_from_url(text)
    if by_url:
        return by_url
    if _CC0_WORDS.search(text):
        return "CC0-1.0"
    match = _CC_WORDS.search(text)
    if match:
        kind = re.sub(r"[ -]+", "-", match.group(1)).lower()
        if kind in _CC_KINDS:
            return _cc(kind, match.group(2))
    if _PD_WORDS.search(text):
        return PDM
    return None


def requires_attribution(spdx: str | None) -> bool:
    """Whether the licence obliges users to credit the author (every CC licence but CC0)."""
    return bool(spdx) and spdx.startswith("CC-BY")


def in_group(spdx: str, group: str) -> bool:
    if spdx == UNKNOWN:
        return False
    if group == "open":
        return spdx in ("CC0-1.0", PDM) or re.fullmatch(r"CC-BY(-SA)?-\d\.\d", spdx) is not None
    if group == "commercial":
        return "-NC" not in spdx and "-ND" not in spdx
    return False


def allowed(spdx: str | None, wanted: tuple[str, ...]) -> bool:
    """Whether a licence passes the ``licenses`` Param: every licence when it is empty; otherwise
    the ids and groups it lists (``unknown`` only when listed by name)."""
    if not wanted:
        return True
    spdx = spdx or UNKNOWN
    for item in wanted:
        if item.lower() in GROUPS:
            if in_group(spdx, item.lower()):
                return True
        elif item.lower() == spdx.lower():
            return True
    return False


def rejection(spdx: str | None, wanted: tuple[str, ...]) -> str | None:
    """The recorded reason an image is not kept for its licence, or None when it passes."""
    if allowed(spdx, wanted):
        return None
    return f"licence {spdx or UNKNOWN} not among the licences kept ({', '.join(wanted)})"


def licence_filter_problems(wanted: tuple[str, ...]) -> list[str]:
    """Entries of the ``licenses`` Param that name no known licence or group."""
    problems = []
    for item in wanted:
        known = item.lower() in GROUPS or item.lower() == UNKNOWN or item == PDM
        known = known or spdx_from_text(item) == item or item in ("CC0-1.0",)
        if not known:
            problems.append(
                f"licenses: {item!r} is neither an SPDX id such as CC-BY-4.0 or CC0-1.0 nor one of "
                f"the groups {', '.join(GROUPS)}"
            )
    return problems


def resolve(page: dict | None, file: dict | None, file_creators: list[str] | None = None) -> dict:
    """One image's licence from the page's evidence and the file's own metadata.

    Evidence about the image itself on the page (its figure, a JSON-LD ImageObject) comes first,
    then the file's metadata, then what the page says of itself (a page-wide rel=license). The
    author is the page's, else the file's creator when the licence requires attribution (names
    found only in the file are personal data otherwise, kept encrypted with the private fields).
    Returns {"license": SPDX id or "unknown", "evidence": {...}, "author": name or None}."""
    page, file = page or {}, file or {}
    file_evidence = (
        {
            "license": file.get("license"),
            "url": file.get("license_url"),
            "found": "file metadata (XMP/IPTC/EXIF)",
            "scope": "file",
            **{k: file[k] for k in ("usage_terms", "copyright", "credit") if file.get(k)},
        }
        if file
        else {}
    )
    order = [page, file_evidence] if page.get("scope") == "image" else [file_evidence, page]
    chosen = next((e for e in order if e.get("license")), None)
    if chosen is None:  # no licence anywhere: keep what was said (a copyright notice, an author)
        chosen = next((e for e in order if e), {})
    spdx = chosen.get("license") or UNKNOWN
    author = page.get("author") or chosen.get("author")
    if not author and requires_attribution(spdx):
        names = file.get("creator") or file_creators or []
        author = ", ".join(names) if names else None
    evidence = {k: v for k, v in chosen.items() if v and k != "license"}
    if file_evidence and chosen is not file_evidence and file_evidence.get("copyright"):
        evidence.setdefault("file_copyright", file_evidence["copyright"])
    return {"license": spdx, "evidence": evidence or None, "author": author}
