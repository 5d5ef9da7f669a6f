"""Strict settings: a misspelt key is refused with the nearest name, and one message lists every
problem of a conf, the labels the model does not know and an unwritable destination included."""

from __future__ import annotations

import pytest

from harvest.pipeline import run_checks
from harvest.settings.config import ConfigError, build_config, nothing_to_crawl
from harvest.settings.keys import unknown_key_problems
from harvest.settings.profiles import load_profile

GOOD = {"seeds": ["https://example.com/"], "labels": ["goldfish"]}


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"HARVEST_HOME": str(tmp_path / "home"), "HARVEST_LOCAL_ROOTS": str(tmp_path)}


def problems_of(params, env, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(params, "run-1", env=env, **kwargs)
    return info.value.problems


def test_misspelt_conf_key_is_refused_with_the_right_name(env):
    problems = problems_of({**GOOD, "treshold": 0.5}, env)
    assert problems == ["unknown setting 'treshold'; did you mean 'threshold'?"]


def test_misspelt_override_is_refused_too(env):
    problems = problems_of(GOOD, env, overrides={"max_dept": 1})
    assert problems == ["unknown setting 'max_dept'; did you mean 'max_depth'?"]


def test_a_key_like_no_setting_lists_the_known_ones():
    [problem] = unknown_key_problems(["colour"], ["labels", "seeds"], "conf")
    assert problem == "conf: unknown setting 'colour'; known settings: labels, seeds"


def test_extra_keys_are_accepted_where_a_dag_has_them(env):
    cfg = build_config({**GOOD, "harvest_run_id": "r"}, "run-1", env=env, extra_keys=("harvest_run_id",))
    assert cfg.labels == ("goldfish",)


def test_profile_with_a_misspelt_key_is_refused_with_a_suggestion(tmp_path, env):
    (tmp_path / "fish.yaml").write_text("seeds: [https://example.com/]\nlables: [goldfish]\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'lables'; did you mean 'labels'\?"):
        load_profile("fish", tmp_path)


def test_overrides_win_over_the_profile_key_by_key(tmp_path, env):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "fish.yaml").write_text(
        "seeds: [https://example.com/]\nlabels: [goldfish]\nthreshold: 0.3\nmax_depth: 1\n"
    )
    env = {**env, "HARVEST_PROFILES_DIR": str(profiles)}
    cfg = build_config({"profile": "fish"}, "run-1", env=env, overrides={"threshold": 0.5})
    assert (cfg.threshold, cfg.max_depth, cfg.labels) == (0.5, 1, ("goldfish",))


def test_every_problem_of_a_conf_in_one_message_labels_and_destination_included(tmp_path, env, models_dir):
    """An ftp seed, an unknown label, an ambiguous label and an unwritable destination: one round."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the destination folder should be")
    conf = {
        "seeds": ["ftp://files.example/a"],
        "labels": ["goldfsh", "crane"],
        "destination": str(blocker / "out"),
        "treshold": 0.5,
    }
    with pytest.raises(ConfigError) as info:
        build_config(conf, "run-1", env=env, checks=run_checks)
    text = str(info.value)
    assert "unknown setting 'treshold'; did you mean 'threshold'?" in text
    assert "seed 'ftp://files.example/a': only http and https" in text
    assert "'goldfsh'" in text and "did you mean" in text
    assert "'crane'" in text and "ambiguous" in text
    assert str(blocker) in text
    assert len(info.value.problems) >= 5


def test_checks_pass_for_good_settings(tmp_path, env, models_dir):
    cfg = build_config({**GOOD, "destination": str(tmp_path / "out")}, "run-1", env=env, checks=run_checks)
    assert cfg.destination == str(tmp_path / "out")


@pytest.mark.parametrize(
    ("params", "conf", "empty"),
    [
        ({}, {}, True),
        ({"seeds": []}, {"threshold": 0.5}, True),
        ({}, {"seeds": ["https://example.com/"]}, False),
        ({"profile": "fish"}, {}, False),
        ({"url_list": "/data/urls.csv"}, {}, False),
        ({"seeds": ["https://example.com/"]}, {"threshold": 0.5}, False),
    ],
)
def test_nothing_to_crawl(params, conf, empty):
    assert nothing_to_crawl(params, conf) is empty
