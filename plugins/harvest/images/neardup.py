"""Near-duplicate lookup over 64-bit perceptual hashes without a pairwise scan.

Multi-index hashing: the hash is cut into four 16-bit blocks, each indexed in its own table. Two
hashes within Hamming distance ``d`` agree within ``d // 4`` bits on at least one block
(pigeonhole), so a query probes each table with its block and every variant of it that flips up
to ``d // 4`` bits, then checks the few hashes found. At a million hashes a 16-bit bucket holds
~15 entries, so a lookup touches hundreds of hashes instead of a million.

The tables are NumPy arrays in counting-sort layout (per block: where each of the 65,536 values
starts in an array of slots), about 24 bytes per hash instead of the ~400 that dicts of lists take.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

BLOCKS = 4
BLOCK_BITS = 16
_MASK = (1 << BLOCK_BITS) - 1
#: hashes added, and compared one by one, before the tables are rebuilt to include them
REBUILD_EVERY = 4096


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def parse(phash: str) -> int:
    return int(phash, 16)


def _flips(radius: int) -> list[int]:
    """Every 16-bit mask with at most ``radius`` bits set: XORed with a block, its variants."""
    masks = [0]
    for flips in range(1, radius + 1):
        for bits in combinations(range(BLOCK_BITS), flips):
            masks.append(sum(1 << bit for bit in bits))
    return masks


class _Tables:
    """The four block tables over ``hashes[first:last]`` in counting-sort layout: per block, where the
    slots of each 16-bit value start in one array of slots (a radix sort builds it)."""

    def __init__(self, hashes: np.ndarray, first: int, last: int):
        count = last - first
        self.first, self.last = first, last
        self.starts = np.zeros((BLOCKS, (1 << BLOCK_BITS) + 1), dtype=np.int64)
        self.slots = np.empty(BLOCKS * count, dtype=np.int32)
        for i in range(BLOCKS):
            keys = ((hashes[first:last] >> np.uint64(i * BLOCK_BITS)) & np.uint64(_MASK)).astype(np.uint16)
            self.slots[i * count : (i + 1) * count] = np.argsort(keys, kind="stable") + first
            np.cumsum(np.bincount(keys, minlength=1 << BLOCK_BITS), out=self.starts[i, 1:])
            self.starts[i] += i * count

    def __len__(self) -> int:
        return self.last - self.first

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The slots whose block i equals any of ``keys[i]``."""
        rows = np.arange(BLOCKS)[:, None]
        begin = self.starts[rows, keys].ravel()
        lengths = self.starts[rows, keys + 1].ravel() - begin
        total = int(lengths.sum())
        if not total:
            return np.zeros(0, dtype=np.int32)
        ends = np.cumsum(lengths)
        return self.slots[np.repeat(begin - ends + lengths, lengths) + np.arange(total)]

    @property
    def nbytes(self) -> int:
        return self.starts.nbytes + self.slots.nbytes


class HashIndex:
    """Hashes with payloads; ``nearest`` returns the closest one within the index's distance (of
    equally close ones, the one added first).

    Two sets of tables and a tail: the large tables cover most hashes and are rebuilt when the small
    ones reach an eighth of their size; the small ones are rebuilt whenever REBUILD_EVERY hashes have
    been added since; those few are compared with the query one by one."""

    def __init__(self, distance: int):
        if not 0 <= distance <= 24:
            raise ValueError(f"distance must be between 0 and 24, got {distance}")
        self.distance = distance
        self.radius = distance // BLOCKS
        self._flips = np.array(_flips(self.radius), dtype=np.int64)
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._items: list[object] = []
        self._large: _Tables | None = None
        self._small: _Tables | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _covered(self) -> int:
        tables = self._small or self._large
        return tables.last if tables else 0

    def add(self, value: int, item: object) -> None:
        slot = len(self._items)
        if slot == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[slot] = value
        self._items.append(item)
        count = slot + 1
        if count - self._covered() < REBUILD_EVERY:
            return
        if self._large is None or count - self._large.last > len(self._large) // 8:
            self._large, self._small = _Tables(self._hashes, 0, count), None
        else:
            self._small = _Tables(self._hashes, self._large.last, count)

    def candidates(self, value: int) -> set[int]:
        """Slots that may lie within the distance (a block within the radius of the query's)."""
        slots = self._candidates(value)
        near = np.zeros(len(slots), dtype=bool)
        differ = self._hashes[slots] ^ np.uint64(value)
        for i in range(BLOCKS):
            block = (differ >> np.uint64(i * BLOCK_BITS)) & np.uint64(_MASK)
            near |= np.bitwise_count(block) <= self.radius
        return {int(slot) for slot in slots[near]}

    def _candidates(self, value: int) -> np.ndarray:
        """The tables' candidates plus every hash added since they were built (compared anyway)."""
        found = [np.arange(self._covered(), len(self._items), dtype=np.int32)]
        if self._large is not None:
            blocks = np.array([(value >> (i * BLOCK_BITS)) & _MASK for i in range(BLOCKS)], dtype=np.int64)
            keys = blocks[:, None] ^ self._flips[None, :]  # every variant of every block
            found += [tables.lookup(keys) for tables in (self._large, self._small) if tables is not None]
        return np.concatenate(found)

    def nearest(self, value: int) -> tuple[object, int] | None:
        slots = self._candidates(value)
        if not len(slots):
            return None
        distances = np.bitwise_count(self._hashes[slots] ^ np.uint64(value))
        closest = int(distances.min())
        if closest > self.distance:
            return None
        slot = int(slots[distances == closest].min())  # of equally close hashes, the first added
        return self._items[slot], closest

    def memory_bytes(self) -> int:
        """Approximate resident size: the arrays and the payload list."""
        import sys

        tables = sum(t.nbytes for t in (self._large, self._small) if t is not None)
        return self._hashes.nbytes + tables + sys.getsizeof(self._items)


@dataclass(frozen=True, slots=True)
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
