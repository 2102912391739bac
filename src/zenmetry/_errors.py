"""zenmetry's one exception for bad configuration."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A budget file, ``@budget`` or ``ZENMETRY_*`` variable is wrong.

    ``problems`` holds one line per problem, each naming its source (file and entry, or
    variable), showing the bad value with ``repr`` and saying what is allowed.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
