"""The one row schema of a published dataset: a run's JSONL manifest, the Parquet manifest, the
WebDataset ``.json`` and the ImageFolder ``metadata.jsonl`` all carry these columns, with the same
names, types and meaning, so a row read from one can be joined to a row read from another.

- ``key``: the object key of the published image (``images/<label>/<sha256>.<ext>``), everywhere.
- ``run_id``: the real run id (Airflow's, with its ``:`` and ``+``) of the run whose manifest lists
  the row; the manifest's file name is its slug (:func:`harvest.dataset.layout.slug`).
- ``model``: the classifier key (name and version) that decided the row's label and score.
- ``label_index``: the label's index in ``classes.json``, stable across runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl

#: Public EXIF fields copied into the exports; private ones (GPS, owner, serials) never are.
EXIF_COLUMNS = ("make", "model", "date_taken", "orientation", "copyright", "country")

#: Each image's licence (SPDX id or "unknown", harvest.licences), the URL of its evidence and the
#: author to credit (name -> pyarrow type name); every export picks them up from this tuple.
LICENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("license", "string"),
    ("license_url", "string"),
    ("author", "string"),
)

#: column -> pyarrow type name; a dict keeps the order every export writes them in
_TYPES: dict[str, str] = {
    "run_id": "string",
    "model": "string",
    "key": "string",
    "label": "string",
    "label_index": "int32",
    "score": "float64",
    "sha256": "string",
    "source_sha256": "string",
    "url": "string",
    "page_url": "string",
    "alt": "string",
    "rendition_url": "string",
    "renditions_failed": "failures",
    "urls_seen": "int32",
    "width": "int32",
    "height": "int32",
    "format": "string",
    "mime_type": "string",
    "size_bytes": "int64",
    "has_alpha": "bool",
    "phash": "string",
    "entropy": "float64",
    **{f"exif_{name}": "string" for name in EXIF_COLUMNS},
    **dict(LICENCE_COLUMNS),
    #: the RGB JPEG training copy (``training/...``), None unless publish_format is jpeg
    "training_key": "string",
}
COLUMNS: tuple[str, ...] = tuple(_TYPES)


def arrow_schema():
    """The columns as a pyarrow schema (the Parquet manifest's, and what the JSONL reads back as)."""
    import pyarrow as pa

    failures = pa.list_(pa.struct([("url", pa.string()), ("reason", pa.string())]))
    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64()}
    types.update(bool=pa.bool_(), failures=failures)
    return pa.schema([(name, types[kind]) for name, kind in _TYPES.items()])


#: where a candidate found its image, in the order :func:`record` reads a row's ``source``
SOURCE_COLUMNS = (
    Candidate.url,
    Candidate.page_url,
    Candidate.alt,
    Candidate.rendition_url,
    Candidate.renditions_failed,
    Candidate.license,
    Candidate.license_evidence,
    Candidate.author,
)


def image_details(database_url: str, shas: Iterable[str], sources: bool = True) -> dict[str, dict[str, Any]]:
    """What the state DB knows about some downloaded images (by their download's sha256): size,
    format, hashes, public EXIF, where the bytes are staged, and (``sources``) the first candidate
    that found each (its URL, page, alt text and renditions); a caller that knows its own candidate
    passes ``sources=False`` and sets ``source`` itself. One query per table for the whole batch."""
    wanted = list(set(shas))
    details: dict[str, dict[str, Any]] = {}
    if not wanted:
        return details
    with session_scope(database_url) as session:
        for image in session.execute(
            select(
                Image.sha256,
                Image.first_url,
                Image.width,
                Image.height,
                Image.format,
                Image.mime_type,
                Image.size_bytes,
                Image.has_alpha,
                Image.phash,
                Image.entropy,
                Image.staging,
                Image.storage_key,
                Image.clean_key,
                Image.exif,
            ).where(Image.sha256.in_(wanted))
        ):
            details[image.sha256] = {**image._asdict(), "urls_seen": 0, "source": None}
        if sources:
            candidates = (
                select(Candidate.sha256, *SOURCE_COLUMNS)
                .where(Candidate.sha256.in_(wanted))
                .order_by(Candidate.id)
            )
            for sha256, *source in session.execute(candidates):
                if sha256 in details and details[sha256]["source"] is None:
                    details[sha256]["source"] = tuple(source)
        for sha256 in session.scalars(select(ImageUrl.sha256).where(ImageUrl.sha256.in_(wanted))):
            if sha256 in details:
                details[sha256]["urls_seen"] += 1
    return details


def record(
    *,
    key: str,
    label: str,
    label_index: int,
    score: float | None,
    sha256: str,
    run_id: str,
    model: str | None,
    image: dict[str, Any],
    training_key: str | None = None,
) -> dict[str, Any]:
    """One row in :data:`COLUMNS` order, plus ``staging``/``staging_key`` (where the published bytes
    are staged; exports read them, no file carries them). ``sha256`` is the published bytes' hash,
    ``image`` the download's :func:`image_details`."""
    url, page_url, alt, rendition_url, failed, spdx, evidence, author = image["source"] or (
        image["first_url"],
        *(None,) * 7,
    )
    exif = image["exif"] or {}
    row: dict[str, Any] = {
        "run_id": run_id,
        "model": model,
        "key": key,
        "label": label,
        "label_index": label_index,
        "score": score,
        "sha256": sha256,
        "source_sha256": image["sha256"],
        "url": url,
        "page_url": page_url,
        "alt": alt,
        "rendition_url": rendition_url or url,
        "renditions_failed": [{"url": f["url"], "reason": f["reason"]} for f in failed or []],
        "urls_seen": max(image["urls_seen"], 1),
        "width": image["width"],
        "height": image["height"],
        "format": image["format"],
        "mime_type": image["mime_type"],
        "size_bytes": image["size_bytes"],
        "has_alpha": image["has_alpha"],
        "phash": image["phash"],
        "entropy": image["entropy"],
        **{f"exif_{name}": _text(exif.get(name)) for name in EXIF_COLUMNS},
        "license": spdx or "unknown",
        "license_url": (evidence or {}).get("url"),
        "author": author,
        "training_key": training_key,
        "staging": image["staging"],
        "staging_key": image["clean_key"] or image["storage_key"],
    }
    return row


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The row as files carry it: :data:`COLUMNS` only."""
    return {name: row[name] for name in COLUMNS}


def _text(value: object) -> str | None:
    return None if value is None else str(value)
