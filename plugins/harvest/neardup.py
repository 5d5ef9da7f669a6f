"""Near-duplicate lookup over 64-bit perceptual hashes without a pairwise scan.

Multi-index hashing: the hash is cut into four 16-bit blocks, each indexed in its own table. Two
hashes within Hamming distance ``d`` agree within ``d // 4`` bits on at least one block
(pigeonhole), so a query probes each table with its block and every variant of it that flips up
to ``d // 4`` bits, then checks the few hashes found. At a million hashes a 16-bit bucket holds
~15 entries, so a lookup touches hundreds of hashes instead of a million.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations

BLOCKS = 4
BLOCK_BITS = 16
_MASK = (1 << BLOCK_BITS) - 1


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def parse(phash: str) -> int:
    return int(phash, 16)


def _variants(block: int, radius: int) -> Iterator[int]:
    yield block
    for flips in range(1, radius + 1):
        for bits in combinations(range(BLOCK_BITS), flips):
            value = block
            for bit in bits:
                value ^= 1 << bit
            yield value


class HashIndex:
    """Hashes with payloads; ``nearest`` returns the closest one within the index's distance."""

    def __init__(self, distance: int):
        if not 0 <= distance <= 24:
            raise ValueError(f"distance must be between 0 and 24, got {distance}")
        self.distance = distance
        self.radius = distance // BLOCKS
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(BLOCKS)]
        self._hashes: list[int] = []
        self._items: list[object] = []

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, value: int, item: object) -> None:
        slot = len(self._hashes)
        self._hashes.append(value)
        self._items.append(item)
        for i, table in enumerate(self._tables):
            table.setdefault((value >> (i * BLOCK_BITS)) & _MASK, []).append(slot)

    def candidates(self, value: int) -> set[int]:
        found: set[int] = set()
        for i, table in enumerate(self._tables):
            for variant in _variants((value >> (i * BLOCK_BITS)) & _MASK, self.radius):
                slots = table.get(variant)
                if slots:
                    found.update(slots)
        return found

    def nearest(self, value: int) -> tuple[object, int] | None:
        best: tuple[object, int] | None = None
        for slot in self.candidates(value):
            distance = hamming(value, self._hashes[slot])
            if distance <= self.distance and (best is None or distance < best[1]):
                best = (self._items[slot], distance)
        return best

    def memory_bytes(self) -> int:
        """Approximate resident size: tables, bucket lists and the hash list."""
        import sys

        size = sys.getsizeof(self._hashes) + sys.getsizeof(self._items) + 28 * len(self._hashes)
        for table in self._tables:
            size += sys.getsizeof(table)
            size += sum(sys.getsizeof(slots) for slots in table.values())
        return size


@dataclass(frozen=True)
class Entry:
    sha256: str
    phash: int
    width: int
    height: int
    size_bytes: int

    @property
    def quality(self) -> tuple[int, float, str]:
        """Larger first, then less compressed (more bytes per pixel); the sha256 breaks ties stably."""
        pixels = self.width * self.height
        return (pixels, self.size_bytes / max(pixels, 1), self.sha256)


def group(entries: Iterable[Entry], distance: int) -> dict[str, tuple[str, int]]:
    """Map each near duplicate to the best copy of its group and their distance; best copies are absent.

    Entries are visited best first, so the first member of a group to be kept is its best one.
    """
    index = HashIndex(distance)
    duplicates: dict[str, tuple[str, int]] = {}
    for entry in sorted(entries, key=lambda e: e.quality, reverse=True):
        match = index.nearest(entry.phash)
        if match is None:
            index.add(entry.phash, entry.sha256)
        else:
            duplicates[entry.sha256] = (str(match[0]), match[1])
    return duplicates
