"""Every run Param is an option of both command lines (``harvest`` and ``scripts/run_harvest.py``),
generated from the one Params spec, with a params file and ``--params`` below the options."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harvest.cli import _parser as harvest_parser
from harvest.demo_site import DEMO_LABELS
from harvest.settings import params as params_module
from harvest.settings.cli_options import given_params, option_name, split_list
from harvest.settings.errors import ConfigError
from harvest.settings.params import HARVEST_PARAMS, ParamSpec
from harvest.state.db import session_scope
from harvest.state.models import Run

REPO = Path(__file__).resolve().parents[1]


def _run_harvest_parser() -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location("run_harvest", REPO / "scripts" / "run_harvest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._parser()


def _harvest_run(*argv: str) -> list[str]:
    return ["run", "--run-id", "r", *argv]


#: Both entry points, each as (parser factory, the arguments every call needs before the options).
ENTRY_POINTS = {
    "harvest run": (harvest_parser, ["run", "--run-id", "r"]),
    "harvest stage": (harvest_parser, ["stage", "crawl", "--run-id", "r"]),
    "run_harvest.py": (_run_harvest_parser, []),
}


def _sample(spec: ParamSpec) -> tuple[list[str], object]:
    """Command-line words setting ``spec`` to a value other than its default, and that value."""
    flag = option_name(spec.name)
    if spec.type == "boolean":
        return ([f"--no-{flag[2:]}"], False) if spec.default else ([flag], True)
    if spec.type == "array":
        return [flag, "first", flag, "second,third"], ["first", "second", "third"]
    if spec.type == "integer":
        value = spec.default + 1 if spec.maximum is None or spec.default < spec.maximum else spec.default - 1
        return [flag, str(value)], value
    if spec.type == "number":
        value = (spec.default + (spec.maximum or spec.default + 1)) / 2
        return [flag, str(value)], value
    return [flag, f"{spec.name}-value"], f"{spec.name}-value"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_param_is_an_option_of_each_entry_point(entry):
    make_parser, head = ENTRY_POINTS[entry]
    argv, expected = list(head), {}
    for spec in HARVEST_PARAMS.values():
        words, value = _sample(spec)
        argv += words
        expected[spec.name] = value
    assert given_params(make_parser().parse_args(argv)) == expected


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_new_param_in_the_spec_is_an_option_without_touching_the_command_lines(entry, monkeypatch):
    added = ParamSpec("jpeg_quality", 90, "integer", "JPEG quality", minimum=1, maximum=100)
    monkeypatch.setitem(params_module.HARVEST_PARAMS, added.name, added)
    make_parser, head = ENTRY_POINTS[entry]
    assert given_params(make_parser().parse_args([*head, "--jpeg-quality", "75"])) == {"jpeg_quality": 75}
    with pytest.raises(SystemExit):  # the spec's bounds hold on the command line too
        make_parser().parse_args([*head, "--jpeg-quality", "101"])


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_unknown_options_are_refused(entry, capsys):
    make_parser, head = ENTRY_POINTS[entry]
    with pytest.raises(SystemExit) as exited:
        make_parser().parse_args([*head, "--treshold", "0.5"])
    assert exited.value.code == 2
    assert "--treshold" in capsys.readouterr().err


def test_options_win_over_params_json_which_wins_over_the_file(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("threshold: 0.4\ntop_k: 7\nmax_pages: 30\nlabels:\n  - goldfish\n  - tabby\n")
    args = harvest_parser().parse_args(
        _harvest_run(
            "--params-file", str(settings), "--params", '{"top_k": 4, "quota": 2}', "--threshold", "0.6"
        )
    )
    assert given_params(args) == {
        "threshold": 0.6,  # option over file
        "top_k": 4,  # --params over file
        "quota": 2,
        "max_pages": 30,  # file over defaults
        "labels": ["goldfish", "tabby"],
    }
    json_file = tmp_path / "settings.json"
    json_file.write_text(json.dumps({"same_domain": False}))
    args = harvest_parser().parse_args(_harvest_run("--params-file", str(json_file), "--same-domain"))
    assert given_params(args) == {"same_domain": True}


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.yaml", "a: [1,", "not valid YAML"),
        ("list.yaml", "- 1\n- 2\n", "expected an object of Params, got list"),
    ],
)
def test_a_bad_params_file_is_named_with_its_problem(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        given_params(harvest_parser().parse_args(_harvest_run("--params-file", str(path))))
    assert str(path) in str(raised.value) and problem in str(raised.value)
    with pytest.raises(ConfigError, match="cannot read"):
        given_params(
            harvest_parser().parse_args(_harvest_run("--params-file", str(tmp_path / "missing.json")))
        )


def test_list_options_split_on_commas_outside_brackets():
    assert split_list(" a, b ,,c ") == ["a", "b", "c"]
    assert split_list(r"/page/\d{1,3}$,/tag/(a,b)/,[,]x") == [r"/page/\d{1,3}$", "/tag/(a,b)/", "[,]x"]


def test_harvest_run_records_the_params_its_options_give(tmp_path, site):
    """The real CLI on the loopback demo site: a params file, --params and options, merged in that
    order, are the Params the run records in its state DB; without a terminal, no control characters."""
    database = f"sqlite:///{tmp_path / 'state.db'}"
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"seeds: ['{site}/index.html']\nthreshold: 0.9\nmax_depth: 1\nmin_width: 20\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harvest.cli",
            "run",
            "--run-id",
            "manual__options",
            "--database-url",
            database,
            "--params-file",
            str(settings),
            "--params",
            json.dumps({"max_pages": 25, "top_k": 7}),
            "--labels",
            ",".join(DEMO_LABELS),
            "--threshold",
            "0.15",
            "--top-k",
            "3",
            "--min-height",
            "40",
            "--no-same-domain",
            "--text-prefilter",
            "--url-deny",
            r"/never/\d{1,3}$",
            "--destination",
            str(tmp_path / "dataset"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HARVEST_SHARDS": "2"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with session_scope(database) as session:
        recorded = session.get(Run, "manual__options").params
    assert {key: recorded[key] for key in ("threshold", "top_k", "max_pages", "max_depth")} == {
        "threshold": 0.15,  # option over file
        "top_k": 3,  # option over --params
        "max_pages": 25,  # --params
        "max_depth": 1,  # file
    }
    assert (recorded["min_width"], recorded["min_height"]) == (20, 40)
    assert recorded["same_domain"] is False and recorded["text_prefilter"] is True
    assert recorded["url_deny"] == [r"/never/\d{1,3}$"]
    assert sorted(recorded["labels"]) == sorted(DEMO_LABELS)
    assert recorded["destination"] == str(tmp_path / "dataset")
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert reports[-1]["stage"] == "publish" and reports[-1]["kept"] > 0
    # piped, not a terminal: plain log lines, no progress display
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream and "\x1b" not in stream
    assert "download shard" in result.stderr  # the stages' own progress log lines


def test_the_command_line_page_names_every_option():
    page = (REPO / "docs" / "command-line.md").read_text()
    missing = [option_name(name) for name in HARVEST_PARAMS if f"`{option_name(name)}`" not in page]
    assert missing == [], f"docs/command-line.md does not list {missing}"


def _make_harvest_argv(*assignments: str) -> list[str]:
    """The run_harvest.py arguments ``make harvest`` passes for these variables (``make -n``)."""
    import shlex

    shown = subprocess.run(
        ["make", "-n", "harvest", "VENV=/nonexistent-venv", *assignments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    line = next(line for line in shown.splitlines() if "scripts/run_harvest.py" in line)
    words = shlex.split(line)
    return words[words.index("scripts/run_harvest.py") + 1 :]


def test_make_harvest_passes_seeds_labels_dest_params_file_and_args(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("max_depth: 1\ntop_k: 9\n")
    argv = _make_harvest_argv(
        "SEEDS=https://example.org/a/,https://example.org/b/",
        "LABELS=goldfish,tabby",
        "DEST=s3://bucket/prefix",
        f"PARAMS_FILE={settings}",
        "ARGS=--threshold 0.5 --top-k 3 --no-same-domain",
    )
    args = _run_harvest_parser().parse_args(argv)
    assert not args.demo
    assert given_params(args) == {
        "seeds": ["https://example.org/a/", "https://example.org/b/"],
        "labels": ["goldfish", "tabby"],
        "destination": "s3://bucket/prefix",
        "max_depth": 1,
        "top_k": 3,  # ARGS over PARAMS_FILE
        "threshold": 0.5,
        "same_domain": False,
    }
    demo = _run_harvest_parser().parse_args(_make_harvest_argv("ARGS=--threshold 0.5"))
    assert demo.demo and given_params(demo) == {"threshold": 0.5}
