"""Turn the labels a user typed into ImageNet-1k classes, refusing unknown or ambiguous ones up front."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harvest.config import ConfigError

CLASS_INDEX_FILE = "imagenet_classes.json"
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str
    synonyms: tuple[str, ...]
    #: folder name in the published dataset, e.g. ``great_white_shark``; the few names ImageNet uses
    #: twice (crane, cardigan, maillot) get their WordNet id appended so classes never share a folder
    folder: str


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Target:
    """One requested label and the classes that count for it."""

    label: str
    folder: str
    wnids: frozenset[str]


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", text).lower().split())


@lru_cache(maxsize=4)
def load_classes(models_dir: Path) -> tuple[ImageNetClass, ...]:
    data = sorted(
        json.loads((Path(models_dir) / CLASS_INDEX_FILE).read_text()), key=lambda i: int(i["index"])
    )
    uses = Counter(_slug(item["name"]) for item in data)
    return tuple(
        ImageNetClass(
            index=int(item["index"]),
            wnid=item["wnid"],
            name=item["name"],
            synonyms=tuple(item.get("synonyms") or [item["name"]]),
            folder=_slug(item["name"])
            if uses[_slug(item["name"])] == 1
            else f"{_slug(item['name'])}_{item['wnid']}",
        )
        for item in data
    )


def resolve_label(label: str, classes: tuple[ImageNetClass, ...]) -> Target:
    """Match a WordNet id exactly, else a class's name, else one of its synonyms (case/space/_-blind)."""
    wanted = normalize(label)
    if _WNID.match(label.strip()):
        for cls in classes:
            if cls.wnid == label.strip():
                return Target(label=label, folder=cls.folder, wnids=frozenset({cls.wnid}))
        raise ConfigError([f"label {label!r}: no ImageNet-1k class has this WordNet id"])
    by_name = [cls for cls in classes if normalize(cls.name) == wanted]
    matches = by_name or [cls for cls in classes if wanted in {normalize(s) for s in cls.synonyms}]
    if len(matches) == 1:
        cls = matches[0]
        return Target(label=label, folder=cls.folder, wnids=frozenset({cls.wnid}))
    if matches:
        options = ", ".join(f"{c.wnid} ({', '.join(c.synonyms[:3])})" for c in matches)
        raise ConfigError([f"label {label!r} is ambiguous; use one of the WordNet ids: {options}"])
    names = [normalize(s) for cls in classes for s in cls.synonyms]
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError([f"label {label!r} is not an ImageNet-1k class name or WordNet id{hint}"])


def resolve_labels(labels: tuple[str, ...] | list[str], models_dir: Path) -> list[Target]:
    classes = load_classes(Path(models_dir))
    problems: list[str] = []
    targets: list[Target] = []
    for label in labels:
        try:
            target = resolve_label(label, classes)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if all(t.wnids != target.wnids for t in targets):
            targets.append(target)
    if problems:
        raise ConfigError(problems)
    return targets
