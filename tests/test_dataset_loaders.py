"""A real harvest's output loads with the libraries its users train with: Hugging Face ``datasets``
(the image folder with its metadata, and the Parquet manifest), ``webdataset`` (``decode("pil")``,
integer classes), Keras' ``image_dataset_from_directory``; and JSONL, Parquet, ``metadata.jsonl``
and the WebDataset JSON share one schema. Demo site on loopback, the real classifier, an Airflow-style
run id (with ``:`` and ``+``), every export and the JPEG training copy."""

from __future__ import annotations

import io
import json
import os
import random
import re
import stat
import tarfile
from pathlib import Path

import pytest
import yaml
from helpers import EXPECTED_KEPT, sha256_file
from PIL import Image

from harvest.demo_site import DEMO_LABELS
from harvest.model.registry import model_key
from harvest.pipeline import run_all
from harvest.settings.config import build_config

RUN_ID = "manual__2026-12-03T07:36:58.434181+00:00"
RUN_SLUG = "manual__2026-12-03T07-36-58.434181-00-00"
LABELS = sorted(set(EXPECTED_KEPT.values()))


@pytest.fixture(scope="module")
def harvested(site, classifier, tmp_path_factory):
    """One harvest for the module, under the usual umask of 022."""
    root = tmp_path_factory.mktemp("loaders")
    env = {
        "HARVEST_HOME": str(root / "home"),
        "HARVEST_LOCAL_ROOTS": str(root),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOST_DELAY": "0.01",
        "HARVEST_EXPORTS": "all",
        "HARVEST_WEBDATASET_SHARD_SIZE": "3",
        "HARVEST_THUMBNAIL_SIZE": "64",
    }
    params = {
        "seeds": [f"{site}/index.html"],
        "labels": list(DEMO_LABELS),
        "destination": str(root / "dataset"),
        "publish_format": "jpeg",
    }
    previous = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            cfg = build_config(params, RUN_ID)
            report = run_all(cfg, classifier)[-1]
    finally:
        os.umask(previous)
    return cfg, Path(cfg.destination), report


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _classes(destination: Path) -> dict[str, int]:
    return json.loads((destination / "classes.json").read_text())


def _shard_urls(destination: Path) -> list[str]:
    listing = json.loads((destination / "webdataset" / "shards.json").read_text())
    return [str(destination / shard["url"]) for shard in listing["shards"]]


def test_files_are_readable_by_others_and_safely_named(harvested):
    _, destination, _ = harvested
    for path in [destination, *destination.rglob("*")]:
        if path.name == ".writing" or ".writing" in path.parts:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
        relative = path.relative_to(destination).as_posix()
        assert re.fullmatch(r"[A-Za-z0-9._/-]+", relative), relative  # no ':' or '+' (Windows, S3 tools)
    assert (destination / "manifests" / f"{RUN_SLUG}.jsonl").is_file()


def test_every_row_carries_the_real_run_id_and_model(harvested):
    cfg, destination, _ = harvested
    rows = _jsonl(destination / "manifests" / f"{RUN_SLUG}.jsonl")
    model = model_key(cfg.model, cfg.models_dir)
    assert len(rows) == len(EXPECTED_KEPT)
    classes = _classes(destination)
    for row in rows:
        assert row["run_id"] == RUN_ID and row["model"] == model
        assert row["label_index"] == classes[row["label"]]
        assert row["training_key"] == f"training/{row['label']}/{row['sha256']}.jpg"


def test_jsonl_parquet_metadata_and_webdataset_json_share_one_schema(harvested):
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from harvest.dataset.schema import arrow_schema

    _, destination, _ = harvested
    parquet = pq.read_table(destination / "manifests" / "dataset.parquet")
    jsonl_path = destination / "manifests" / f"{RUN_SLUG}.jsonl"
    jsonl = pj.read_json(jsonl_path, parse_options=pj.ParseOptions(explicit_schema=arrow_schema()))
    assert parquet.schema.equals(jsonl.schema) and parquet.schema.equals(arrow_schema())
    assert "model" in parquet.column_names and "run_id" in parquet.column_names
    by_key = {row["key"]: row for row in parquet.to_pylist()}
    # one run made the whole dataset: its manifest and the dataset's rows are the same rows
    assert {row["key"]: row for row in jsonl.to_pylist()} == by_key
    metadata = _jsonl(destination / "images" / "metadata.jsonl")
    for line in metadata:
        file_name = line.pop("file_name")
        assert f"images/{file_name}" == line["key"] and list(line) == parquet.column_names
        assert line == json.loads(json.dumps(by_key[line["key"]]))
    samples = 0
    for shard in _shard_urls(destination):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    assert list(meta) == parquet.column_names and meta["key"] in by_key
                    assert member.name == f"{meta['sha256']}.json"
                    samples += 1
    assert samples == parquet.num_rows == len(EXPECTED_KEPT)


