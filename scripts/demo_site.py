"""Serve the bundled offline demo site until interrupted (``make demo-site``), for a real Airflow.

The site is built under ``$HARVEST_HOME/demo-site`` and served on loopback, so the Airflow that
harvests it must start with ``HARVEST_ALLOW_PRIVATE_NETWORKS=1`` (``make airflow`` sets it): the
crawler refuses private and loopback addresses otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from harvest import demo_site  # noqa: E402 - after the path above, as run_harvest.py does
from harvest.settings.env import harvest_home  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    import os

    root = demo_site.build_site(harvest_home(os.environ) / "demo-site")
    with demo_site.serve(root, args.host, args.port) as base:
        labels = ", ".join(f'"{label}"' for label in demo_site.DEMO_LABELS)
        print(f"Demo site at {base}/ (from {root}); Ctrl-C stops it.", flush=True)
        print(f'Its conf: {{"seeds": ["{base}/index.html"], "labels": [{labels}]}}', flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
