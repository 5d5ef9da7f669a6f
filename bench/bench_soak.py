"""Soak: whole harvests of 2,000, 10,000 and 20,000 generated images from a loopback site, every
stage in its own process as Airflow runs its tasks, each process's peak RSS sampled.

    python bench/bench_soak.py [--sizes 2000,10000,20000] [--database-url URL | --sqlite] [--keep]

The site (tests/resilience/soak.py) is generated from the request path in a separate process: 150
distinct pictures per gallery page, gallery pages linking to each other. Each harvest is a new run in
one scratch Postgres database on the server of --database-url (created here, dropped afterwards), or
in a SQLite file with --sqlite. Every harvest must publish exactly its N pictures, unaltered.

Target: no stage's peak RSS grows with the number of images: at the largest size within 10 MB of
the smallest (30 MB for classify; FLAT_MB and FLAT_MB_CLASSIFY in tests/resilience/soak.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tests"))

from resilience import soak  # noqa: E402

ADMIN_URL = os.environ.get("HARVEST_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _progress(harvest: soak.Harvest, run: soak.StageRun) -> None:
    retried = f", {run.attempts} attempts" if run.attempts > 1 else ""
    print(
        f"  {harvest.images:>6} images  {run.name:<12} peak {run.peak_mb:7.0f} MB  {run.seconds:7.1f} s"
        f"  ({run.samples} samples{retried})",
        flush=True,
    )


def _table(harvests: list[soak.Harvest], title: str, value, fmt: str) -> None:
    print(f"\n{title}")
    print(f"| {'images':>6} | " + " | ".join(f"{stage:>9}" for stage in soak.STAGES) + " |")
    print("|" + "---:|" * (len(soak.STAGES) + 1))
    for harvest in harvests:
        cells = " | ".join(f"{value(harvest, stage):>9{fmt}}" for stage in soak.STAGES)
        print(f"| {harvest.images:>6} | {cells} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,10000,20000", help="images per harvest, comma separated")
    parser.add_argument(
        "--database-url",
        default=ADMIN_URL,
        help="a Postgres URL whose server gets a scratch database (default: %(default)s)",
    )
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file instead of Postgres")
    parser.add_argument("--keep", help="keep the work folder (datasets, staging, stage logs) here")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        if args.sqlite:
            database = nullcontext(f"sqlite:///{workdir / 'state.db'}")
        else:
            os.environ["HARVEST_TEST_POSTGRES"] = args.database_url  # the server scratch_database uses
            from resilience.harvest_runs import scratch_database

            database = scratch_database()
        with database as database_url:
            harvests, problems = [], []
            for size in sizes:
                started = time.perf_counter()
                harvest = soak.run_harvest(size, database_url, workdir / f"run-{size}", size, _progress)
                differences = soak.outcome(harvest).differences(size)
                problems += [f"{size} images: {difference}" for difference in differences]
                print(
                    f"  {size} images harvested in {time.perf_counter() - started:.0f} s: "
                    f"{'every picture published once, unaltered' if not differences else 'INCOMPLETE'}",
                    flush=True,
                )
                harvests.append(harvest)
            _report(harvests)  # before the scratch database goes; prints PASS or FAIL
    for problem in problems:
        print(f"harvest incomplete: {problem}")
    # A missed memory target is a finding (printed as FAIL), as in the other benches; a harvest that
    # lost or duplicated a picture is a broken bench and stops `make bench`.
    return 1 if problems else 0


def _report(harvests: list[soak.Harvest]) -> bool:
    """Print the tables and the growth between the smallest and the largest harvest; True if flat."""
    _table(
        harvests,
        "peak RSS per stage process (MB; download: largest of its shards)",
        soak.Harvest.peak_mb,
        ".0f",
    )
    _table(
        harvests,
        "wall time per stage (s; download: its shards one after the other)",
        soak.Harvest.seconds,
        ".1f",
    )
    small, large = harvests[0], harvests[-1]
    flat = all(soak.growth(small, large, stage)[2] for stage in soak.STAGES)
    print("\n" + soak.growth_table(small, large))
    print(
        f"\ntarget: every stage's peak within {soak.FLAT_MB:.0f} MB (classify {soak.FLAT_MB_CLASSIFY:.0f} MB) "
        f"of its peak at {small.images} images: {'PASS' if flat else 'FAIL'}",
        flush=True,
    )
    return flat


if __name__ == "__main__":
    sys.exit(main())
