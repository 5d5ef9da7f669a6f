"""The fetching half of a harvest (prepare, crawl, extract, download) in a process of its own, as an
Airflow worker runs it, so that its peak memory can be read on its own.

Usage: ``python hostile_worker.py settings.json``. The settings name the run's Params, environment,
state DB and timeouts; :func:`worker_config` turns them into the same config in the test process.
The last line printed is JSON: the peak resident set size after each stage, in KiB, and any
connection attempt the tripwire stopped.

The tripwire is a guard of the test itself, not of the harvester: an audit hook that refuses any
socket connection to an address outside loopback, so that a broken SSRF guard shows up as a failed
test instead of traffic to a private network.
"""

from __future__ import annotations

import faulthandler
import ipaddress
import json
import logging
import sys
from pathlib import Path

from harvest.settings.config import HarvestConfig, build_config

_stopped: list[str] = []


def _tripwire(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    address = args[1]
    if not isinstance(address, tuple):  # a Unix socket
        return
    try:
        loopback = ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        _stopped.append(str(address[0]))
        raise PermissionError(f"test tripwire: connection to {address[0]} refused")


def worker_config(settings: dict) -> HarvestConfig:
    cfg = build_config(
        settings["params"], settings["run_id"], env=settings["env"], database_url=settings["database_url"]
    )
    return cfg.with_(**settings.get("limits", {}))


def peak_kib() -> int:
    """The kernel's high-water mark of this process's resident memory (VmHWM). Not ru_maxrss: that
    one carries over the parent's footprint from before the exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(path: str) -> None:
    sys.addaudithook(_tripwire)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from harvest.pipeline import collect_candidates, prepare_run, record_report
    from harvest.stages.crawl import run_crawl
    from harvest.stages.download import run_download

    settings = json.loads(Path(path).read_text())
    if settings.get("dump_stacks_after"):  # a hang shows where every thread waits
        faulthandler.dump_traceback_later(settings["dump_stacks_after"])
    cfg = worker_config(settings)
    peaks = {"start": peak_kib()}
    prepare_run(cfg)
    peaks["prepare"] = peak_kib()
    reports = [run_crawl(cfg)]
    peaks["crawl"] = peak_kib()
    reports += collect_candidates(cfg)
    peaks["extract"] = peak_kib()
    for shard in range(cfg.num_shards):
        reports.append(run_download(cfg, shard))
        peaks[f"download[{shard}]"] = peak_kib()
    for report in reports:
        record_report(cfg, report)
    print(json.dumps({"peak_kib": peaks, "tripwire": _stopped}))


if __name__ == "__main__":
    main(sys.argv[1])
