"""What reading stylesheets and the automatic render mode add to a crawl: the crawl and extract stages
over the demo site (``make harvest``'s), with ``render`` set to "profiles" and to "auto", and over the
demo site with a theme stylesheet and a script-fed photo stream added.

Prints, per setting, the wall time of crawl + extract (median of REPEATS runs), the seconds spent
fetching and staging stylesheets, the seconds spent deciding whether a page needs rendering, the
pages rendered with their browser seconds, and of those the seconds starting the browser (once per
crawl task). The politeness settings are the defaults ``make harvest`` runs with (0.5 s between
requests to a host): a rendered page's scripts' requests wait for them like any other. Run with ``make bench`` (or
``PYTHONPATH=plugins python bench/bench_extraction.py``). Needs Chromium for the "auto" rows.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
os.environ.setdefault("HARVEST_ALLOW_PRIVATE_NETWORKS", "1")

from harvest import demo_site  # noqa: E402
from harvest.pipeline import prepare_run  # noqa: E402
from harvest.settings.config import build_config, chromium_path  # noqa: E402
from harvest.stages import crawl as crawl_stage  # noqa: E402
from harvest.stages.extract import run_extract  # noqa: E402

REPEATS = 3

STYLESHEET = b"""/* theme: the hero photo is a background */
.hero { min-height: 24rem; background: #222 url("../photos/china.jpg") center / cover no-repeat; }
.card-deck .card { border: 1px solid #ddd; }
"""
STREAM_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Stream</title></head>
<body><header><a href="/index.html"><img src="/static/logo.png" alt="PetNews logo" width="160" height="48"></a></header>
<main id="root"></main>
<script>
fetch("/api/stream.json").then((r) => r.json()).then(async (data) => {
  for (const photo of data.photos) {
    const bytes = await (await fetch(photo.media)).blob();
    const img = document.createElement("img");
    img.alt = photo.title;
    img.src = URL.createObjectURL(bytes);
    document.getElementById("root").append(img);
  }
});
</script></body></html>
"""
STREAM_JSON = {
    "photos": [{"title": "Coffee", "media": "/api/media/1"}, {"title": "Flower", "media": "/api/media/2"}]
}


def _with_extras(root: Path) -> Path:
    """The demo site plus a stylesheet hero on its home page and a script-fed photo stream it links to."""
    (root / "css").mkdir(exist_ok=True)
    (root / "css" / "theme.css").write_bytes(STYLESHEET)
    index = (root / "index.html").read_bytes()
    index = index.replace(b"</head>", b'<link rel="stylesheet" href="/css/theme.css"></head>', 1)
    index = index.replace(b"<main>", b'<main><div class="hero"></div><a href="/stream.html">Stream</a>', 1)
    (root / "index.html").write_bytes(index)
    (root / "stream.html").write_bytes(STREAM_PAGE)
    (root / "api" / "media").mkdir(parents=True, exist_ok=True)
    (root / "api" / "stream.json").write_text(json.dumps(STREAM_JSON))
    shutil.copy(root / "photos" / "coffee-large.jpg", root / "api" / "media" / "1")
    shutil.copy(root / "photos" / "flower.jpg", root / "api" / "media" / "2")
    return root


class _Timer:
    """Seconds spent in one function of the crawl stage, summed over a run."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.original = owner, name, getattr(owner, name)
        self.seconds = 0.0

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


def _run(base: str, render: str, work: Path, n: int) -> dict:
    cfg = build_config(
        {
            "seeds": [f"{base}/index.html"],
            "labels": list(demo_site.DEMO_LABELS),
            "destination": str(work / "out"),
        },
        f"manual__bench_{render}_{n}",
        env={**os.environ, "HARVEST_STAGING": str(work / f"staging{n}"), "HARVEST_LOCAL_ROOTS": str(work)},
        database_url=f"sqlite:///{work / f'state{n}.db'}",
    )
    cfg = cfg.with_(render=render)
    prepare_run(cfg)
    with (
        _Timer(crawl_stage.Stylesheets, "stage_page") as sheets,
        _Timer(crawl_stage, "_static_images") as decide,
        _Timer(crawl_stage.Renderer, "_start") as browser_start,
    ):
        started = time.perf_counter()
        report = crawl_stage.run_crawl(cfg)
        run_extract(cfg)
        wall = time.perf_counter() - started
    rendered = report.extra.get("render", {})
    return {
        "wall": wall,
        "stylesheets": sheets.seconds,
        "decide": decide.seconds,
        "rendered": rendered.get("pages", 0),
        "browser": rendered.get("seconds", 0.0),
        "start": browser_start.seconds,
    }


def _row(label: str, runs: list[dict]) -> str:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return (
        f"{label:<48} wall {median['wall']:6.2f} s | stylesheets {median['stylesheets']:5.3f} s | "
        f"render decision {median['decide']:5.3f} s | rendered {median['rendered']:.0f} pages "
        f"in {median['browser']:5.2f} s (browser start {median['start']:4.2f} s)"
    )


def main() -> int:
    renders = ["profiles"] + (["auto"] if chromium_path() else [])
    if len(renders) == 1:
        print("no Chromium: the auto rows are left out")
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as tmp:
        work = Path(tmp)
        sites = {
            "demo site": demo_site.build_site(work / "demo"),
            "demo + stylesheet + stream page": _with_extras(demo_site.build_site(work / "extras")),
        }
        n = 0
        for name, root in sites.items():
            with demo_site.serve(root) as base:
                for render in renders:
                    runs = []
                    for _ in range(REPEATS):
                        n += 1
                        runs.append(_run(base, render, work, n))
                    print(_row(f"{name}, render={render}", runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
