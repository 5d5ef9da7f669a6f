"""hostile_worker.py's harvest (prepare, crawl, extract, download in a process of its own), with the
memory of the whole process tree watched: the worker and the inspecting processes it starts.

Usage: ``python memory_worker.py settings.json``. Prints hostile_worker's JSON line, then one more:
the highest sum of resident memory over the tree seen at one instant (sampled every few
milliseconds), each inspecting process's own peak (VmHWM, read while it lives), and the highest
reservation the download process's decode budget held.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from hostile_worker import main as harvest_main

SAMPLE_EVERY = 0.003


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            pass
    return pids


class TreeWatch:
    """Samples the resident memory of this process and its children until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.tree_peak_kib = 0
        self.child_peaks_kib: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            total = _status_kib("self", "VmRSS") or 0
            for pid in _children():
                total += _status_kib(pid, "VmRSS") or 0
                peak = _status_kib(pid, "VmHWM")
                if peak is not None:  # the last reading: before its exec, a child shows its parent's
                    self.child_peaks_kib[pid] = peak
            self.tree_peak_kib = max(self.tree_peak_kib, total)


def main(path: str) -> None:
    try:
        from harvest.images.decoding import BUDGET
    except ImportError:  # a version without a decode budget
        BUDGET = None  # noqa: N806

    watch = TreeWatch()
    watch.thread.start()
    try:
        harvest_main(path)
    finally:
        watch.stop.set()
        watch.thread.join()
    print(
        json.dumps(
            {
                "tree_peak_kib": watch.tree_peak_kib,
                "child_peaks_kib": sorted(watch.child_peaks_kib.values()),
                "budget_high_water": getattr(BUDGET, "high_water", None),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
