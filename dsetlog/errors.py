"""The one error root: every error the engine raises on purpose is a :class:`DsetError` of a :class:`Kind`.

The kind says what the user can do about it, and is all the interfaces look at: ``api.errors`` maps a
kind to an HTTP status and ``dsetlog.cli.main`` to an exit code, each in one table, so a new error class
needs no new ``except`` anywhere. The message is the whole story, written for the person who reads it:
what is wrong and what to do next. This module imports nothing of dsetlog, so every module can use it.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Kind(str, enum.Enum):
    INVALID = "invalid"  # bad input: fix it and run again
    NOT_FOUND = "not_found"  # names a project, dataset, entry or file that is not there
    CONFLICT = "conflict"  # the state does not allow it now (another run holds the dataset, a lock is busy)
    TOO_LARGE = "too_large"  # over a documented limit
    UNAVAILABLE = "unavailable"  # the log cannot be written now (disk full, read-only); the same call works later
    FATAL = "fatal"  # the work cannot go on as things stand (a damaged log, a provider that refuses the key)


class DsetError(Exception):
    """An error with a message meant for the user; its class's ``kind`` says what they can do about it."""

    kind: ClassVar[Kind] = Kind.INVALID

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(DsetError):
    """Bad input from the user (an option, a file, a name): one clear line, exit code 2, HTTP 422."""


class Conflict(DsetError):
    """The state does not allow it now (another run holds the dataset): exit code 2, HTTP 409."""

    kind = Kind.CONFLICT
