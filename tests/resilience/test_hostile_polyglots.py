"""Polyglots through the real download and publish stages: images with a ZIP archive (a DAG file
inside), HTML or a script after their end. Decoders stop at the image's own end, so such a file
passes every image check; published as it is, it would also be an archive that Airflow loads from a
DAGs folder, or a page a browser runs. What is published must end where the image ends (JPEG EOI
after the last scan, PNG IEND, GIF trailer, WebP RIFF size, BMP pixel data, TIFF's own blocks),
decode to the same pixels, and be neither a ZIP archive nor markup; a file whose kept parts carry
an archive or markup is refused with its reason recorded.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from helpers import candidate_states
from PIL import Image

from .metadata_files import DAG_SOURCE, harvest, markup_in_profile, polyglot_cases, zip_in_profile


def test_data_after_the_image_end_is_never_published(postgres_url, tmp_path):
    cases = polyglot_cases()
    run = harvest(
        postgres_url,
        "manual__polyglots",
        str(tmp_path / "dataset"),
        {f"/{name}": (appended, content_type) for name, (_, appended, content_type) in cases.items()},
    )
    problems: dict[str, list[str]] = {}
    for name, (original, appended, _) in cases.items():
        assert zipfile.is_zipfile(io.BytesIO(appended)) or b"<script>" in appended  # the input is hostile
        published = run.published[f"/{name}"]
        if published is None:
            problems[name] = ["not published"]
            continue
        found = []
        if zipfile.is_zipfile(io.BytesIO(published)):
            found.append("a ZIP archive")
        if DAG_SOURCE[:20] in published or b"<script>" in published or b"<html>" in published:
            found.append("the appended bytes")
        if len(published) > len(original):
            found.append(f"{len(published) - len(original)} bytes longer than the image")
        with Image.open(io.BytesIO(published)) as copy, Image.open(io.BytesIO(original)) as source:
            if not np.array_equal(np.asarray(copy), np.asarray(source)):
                found.append("other pixels")
        problems[name] = found
    print("published polyglots, per case:", problems)
    assert problems == dict.fromkeys(cases, [])


def test_a_file_whose_kept_parts_hide_an_archive_or_markup_is_refused(postgres_url, tmp_path):
    files = {
        "/script-in-profile.jpg": (markup_in_profile(), "image/jpeg"),
        "/zip-in-profile.jpg": (zip_in_profile(), "image/jpeg"),
    }
    run = harvest(postgres_url, "manual__hidden", str(tmp_path / "dataset"), files)
    assert run.published == dict.fromkeys(files)
    states = candidate_states(postgres_url, run.cfg.run_id, run.base)
    assert states["script-in-profile.jpg"][0] == "skipped"
    assert states["script-in-profile.jpg"][1].startswith("polyglot: the file carries HTML/script markup")
    assert states["zip-in-profile.jpg"] == ("skipped", "polyglot: the file is also a ZIP archive")
