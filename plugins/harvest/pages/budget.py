"""What extracting one page may cost, so a page built to make extraction slow stops early."""

from __future__ import annotations

import time


class ExtractionBudgetExceeded(Exception):
    """A page needed more work than the run allows for one page; the message says which limit."""


class ExtractBudget:
    """What extracting one page may take: ``seconds`` from the start, and ``max_images`` images
    named (every mention counts, a data: URI too). Checked as the page's images are collected, so a
    page built to make extraction slow stops at the budget instead of holding the stage."""

    def __init__(self, seconds: float = 30.0, max_images: int = 10_000):
        self.seconds = seconds
        self.max_images = max_images
        self.deadline = time.monotonic() + seconds
        self.images = 0

    def image(self) -> None:
        self.images += 1
        if self.images > self.max_images:
            raise ExtractionBudgetExceeded(
                f"more than {self.max_images} images named on the page (HARVEST_EXTRACT_MAX_IMAGES)"
            )
        self.check()

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise ExtractionBudgetExceeded(
                f"extraction took more than {self.seconds:g}s (HARVEST_EXTRACT_SECONDS); "
                f"{self.images} images named so far"
            )
