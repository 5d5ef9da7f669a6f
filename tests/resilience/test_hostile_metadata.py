"""Private metadata in every place a photo can carry it, through the real download and publish
stages: nothing but the allowed fields may reach a published file, whichever container and block
holds the rest, and the published bytes must not depend on what earlier runs left in the state DB.

The site serves seven photos that each hide identifying values where a deny-list of EXIF tags does
not look: GPS in XMP only, an XMP dc:creator, IPTC by-line and city (APP13), GPS in Extended XMP,
a serial number and owner in IFD0, GPS in a PNG iTXt XMP packet, GPS and creator in a WebP XMP
chunk. The published bytes are searched for the values, parsed with Pillow for what is left, and
compared pixel by pixel with the download; the values themselves go to the encrypted private fields.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from cryptography.fernet import Fernet
from PIL import Image
from sqlalchemy import select, text
from test_hostile_downloads import gps_jpeg

from harvest.images.privacy import decrypt_private
from harvest.state.db import session_scope
from harvest.state.models import Image as ImageRow
from harvest.state.models import ImageUrl

from .metadata_files import Leak, dag_zip, harvest, jpeg, leak_cases

#: EXIF tags a published file may hold: make, model, orientation, resolution (IFD0); exposure,
#: capture time, colour space (Exif IFD); the Exif IFD pointer itself
ALLOWED_IFD0 = {0x010F, 0x0110, 0x0112, 0x011A, 0x011B, 0x0128, 0x8769}
ALLOWED_EXIF_IFD = {0x829A, 0x829D, 0x8827, 0x9003, 0x920A, 0xA001}
#: Pillow's names for metadata blocks that must be gone (XMP, APP13, comments, EXIF-in-text)
FORBIDDEN_INFO = {"xmp", "XML:com.adobe.xmp", "photoshop", "comment", "Raw profile type exif", "Author"}


def what_leaked(case: Leak, published: bytes | None) -> list[str]:
    """Everything wrong with the published copy of one case (empty when all is well)."""
    if published is None:
        return ["not published"]
    problems = [f"{needle.decode()!r} in the bytes" for needle in case.needles if needle in published]
    with Image.open(io.BytesIO(published)) as copy, Image.open(io.BytesIO(case.data)) as source:
        exif = copy.getexif()
        problems += [f"IFD0 tag 0x{tag:04X}" for tag in set(exif) - ALLOWED_IFD0]
        problems += [f"Exif tag 0x{tag:04X}" for tag in set(exif.get_ifd(0x8769)) - ALLOWED_EXIF_IFD]
        problems += [
            f"{name} IFD" for name, ifd in (("GPS", 0x8825), ("Interop", 0xA005)) if exif.get_ifd(ifd)
        ]
        problems += [f"info[{key!r}]" for key in FORBIDDEN_INFO & set(copy.info)]
        kept = source.getexif()
        for tag in (0x010F, 0x0110, 0x0112):  # make, model, orientation: allowed, so kept
            if exif.get(tag) != kept.get(tag):
                problems.append(f"allowed tag 0x{tag:04X} lost ({exif.get(tag)!r} != {kept.get(tag)!r})")
        if exif.get_ifd(0x8769).get(0x9003) != kept.get_ifd(0x8769).get(0x9003):
            problems.append("capture time lost")
        for key in ("icc_profile", "dpi"):
            if copy.info.get(key) != source.info.get(key):
                problems.append(f"allowed {key} lost")
        if not np.array_equal(np.asarray(copy), np.asarray(source)):
            problems.append("pixels differ")
    return problems


def test_only_allowed_metadata_is_published_and_the_rest_is_kept_encrypted(postgres_url, tmp_path):
    key = Fernet.generate_key().decode()
    cases = leak_cases()
    run = harvest(
        postgres_url,
        "manual__metadata",
        str(tmp_path / "dataset"),
        {f"/{case.name}": (case.data, case.content_type) for case in cases},
        HARVEST_METADATA_KEY=key,
    )
    leaks = {case.name: what_leaked(case, run.published[f"/{case.name}"]) for case in cases}
    print("published metadata outside the allow-list, per case:", leaks)
    assert leaks == dict.fromkeys(leaks, [])

    with session_scope(postgres_url) as session:
        rows = {
            url.removeprefix(run.base): row
            for url, row in session.execute(select(ImageUrl.url, ImageRow).join(ImageRow))
        }
    for case in cases:
        row = rows[f"/{case.name}"]
        private = decrypt_private(row.exif_private, key)
        assert {name: private.get(name) for name in case.private} == case.private, case.name
        assert set(case.private) <= set(row.private_fields), case.name
        assert all(needle.decode() not in str(row.exif) for needle in case.needles), case.name


def determinism_site() -> dict[str, tuple[bytes, str]]:
    """The seven leak cases, an EXIF GPS photo, a photo with nothing to remove and one with an
    archive appended."""
    files = {f"/{case.name}": (case.data, case.content_type) for case in leak_cases()}
    files["/gps.jpg"] = (gps_jpeg(), "image/jpeg")
    files["/plain.jpg"] = (jpeg(40, exif=Image.Exif()), "image/jpeg")
    files["/appended.jpg"] = (jpeg(41) + dag_zip(), "image/jpeg")
    return files


def test_the_same_photos_publish_the_same_bytes_whatever_earlier_runs_left(postgres_url, s3):
    """Two harvests into fresh buckets against one state DB publish the same bytes; so does a third
    after the DB was made to look like an earlier version's (no clean copies recorded), and a
    fourth after it was made to look like rows made under other metadata rules."""
    from resilience.harvest_runs import new_bucket

    files = determinism_site()
    first = harvest(postgres_url, "manual__first", f"s3://{new_bucket(s3)}/ds", files, s3=s3)
    second = harvest(postgres_url, "manual__second", f"s3://{new_bucket(s3)}/ds", files, s3=s3)

    def as_an_older_version(cfg) -> None:
        with session_scope(cfg.database_url) as session:
            session.execute(
                text(
                    "UPDATE images SET clean_key = NULL, clean_sha256 = NULL, private_fields = NULL, exif_private = NULL"
                )
            )

    third = harvest(
        postgres_url,
        "manual__third",
        f"s3://{new_bucket(s3)}/ds",
        files,
        s3=s3,
        before_publish=as_an_older_version,
    )

    def under_older_rules(cfg) -> None:  # the download published as its own clean copy, no policy
        with session_scope(cfg.database_url) as session:
            session.execute(
                text(
                    "UPDATE images SET clean_key = storage_key, clean_sha256 = sha256, metadata_policy = NULL"
                )
            )

    fourth = harvest(
        postgres_url,
        "manual__fourth",
        f"s3://{new_bucket(s3)}/ds",
        files,
        s3=s3,
        before_publish=under_older_rules,
    )
    assert all(first.published.values()), [path for path, data in first.published.items() if data is None]
    for later in (second, third, fourth):
        differing = [path for path in files if later.published[path] != first.published[path]]
        assert differing == [], f"{later.cfg.run_id} published other bytes for {differing}"
    cases = {f"/{case.name}": case for case in leak_cases()}
    for path, case in cases.items():
        assert what_leaked(case, third.published[path]) == [], path
    assert b"SN-0042" not in third.published["/gps.jpg"] and b"Jane Doe" not in third.published["/gps.jpg"]
    assert b"owned.py" not in third.published["/appended.jpg"]


@pytest.mark.parametrize("staged", ["kept", "gone"])
def test_objects_an_older_version_published_with_metadata_are_replaced(postgres_url, tmp_path, staged):
    """A destination where an earlier version published a photo as downloaded (GPS in its XMP, so
    its deny-list saw nothing private): the next publish withdraws and deletes that object and
    publishes the clean copy instead, made from the staged download or, when staging was emptied
    since, from the published object itself."""
    from harvest.state.models import Publication, utcnow
    from harvest.storage import LocalStore

    case = leak_cases()[0]
    destination = tmp_path / "dataset"
    leaked: list[str] = []

    def published_by_an_older_version(cfg) -> None:
        with session_scope(cfg.database_url) as session:
            session.execute(
                text("UPDATE images SET clean_key = NULL, clean_sha256 = NULL, private_fields = NULL")
            )
            sha = session.scalars(select(ImageRow.sha256)).one()
            leaked.append(f"images/egyptian_cat/{sha}.jpg")
            session.add(
                Publication(
                    destination=cfg.destination,
                    key=leaked[0],
                    sha256=sha,
                    run_id=cfg.run_id,
                    created_at=utcnow(),
                )
            )
        LocalStore(destination).put(leaked[0], case.data)
        if staged == "gone":
            shutil.rmtree(cfg.staging)

    run = harvest(
        postgres_url,
        "manual__repair",
        str(destination),
        {f"/{case.name}": (case.data, case.content_type)},
        before_publish=published_by_an_older_version,
    )
    files = {p.relative_to(destination).as_posix(): p.read_bytes() for p in destination.rglob("images/*/*")}
    assert leaked[0] not in files, "the object published with metadata is still there"
    assert list(files.values()) == [run.published[f"/{case.name}"]]
    assert what_leaked(case, run.published[f"/{case.name}"]) == []
    with session_scope(postgres_url) as session:
        old = session.scalars(select(Publication).where(Publication.key == leaked[0])).one()
    assert (
        old.withdrawn_reason == "published with metadata outside the allow-list; replaced by the clean copy"
    )
