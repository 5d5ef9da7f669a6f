"""The one error a bad setting raises, wherever in the settings it is found."""

from __future__ import annotations


class ConfigError(ValueError):
    """Raised for invalid run settings; the message lists every problem so a user fixes them at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid harvest settings: " + "; ".join(problems))
