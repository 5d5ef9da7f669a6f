"""Strict setting names: a misspelt key is refused with the nearest known name, never ignored.

A ``"treshold": 0.5`` in a trigger conf, ``--params`` or a profile would otherwise leave the default
threshold in force without a word; difflib's closest match turns the refusal into the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_key_problems(given: Iterable[str], allowed: Iterable[str], where: str = "") -> list[str]:
    """One problem per key of ``given`` not in ``allowed``, each with a "did you mean" when one is close."""
    known = sorted(set(allowed))
    prefix = f"{where}: " if where else ""
    problems = []
    for key in sorted(set(given) - set(known), key=str):
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(known)}"
        problems.append(f"{prefix}unknown setting {key!r}; {hint}")
    return problems
