"""The per-stage progress lines: drawn in place on a terminal from the stage reports' counts, and
absent (plain log lines) when the output is not a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harvest.demo_site import DEMO_LABELS
from harvest.progress import ProgressDisplay, format_line
from harvest.report import StageReport

REPO = Path(__file__).resolve().parents[1]
ERASE = "\r\x1b[K"
LINE = re.compile(
    r"^(?P<label>\S+)\s+(?P<handled>\d+)(?:/(?P<total>\d+)\s+\d+%)?\s+[\d.]+/s\s+"
    r"done (?P<done>\d+)  failed (?P<failed>\d+)  skipped (?P<skipped>\d+)  [\d.]+s$"
)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _final_lines(output: str) -> dict[str, dict[str, int | None]]:
    """Each progress line as last drawn: the text after the last erase of every output line."""
    found = {}
    for raw in output.replace("\r\n", "\n").split("\n"):
        if ERASE not in raw:
            continue
        match = LINE.match(raw.rsplit(ERASE, 1)[-1].rstrip("\r"))
        if match:
            found[match["label"]] = {
                k: None if v is None else int(v) for k, v in match.groupdict().items() if k != "label"
            }
    return found


def test_a_line_per_stage_redrawn_in_place_and_left_with_its_final_counts():
    stream, clock = io.StringIO(), _Clock()
    with ProgressDisplay(stream, interval=0.5, clock=clock) as display:
        crawl = StageReport("crawl")
        for _ in range(3):
            clock.now += 1
            crawl.count("done")
        crawl.count("failed", "http://x.example/: HTTP 404")  # within the interval: not drawn yet
        download = StageReport("download")  # a new stage: the crawl's line is finished
        download.extra["shard"] = 1
        download.total = 4
        StageReport("prefilter").count("skipped")  # not a line of its own
        for _ in range(4):
            clock.now += 1
            download.count("done")
        display.write_above("WARNING something worth knowing")
    out = stream.getvalue()
    assert out.count("\n") == 3  # crawl's line, the warning, download's line
    assert "prefilter" not in out
    assert _final_lines(out) == {
        "crawl": {"handled": 4, "total": None, "done": 3, "failed": 1, "skipped": 0},
        "download[1]": {"handled": 4, "total": 4, "done": 4, "failed": 0, "skipped": 0},
    }
    lines = out.split("\n")
    assert lines[0].count(ERASE) == 5  # created, three counts a second apart, the final one
    # the warning takes the running line's place and the line is drawn again under it
    assert lines[1].endswith(ERASE + "WARNING something worth knowing")
    assert "4/4" in lines[1] and "100%" in lines[2].rsplit(ERASE, 1)[-1]


def test_the_rate_is_items_per_second_since_the_stage_began():
    report = StageReport("classify", done=30, failed=2, skipped=8)
    assert " ".join(format_line(report, 4.0).split()) == (
        "classify 40 10.0/s done 30 failed 2 skipped 8 4.0s"
    )
    report.total = 80
    assert format_line(report, 4.0).split()[1:3] == ["40/80", "50%"]


def _run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """``argv`` with a pseudo-terminal as stdout and stderr; its exit code and everything it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(controller)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_harvest_run_on_a_terminal_shows_each_stage_ending_at_its_final_counts(tmp_path, site):
    database = f"sqlite:///{tmp_path / 'state.db'}"
    argv = [
        sys.executable,
        "-m",
        "harvest.cli",
        "run",
        "--run-id",
        "manual__tty",
        "--database-url",
        database,
        "--seeds",
        f"{site}/index.html",
        "--labels",
        ",".join(DEMO_LABELS),
        "--destination",
        str(tmp_path / "dataset"),
    ]
    code, output = _run_in_pty(argv, {**os.environ, "HARVEST_MIN_SHARDS": "2", "COLUMNS": "200"})
    assert code == 0, output[-4000:]
    shown = _final_lines(output)
    assert list(shown) == ["crawl", "extract", "download[0]", "download[1]", "classify", "publish"]
    reports = {}
    for line in output.replace("\r\n", "\n").split("\n"):
        if line.startswith("{"):
            report = json.loads(line)
            shard = report.get("shard")
            reports[report["stage"] if shard is None else f"{report['stage']}[{shard}]"] = report
    for label, line in shown.items():  # the lines end at the counts the run reported
        assert (line["done"], line["failed"], line["skipped"]) == (
            reports[label]["done"],
            reports[label]["failed"],
            reports[label]["skipped"],
        ), label
    for shard in ("download[0]", "download[1]"):
        assert shown[shard]["handled"] == shown[shard]["total"]
    assert reports["publish"]["kept"] > 0
    # the stages' INFO progress messages give way to the lines; nothing else is logged on success
    assert "download shard" not in output


@pytest.mark.slow
def test_make_harvest_on_a_terminal_takes_every_option_and_shows_the_stages(tmp_path, site):
    """scripts/run_harvest.py (``make harvest``): the DAG through dag.test() with Params from a file
    and options, on a pseudo-terminal; the run records those Params and the lines end at its counts."""
    settings = tmp_path / "settings.yaml"
    settings.write_text("max_pages: 10\ntop_k: 4\nthreshold: 0.9\n")
    summary_path = tmp_path / "summary.json"
    argv = [
        sys.executable,
        str(REPO / "scripts" / "run_harvest.py"),
        "--seeds",
        f"{site}/index.html",
        "--labels",
        ",".join(DEMO_LABELS),
        "--params-file",
        str(settings),
        "--max-pages",
        "50",
        "--threshold",
        "0.15",
        "--domains",
        "127.0.0.1",
        "--url-deny",
        "/never/",
        "--summary-json",
        str(summary_path),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        HARVEST_HOME=str(tmp_path / "harvest-home"),
        HARVEST_MIN_SHARDS="2",
        COLUMNS="200",
    )
    code, output = _run_in_pty(argv, env)
    assert code == 0, output[-4000:]
    summary = json.loads(summary_path.read_text())
    params = summary["params"]
    assert (params["max_pages"], params["top_k"], params["threshold"]) == (50, 4, 0.15)
    assert (params["domains"], params["url_deny"]) == (["127.0.0.1"], ["/never/"])
    shown = _final_lines(output)
    # the DAG maps download and classify over the run's two shards, in whichever order they run
    expected = {"crawl", "extract", "download[0]", "download[1]", "classify[0]", "classify[1]", "publish"}
    assert expected <= set(shown), list(shown)
    for label, line in shown.items():
        counters = summary["counters"][label]
        assert (line["done"], line["failed"], line["skipped"]) == (
            counters["done"],
            counters["failed"],
            counters["skipped"],
        ), label
    assert summary["kept"] > 0
