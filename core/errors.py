"""The exceptions and warnings deblurstack raises.

Every message is one line that names what is wrong and where: the file, the YAML key path or
the plugin. The CLI prints it as is and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeblurstackError(Exception):
    """Base class: a problem the user can fix (bad config, bad plugin, bad file).

    The CLI prints it as one line and exits with ``exit_code``.
    """

    exit_code = 2


class ConfigError(DeblurstackError):
    """One or more problems in a configuration, each located by file and YAML key path."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class PluginError(DeblurstackError):
    """A plugin could not be loaded or returned something unusable."""


class CheckpointError(DeblurstackError):
    """A checkpoint file cannot be read or does not fit the module it is loaded into."""


class TrainingError(DeblurstackError):
    """Training cannot go on (a non-finite loss, say); the last good checkpoint is kept."""

    exit_code = 1


class PluginWarning(UserWarning):
    """A plugin was skipped (it failed to import, its hook raised, or a record was malformed)."""


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An error's message on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DeblurstackError",
    "PluginError",
    "PluginWarning",
    "TrainingError",
    "did_you_mean",
    "one_line",
]
