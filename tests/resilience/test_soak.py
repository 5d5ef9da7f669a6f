"""Soak: a long harvest keeps every image, and no stage's memory grows with the number of images.

Two harvests of the generated loopback site (soak.py), the second four times the size of the
first, on Postgres, every stage in its own process as Airflow runs it and classified by the real
network. bench/bench_soak.py runs the same machinery at 2,000, 10,000 and 20,000 images.
"""

from __future__ import annotations

from .soak import STAGES, Outcome, growth, growth_table, outcome, run_harvest

#: Classification (about 20 ms an image on two cores) bounds the sizes: 2,000 images in all keep
#: the test near two minutes. Between them a stage that keeps ~9 kB or more per image (see
#: soak.FLAT_MB) grows past the tolerance; the bench looks for smaller leaks over 18,000 images.
SMALL, LARGE = 400, 1600


def test_a_long_harvest_keeps_every_image_and_flat_memory(postgres_url, tmp_path):
    small, large = (run_harvest(n, postgres_url, tmp_path / f"run-{n}", salt=n) for n in (SMALL, LARGE))

    for harvest in (small, large):
        assert outcome(harvest) == Outcome.complete(harvest.images)

    table = growth_table(small, large)
    print(table)  # shown with -s, and with the assertion below when it fails
    grew = [stage for stage in STAGES if not growth(small, large, stage)[2]]
    assert not grew, f"peak RSS grew with the number of images in {grew}:\n{table}"
