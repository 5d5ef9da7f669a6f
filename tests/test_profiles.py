"""Named harvest profiles: selected by name, their settings replace the form's, mistakes named."""

from __future__ import annotations

import pytest

from harvest.settings.config import ConfigError, build_config
from harvest.settings.profiles import apply_profile, list_profiles, load_profile


@pytest.fixture
def profiles(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "fish.yaml").write_text(
        "description: nightly fish\nseeds: [https://fish.example/]\nlabels: [goldfish]\nmax_depth: 1\n"
    )
    (folder / "broken.yml").write_text("seeds: [https://x.example/\n")
    (folder / "typo.yaml").write_text("seeds: [https://x.example/]\nlables: [goldfish]\n")
    (folder / "notes.txt").write_text("not a profile")
    return folder


def test_profiles_are_listed_by_name(profiles):
    assert list_profiles(profiles) == ["broken", "fish", "typo"]
    assert list_profiles(profiles / "missing") == []


def test_profile_settings_replace_the_form(profiles):
    merged = apply_profile({"profile": "fish", "seeds": ["https://form.example/"], "top_k": 3}, profiles)
    assert merged["seeds"] == ["https://fish.example/"]
    assert merged["max_depth"] == 1
    assert merged["top_k"] == 3  # not in the profile: the form's value stays
    assert "description" not in merged


def test_build_config_uses_the_named_profile(profiles, tmp_path):
    env = {"HARVEST_PROFILES_DIR": str(profiles), "HARVEST_HOME": str(tmp_path)}
    cfg = build_config({"profile": "fish"}, "scheduled__1", env=env)
    assert cfg.seeds == ("https://fish.example/",)
    assert cfg.labels == ("goldfish",)
    assert cfg.max_depth == 1 and cfg.profile == "fish"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", r"profile 'nope' not found .* \(known profiles: broken, fish, typo\)"),
        ("broken", "not valid YAML"),
        ("typo", r"unknown setting .lables.; did you mean .labels.\?"),
    ],
)
def test_profile_mistakes_are_named(profiles, name, message):
    with pytest.raises(ConfigError, match=message):
        load_profile(name, profiles)


def test_shipped_profiles_are_valid(tmp_path):
    from harvest.settings.env import DEFAULT_PROFILES_DIR

    names = list_profiles(DEFAULT_PROFILES_DIR)
    assert names, "include/profiles/ ships at least one example"
    for name in names:
        cfg = build_config({"profile": name}, "manual__check", env={"HARVEST_HOME": str(tmp_path)})
        assert cfg.seeds and cfg.labels
