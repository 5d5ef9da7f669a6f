"""Turn the labels a user typed into classes of the model, refusing unknown or ambiguous ones up front.

A label is one ImageNet-1k class ("goldfish", "n01443537") or a WordNet group above them ("dog" is
every dog breed, "vehicle" every car, ship and plane), so users need not know ImageNet's 120 dog
breeds to ask for dogs. The groups come from ``imagenet_hierarchy.json`` (built once by
``include/models/build_hierarchy.py``), so nothing is looked up at run time.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harvest.settings.config import ConfigError

CLASS_INDEX_FILE = "imagenet_classes.json"
HIERARCHY_FILE = "imagenet_hierarchy.json"
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
    """One requested label and the classes that count for it (one class, or every member of a group)."""

    label: str
    folder: str
    wnids: frozenset[str]
    #: the WordNet synset of a group label; None for a single class
    group: str | None = None


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", text).lower().split())


def make_classes(entries: Sequence[dict]) -> tuple[ImageNetClass, ...]:
    """Classes in output order from ``[{"wnid", "name", "synonyms"?}, ...]`` or from plain names."""
    items = [
        {"wnid": e, "name": e} if isinstance(e, str) else {"wnid": e.get("wnid") or e["name"], **e}
        for e in entries
    ]
    uses = Counter(_slug(item["name"]) for item in items)
    return tuple(
        ImageNetClass(
            index=index,
            wnid=item["wnid"],
            name=item["name"],
            synonyms=tuple(item.get("synonyms") or [item["name"]]),
            folder=_slug(item["name"])
            if uses[_slug(item["name"])] == 1
            else f"{_slug(item['name'])}_{item['wnid']}",
        )
        for index, item in enumerate(items)
    )


@lru_cache(maxsize=4)
def load_classes(models_dir: Path) -> tuple[ImageNetClass, ...]:
    data = sorted(
        json.loads((Path(models_dir) / CLASS_INDEX_FILE).read_text()), key=lambda i: int(i["index"])
    )
    return make_classes(data)


@dataclass(frozen=True)
class Group:
    wnid: str
    names: tuple[str, ...]
    members: frozenset[str]


@lru_cache(maxsize=4)
def load_groups(models_dir: Path) -> tuple[Group, ...]:
    """Every WordNet synset above an ImageNet class, with the ImageNet classes below it."""
    path = Path(models_dir) / HIERARCHY_FILE
    if not path.exists():
        return ()
    synsets: dict[str, dict] = json.loads(path.read_text(encoding="utf-8"))["synsets"]
    leaves = {c.wnid for c in load_classes(Path(models_dir))}
    children: dict[str, list[str]] = {}
    for wnid, entry in synsets.items():
        for parent in entry["parents"]:
            children.setdefault(parent, []).append(wnid)

    members: dict[str, frozenset[str]] = {}

    def below(wnid: str) -> frozenset[str]:
        if wnid not in members:
            found = {wnid} if wnid in leaves else set()
            for child in children.get(wnid, ()):
                found |= below(child)
            members[wnid] = frozenset(found)
        return members[wnid]

    return tuple(
        Group(wnid=wnid, names=tuple(entry["names"]), members=below(wnid))
        for wnid, entry in sorted(synsets.items())
        if wnid not in leaves
    )


def _class_target(label: str, cls: ImageNetClass) -> Target:
    return Target(label=label, folder=cls.folder, wnids=frozenset({cls.wnid}))


def _group_target(label: str, group: Group, classes: tuple[ImageNetClass, ...]) -> Target:
    folder = _slug(group.names[0])
    if any(c.folder == folder for c in classes):
        folder = f"{folder}_{group.wnid}"
    return Target(label=label, folder=folder, wnids=group.members, group=group.wnid)


def _describe_group(group: Group, classes: tuple[ImageNetClass, ...]) -> str:
    names = {c.wnid: c.name for c in classes}
    examples = sorted(names[w] for w in group.members)[:3]
    return f"{group.wnid} ({', '.join(group.names[:3])}: {len(group.members)} classes, e.g. {', '.join(examples)})"


def resolve_label(label: str, classes: tuple[ImageNetClass, ...], groups: tuple[Group, ...] = ()) -> Target:
    """A WordNet id exactly, else a class's name, else a class synonym or a group's name (case/space/_-blind).

    A name that fits several classes or groups is refused with every candidate, so a user picks
    one by its WordNet id instead of the harvest silently choosing.
    """
    wanted = normalize(label)
    known = {c.wnid for c in classes}
    groups = tuple(g for g in groups if g.members & known)
    if _WNID.match(label.strip()):
        for cls in classes:
            if cls.wnid == label.strip():
                return _class_target(label, cls)
        for group in groups:
            if group.wnid == label.strip():
                return _group_target(label, group, classes)
        raise ConfigError([f"label {label!r}: no ImageNet-1k class or group has this WordNet id"])
    by_name = [cls for cls in classes if normalize(cls.name) == wanted]
    if len(by_name) == 1:
        return _class_target(label, by_name[0])
    by_synonym = by_name or [cls for cls in classes if wanted in {normalize(s) for s in cls.synonyms}]
    by_group = [] if by_name else [g for g in groups if wanted in {normalize(n) for n in g.names}]
    # a group holding exactly one class is that class, not a second candidate
    by_group = [
        g for g in by_group if not (len(g.members) == 1 and g.members <= {c.wnid for c in by_synonym})
    ]
    if len(by_synonym) + len(by_group) == 1:
        if by_synonym:
            return _class_target(label, by_synonym[0])
        return _group_target(label, by_group[0], classes)
    if by_synonym or by_group:
        options = [f"{c.wnid} ({', '.join(c.synonyms[:3])})" for c in by_synonym]
        options += [_describe_group(g, classes) for g in by_group]
        raise ConfigError([f"label {label!r} is ambiguous; use one of the WordNet ids: {'; '.join(options)}"])
    names = [normalize(s) for cls in classes for s in cls.synonyms]
    names += [normalize(n) for g in groups for n in g.names]
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
    kind = "an ImageNet-1k class name, WordNet group or WordNet id" if groups else "a class of the model"
    raise ConfigError([f"label {label!r} is not {kind}{hint}"])


def resolve_labels(
    labels: tuple[str, ...] | list[str],
    models_dir: Path,
    classes: tuple[ImageNetClass, ...] | None = None,
) -> list[Target]:
    """Resolve against the model's classes (ImageNet-1k by default); groups apply to ImageNet classes."""
    classes = classes if classes is not None else load_classes(Path(models_dir))
    groups = load_groups(Path(models_dir))
    problems: list[str] = []
    targets: list[Target] = []
    for label in labels:
        try:
            target = resolve_label(label, classes, groups)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if all(t.wnids != target.wnids for t in targets):
            targets.append(target)
    if problems:
        raise ConfigError(problems)
    return targets
