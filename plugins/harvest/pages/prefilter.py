"""Optional text pre-filter: skip candidates whose alt text, title or file name name something else.

Pages often say what an image shows. When the words around a candidate name an ImageNet class or
group that shares nothing with the requested labels ("An espresso on a saucer" while harvesting
daisies), fetching it is almost surely wasted. The filter only ever skips on such positive evidence:
text that names nothing known (empty alt, "IMG_1234", "photo") never drops a candidate, and text
naming a target (or a group containing one, like "cat" for Egyptian cat) marks it as promoted.
Off by default (``text_prefilter``); the download stage consults it before fetching a shard.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from harvest.model.labels import Target, load_classes, load_groups, normalize, resolve_labels
from harvest.model.registry import resolve_model
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Status, utcnow
from harvest.state.shards import in_shard

log = logging.getLogger(__name__)

#: groups this broad ("animal", "device", "structure") say too little to rule an image out
MAX_GROUP_SIZE = 150
#: words that describe any picture, never what is in it
GENERIC = frozenset(
    [
        "image",
        "images",
        "img",
        "photo",
        "photos",
        "photograph",
        "picture",
        "pic",
        "pics",
        "thumb",
        "thumbnail",
        "small",
        "large",
        "medium",
        "full",
        "original",
        "copy",
        "banner",
        "icon",
        "logo",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "dsc",
        "dscn",
        "pxl",
        "screenshot",
        "untitled",
        "file",
        "upload",
        "uploaded",
        "new",
        "old",
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "at",
        "and",
        "with",
        "my",
        "our",
        "your",
    ]
)
_TOKEN = re.compile(r"[a-z]+")
MAX_PHRASE = 4


@dataclass(frozen=True)
class TextVerdict:
    """What a candidate's alt text, title and file name say about it, before anything is downloaded."""

    #: "skip" (names only other things), "promote" (names a target) or "keep" (names nothing known)
    action: str
    named: tuple[str, ...] = ()


def _singular(token: str) -> str:
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("es") and token[:-2].endswith(("sh", "ch", "x", "s")):
        return token[:-2]
    if token.endswith("s") and not token.endswith("ss") and len(token) > 3:
        return token[:-1]
    return token


@lru_cache(maxsize=4)
def vocabulary(models_dir: Path) -> dict[str, frozenset[str]]:
    """Phrase -> the ImageNet classes it can mean (a class, or every member of a group)."""
    phrases: dict[str, set[str]] = {}

    def add(name: str, wnids: Iterable[str]) -> None:
        phrase = " ".join(_singular(t) for t in _TOKEN.findall(normalize(name)))
        if phrase and phrase not in GENERIC and len(phrase) > 2:
            phrases.setdefault(phrase, set()).update(wnids)

    for cls in load_classes(Path(models_dir)):
        for synonym in cls.synonyms:
            add(synonym, [cls.wnid])
    for group in load_groups(Path(models_dir)):
        if len(group.members) <= MAX_GROUP_SIZE:
            for name in group.names:
                add(name, group.members)
    return {phrase: frozenset(wnids) for phrase, wnids in phrases.items()}


@dataclass(frozen=True)
class Word:
    text: str
    capitalised: bool


_WORD = re.compile(r"[A-Za-z]+")


def words_of(alt: str | None, title: str | None, url: str) -> list[list[Word]]:
    """The words of each text (alt, title, file name), singular, remembering which were capitalised."""
    stem = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).rsplit(".", 1)[0]
    stem = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem).replace("_", " ").replace("-", " ")
    parts = []
    for text in (alt, title, stem):
        if text:
            words = [
                Word(_singular(w.lower()), w[0].isupper() and not w.isupper()) for w in _WORD.findall(text)
            ]
            parts.append(words)
    return parts


def _named(words: list[Word], vocab: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Known phrases in the words, longest first; a match next to an unknown capitalised word is part of
    a name ("Grace Hopper" is a person, not a grasshopper) and does not count."""
    found: dict[str, frozenset[str]] = {}
    used: set[int] = set()
    known = {i for i, w in enumerate(words) if w.text in vocab or w.text in GENERIC}
    for size in range(MAX_PHRASE, 0, -1):
        for start in range(len(words) - size + 1):
            span = range(start, start + size)
            phrase = " ".join(words[i].text for i in span)
            if phrase not in vocab or used & set(span):
                continue
            neighbours = [i for i in (start - 1, start + size) if 0 <= i < len(words)]
            in_name = words[start].capitalised and any(
                words[i].capitalised and i not in known for i in neighbours
            )
            if not in_name:
                found[phrase] = vocab[phrase]
                used.update(span)
    return found


def judge_text(
    parts: list[list[Word]], targets: list[Target], vocab: dict[str, frozenset[str]]
) -> TextVerdict:
    wanted = frozenset().union(*(t.wnids for t in targets)) if targets else frozenset()
    named: dict[str, frozenset[str]] = {}
    for words in parts:
        named.update(_named(words, vocab))
    if not named:
        return TextVerdict("keep")
    if any(wnids & wanted for wnids in named.values()):
        return TextVerdict("promote", tuple(sorted(p for p, w in named.items() if w & wanted)))
    return TextVerdict("skip", tuple(sorted(named)))


def apply_prefilter(cfg: HarvestConfig, shard: int, shards: int = 1) -> StageReport:
    """Skip the shard's pending candidates whose text names only other things; promote those naming a target.

    Promoted candidates are claimed first by the download stage, so with a quota the images most likely to
    be kept fill it; nothing is ever skipped for empty or generic text.
    """
    report = StageReport("prefilter")
    report.extra["shard"] = shard
    if not cfg.text_prefilter:
        return report
    spec = resolve_model(cfg.model, cfg.models_dir)
    if len(spec.classes) != len(load_classes(Path(cfg.models_dir))):
        return report  # a custom filter's classes are not ImageNet's: the words cannot be matched
    targets = resolve_labels(cfg.labels, cfg.models_dir, spec.classes)
    vocab = vocabulary(Path(cfg.models_dir))
    with session_scope(cfg.database_url) as session:
        pending = session.scalars(
            select(Candidate).where(
                Candidate.run_id == cfg.run_id,
                in_shard(Candidate.shard, shard, shards),
                Candidate.status == Status.PENDING,
            )
        ).all()
        for candidate in pending:
            verdict = judge_text(words_of(candidate.alt, candidate.title, candidate.url), targets, vocab)
            if verdict.action == "skip":
                candidate.status = Status.SKIPPED
                candidate.error = (
                    f"{candidate.url}: text pre-filter: its alt text, title or file name names "
                    f"{', '.join(repr(n) for n in verdict.named)}, none of the requested labels"
                )
                candidate.updated_at = utcnow()
                report.count("skipped", "text names another subject")
            elif verdict.action == "promote":
                candidate.priority = 1  # downloaded before the shard's other candidates
                report.done += 1
    report.extra["promoted"] = report.done
    log.info(
        "text pre-filter, shard %d: %d candidates skipped, %d name a target",
        shard,
        report.skipped,
        report.done,
    )
    return report