def test_hugging_face_loads_the_images_with_their_metadata(harvested, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, destination, _ = harvested
    cache = str(tmp_path / "hf")
    # the folder itself: the card's configs name images/** only, not card/, variants/, thumbnails/
    loaded = datasets.load_dataset(str(destination), split="train", cache_dir=cache)
    assert loaded.num_rows == len(EXPECTED_KEPT)
    assert {"image", "label", "label_index", "url", "page_url", "alt", "score", "sha256"} <= set(
        loaded.column_names
    )
    names = [name for name, _ in sorted(_classes(destination).items(), key=lambda kv: kv[1])]
    typed = loaded.cast_column("label", datasets.ClassLabel(names=names))
    for row, typed_row in zip(loaded, typed, strict=True):
        assert row["image"].size == (row["width"], row["height"])
        assert row["url"].startswith("http") and row["score"] > 0
        assert typed_row["label"] == row["label_index"] == names.index(row["label"])
    # the builder named explicitly, on the image folder
    folder = datasets.load_dataset(
        "imagefolder", data_dir=str(destination / "images"), split="train", cache_dir=cache
    )
    assert folder.num_rows == len(EXPECTED_KEPT) and "alt" in folder.column_names
    # the JPEG training copy has its own config
    jpeg = datasets.load_dataset(str(destination), "jpeg", split="train", cache_dir=cache)
    assert jpeg.num_rows == len(EXPECTED_KEPT) and all(img.mode == "RGB" for img in jpeg["image"])


def test_hugging_face_loads_the_parquet_manifest(harvested, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, destination, _ = harvested
    cache = str(tmp_path / "hf")
    manifest = datasets.load_dataset(
        "parquet",
        data_files=str(destination / "manifests" / "dataset.parquet"),
        split="train",
        cache_dir=cache,
    )
    assert manifest.num_rows == len(EXPECTED_KEPT)
    assert manifest.features["label_index"].dtype == "int32" and manifest.features["score"].dtype == "float64"
    assert sorted(manifest["label"]) == sorted(EXPECTED_KEPT.values())
    assert set(manifest["run_id"]) == {RUN_ID}


def test_webdataset_decodes_images_and_integer_classes(harvested):
    import webdataset as wds

    _, destination, _ = harvested
    classes = _classes(destination)
    pipeline = wds.WebDataset(_shard_urls(destination), shardshuffle=False, empty_check=False)
    samples = list(pipeline.decode("pil").to_tuple("__key__", "jpg", "cls", "json"))
    assert len(samples) == len(EXPECTED_KEPT)
    for key, image, cls, meta in samples:
        assert isinstance(image, Image.Image) and image.size == (meta["width"], meta["height"])
        assert isinstance(cls, int) and cls == classes[meta["label"]] == meta["label_index"]
        assert key == meta["sha256"] and (destination / meta["key"]).is_file()
    # shuffled across labels with the run's seed, not in label order
    keys = sorted(meta["key"] for *_, meta in samples)
    random.Random(RUN_ID).shuffle(keys)
    assert [meta["key"] for *_, meta in samples] == keys


def test_keras_reads_the_originals_and_the_training_copy(harvested):
    import tensorflow as tf

    _, destination, _ = harvested
    for folder in ("images", "training"):
        dataset = tf.keras.utils.image_dataset_from_directory(
            destination / folder, image_size=(64, 64), batch_size=8, shuffle=False
        )
        assert dataset.class_names == LABELS
        assert sum(int(batch.shape[0]) for batch, _ in dataset) == len(EXPECTED_KEPT)


def test_training_copy_is_rgb_jpeg_and_originals_are_kept(harvested):
    from harvest.images.variants import TRAINING_JPEG_QUALITY

    _, destination, _ = harvested
    originals = sorted((destination / "images").rglob("*.jpg"))
    assert len(originals) == len(EXPECTED_KEPT)
    for original in originals:
        assert sha256_file(original) == original.stem  # the published bytes, untouched
        copy = destination / "training" / original.parent.name / original.name
        with Image.open(original) as source, Image.open(copy) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.mode == "RGB" and jpeg.size == source.size
    assert TRAINING_JPEG_QUALITY == 90
    assert "quality 90" in (destination / "README.md").read_text()


def test_card_has_a_yaml_header_runs_table_and_plots(harvested):
    cfg, destination, _ = harvested
    card = (destination / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["task_categories"] == ["image-classification"] and header["license"] == "other"
    assert header["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]}
    assert configs == {"default": "images/**", "jpeg": "training/**"}
    model = model_key(cfg.model, cfg.models_dir)
    assert f"| `{RUN_ID}` | `{model}` |" in card and f"| {cfg.top_k} | {cfg.threshold} | 64x64 | 4 |" in card
    assert (
        'load_dataset("parquet"' in card
        and "load_dataset(" in card
        and "wds.WebDataset" in card
        and "image_dataset_from_directory" in card
    )
    for plot in ("card/scores.png", "card/sizes.png"):
        with Image.open(destination / plot) as image:
            assert image.format == "PNG" and image.width > 100
    with Image.open(destination / "card" / "samples.jpg") as sheet:
        assert sheet.height >= len(LABELS) * 96  # a row of thumbnails per label


def test_classes_are_append_only(tmp_path):
    from harvest.dataset.layout import ClassIndex
    from harvest.storage import LocalStore

    store = LocalStore(tmp_path / "d")
    assert ClassIndex(store).ensure(["espresso", "daisy"])
    again = ClassIndex(store)
    assert not again.ensure(["daisy"]) and again.ensure(["palace", "cat"])
    assert json.loads(store.get("classes.json")) == {"daisy": 0, "espresso": 1, "cat": 2, "palace": 3}
    assert ClassIndex(store).names() == ["daisy", "espresso", "cat", "palace"]


def test_slugs_keep_run_ids_apart_from_file_names():
    from harvest.dataset.layout import manifest_key, slug

    assert slug(RUN_ID) == RUN_SLUG and manifest_key("manual__cli") == "manifests/manual__cli.jsonl"
    assert slug("scheduled__2026-11-01T00:00:00+00:00") == "scheduled__2026-11-01T00-00-00-00-00"
    assert manifest_key("../../etc/x") == "manifests/etc-x.jsonl"


def test_local_store_honours_the_umask(tmp_path):
    from harvest.storage import LocalStore

    store = LocalStore(tmp_path / "d")
    previous = os.umask(0o077)
    try:
        store.put("private/a.bin", b"x")
        with io.BytesIO(b"y") as source:
            store.put_file("private/b.bin", source)
    finally:
        os.umask(previous)
    for key in ("private/a.bin", "private/b.bin"):
        assert stat.S_IMODE((tmp_path / "d" / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d" / "private").stat().st_mode) == 0o700


def test_s3_destination_gets_safe_names_shards_and_classes(postgres_url, s3, bucket):
    """The same layout in a bucket (moto's server on loopback): slugged names, integer classes,
    shards listed, every row with the real run id."""
    from fixed_server import Response, serve
    from helpers import bucket_objects
    from skimage import data
    from sqlalchemy import select
    from stage_setup import encode, make_config, record_answers, seed_candidates

    from harvest.stages.download import run_download
    from harvest.stages.publish import run_publish
    from harvest.state.db import session_scope
    from harvest.state.models import ImageUrl

    photos = {
        "/cat.jpg": encode(Image.fromarray(data.chelsea()), "JPEG", quality=90),
        "/coffee.jpg": encode(Image.fromarray(data.coffee()), "JPEG", quality=90),
    }
    run_id = "scheduled__2026-12-04T00:00:00+00:00"
    with serve({path: Response(body) for path, body in photos.items()}) as base:
        cfg = make_config(postgres_url, run_id, f"s3://{bucket}/ds", s3=s3, HARVEST_EXPORTS="all")
        seed_candidates(cfg, [base + path for path in photos])
        run_download(cfg, 0)
        with session_scope(cfg.database_url) as session:
            shas = dict(session.execute(select(ImageUrl.url, ImageUrl.sha256)).all())
        record_answers(cfg, {shas[base + "/cat.jpg"]: "egyptian_cat", shas[base + "/coffee.jpg"]: "espresso"})
        assert run_publish(cfg).done == 2
    objects = bucket_objects(s3, bucket, "ds")
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", key) for key in objects), sorted(objects)
    rows = [
        json.loads(line)
        for line in objects["manifests/scheduled__2026-12-04T00-00-00-00-00.jsonl"].splitlines()
    ]
    assert {row["run_id"] for row in rows} == {run_id}
    classes = json.loads(objects["classes.json"])
    assert classes == {"egyptian_cat": 0, "espresso": 1}
    (shard,) = json.loads(objects["webdataset/shards.json"])["shards"]
    assert shard == {"url": "webdataset/scheduled__2026-12-04T00-00-00-00-00-00000.tar", "samples": 2}
    with tarfile.open(fileobj=io.BytesIO(objects[shard["url"]])) as tar:
        for row in rows:
            assert int(tar.extractfile(f"{row['sha256']}.cls").read()) == classes[row["label"]]
