"""How many downloads the text pre-filter saves on the bundled demo site, and whether the dataset changes.

For a few label sets, the demo site is harvested twice (pre-filter off, then on) into separate
SQLite state and output folders; the table gives the candidates found, the downloads attempted
each way, and whether both runs published the same images.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HARVEST_ALLOW_PRIVATE_NETWORKS"] = "1"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from sqlalchemy import select  # noqa: E402

from harvest import demo_site  # noqa: E402
from harvest.model.runtime import load_classifier  # noqa: E402
from harvest.pipeline import run_all  # noqa: E402
from harvest.settings.config import DEFAULT_MODELS_DIR, build_config  # noqa: E402
from harvest.state.db import session_scope  # noqa: E402
from harvest.state.models import Candidate  # noqa: E402

LABEL_SETS = [list(demo_site.DEMO_LABELS), ["daisy"], ["espresso"], ["dog"]]


def harvest(
    base_url: str, home: Path, labels: list[str], prefilter: bool, classifier
) -> tuple[int, int, set]:
    os.environ["HARVEST_HOME"] = str(home)
    cfg = build_config(
        {"seeds": [f"{base_url}/index.html"], "labels": labels, "text_prefilter": prefilter}, "bench"
    )
    run_all(cfg, classifier)
    with session_scope(cfg.database_url) as session:
        rows = session.execute(select(Candidate.status, Candidate.error)).all()
    fetched = sum(1 for _, error in rows if "text pre-filter" not in (error or ""))
    manifest = Path(cfg.destination) / f"manifests/{cfg.run_id}.jsonl"
    kept = {json.loads(line)["sha256"] for line in manifest.read_text().splitlines()}
    return len(rows), fetched, kept


def main() -> int:
    classifier = load_classifier("efficientnet_lite0", DEFAULT_MODELS_DIR)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        demo_site.serve(demo_site.build_site(Path(tmp) / "site")) as url,
    ):
        for i, labels in enumerate(LABEL_SETS):
            total, fetched_off, kept_off = harvest(url, Path(tmp) / f"off{i}", labels, False, classifier)
            _, fetched_on, kept_on = harvest(url, Path(tmp) / f"on{i}", labels, True, classifier)
            rows.append(
                (", ".join(labels), total, fetched_off, fetched_on, kept_off == kept_on, len(kept_on))
            )
    print("| labels | candidates | downloads (off) | downloads (on) | saved | same dataset | kept |")
    print("|---|---|---|---|---|---|---|")
    for labels, total, off, on, same, kept in rows:
        print(f"| {labels} | {total} | {off} | {on} | {off - on} | {'yes' if same else 'NO'} | {kept} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
