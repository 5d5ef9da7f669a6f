"""Dataset-quality settings: read from HARVEST_* variables, refused together when wrong, secrets hidden."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from harvest.pipeline import run_params
from harvest.settings.config import ConfigError, build_config

PARAMS = {"seeds": ["https://example.org/"], "labels": ["goldfish"]}


def test_defaults():
    cfg = build_config(PARAMS, "r", env={})
    assert (cfg.near_dup_distance, cfg.placeholder_min_urls, cfg.placeholder_distance) == (6, 10, 4)
    assert cfg.min_entropy == 2.0 and cfg.variant_widths == ()
    assert cfg.exports == ("parquet", "card")  # the dataset manifest and card; WebDataset when asked for
    assert cfg.thumbnail_size == 0 and cfg.metadata_key is None
    assert cfg.inspect_processes is None  # "auto": decided per shard from the cores and its size


def test_values_from_the_environment():
    key = Fernet.generate_key().decode()
    env = {
        "HARVEST_NEAR_DUP_DISTANCE": "8",
        "HARVEST_PLACEHOLDER_MIN_URLS": "25",
        "HARVEST_MIN_ENTROPY": "3.5",
        "HARVEST_EXPORTS": "webdataset, parquet",
        "HARVEST_VARIANT_WIDTHS": "1024,256,256",
        "HARVEST_THUMBNAIL_SIZE": "128",
        "HARVEST_METADATA_KEY": key,
    }
    cfg = build_config(PARAMS, "r", env=env)
    assert (cfg.near_dup_distance, cfg.placeholder_min_urls, cfg.min_entropy) == (8, 25, 3.5)
    assert cfg.exports == ("parquet", "webdataset") and cfg.variant_widths == (256, 1024)
    assert cfg.thumbnail_size == 128 and cfg.metadata_key == key
    assert key not in repr(cfg) and "metadata_key" not in run_params(cfg)
    assert build_config(PARAMS, "r", env={"HARVEST_EXPORTS": "all"}).exports == (
        "parquet",
        "card",
        "webdataset",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("none", ()),
        (" None ", ()),
        ("", ("parquet", "card")),
        ("card", ("card",)),
        ("webdataset", ("webdataset",)),
    ],
)
def test_exports_can_be_turned_off_or_chosen(value, expected):
    assert build_config(PARAMS, "r", env={"HARVEST_EXPORTS": value}).exports == expected


@pytest.mark.parametrize(("value", "expected"), [("auto", None), (" AUTO ", None), ("0", 0), ("3", 3)])
def test_inspecting_processes_from_the_environment(value, expected):
    assert build_config(PARAMS, "r", env={"HARVEST_INSPECT_PROCESSES": value}).inspect_processes == expected


@pytest.mark.parametrize("value", ["many", "-1", "65"])
def test_a_bad_number_of_inspecting_processes_is_refused(value):
    with pytest.raises(ConfigError, match="HARVEST_INSPECT_PROCESSES must be 'auto' or a number"):
        build_config(PARAMS, "r", env={"HARVEST_INSPECT_PROCESSES": value})


def test_every_bad_value_is_reported_at_once():
    env = {
        "HARVEST_NEAR_DUP_DISTANCE": "40",
        "HARVEST_MIN_ENTROPY": "lots",
        "HARVEST_EXPORTS": "parquet,csv",
        "HARVEST_VARIANT_WIDTHS": "256,huge",
        "HARVEST_METADATA_KEY": "not-a-key",
    }
    with pytest.raises(ConfigError) as info:
        build_config(PARAMS, "r", env=env)
    problems = " | ".join(info.value.problems)
    for name in ("HARVEST_NEAR_DUP_DISTANCE", "HARVEST_MIN_ENTROPY", "csv", "'huge'", "HARVEST_METADATA_KEY"):
        assert name in problems
    assert "not-a-key" not in problems
