"""Train a filter for a label ImageNet lacks: ``make train-filter EXAMPLES=<folder or s3://...> NAME=<name>``.

``EXAMPLES`` holds one folder per class (e.g. ``hotdog/`` and ``other/``). The filter is saved to
``include/models/<NAME>.keras`` with ``<NAME>.json`` (classes and held-out metrics); harvest with it
by setting ``model`` to ``NAME`` and ``labels`` to the class folder to keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    from harvest.model.train_filter import train_filter
    from harvest.settings.config import DEFAULT_MODELS_DIR, ConfigError, s3_options_from_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", required=True, help="folder or s3://bucket/prefix with one folder per class"
    )
    parser.add_argument("--name", required=True, help="model name to save under (letters, digits, _ . -)")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--held-out", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=500, help="gradient steps of the head")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        description = train_filter(
            args.examples,
            args.name,
            args.out,
            models_dir=DEFAULT_MODELS_DIR,
            s3=s3_options_from_env(os.environ),
            held_out=args.held_out,
            steps=args.steps,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"model": args.name, "classes": description["classes"], "held_out": description["held_out"]},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
