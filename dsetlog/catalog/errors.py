"""The catalog's errors: bad input to a project, a document, a taxonomy, a prompt or parameters.

They are :class:`~dsetlog.errors.UsageError`\\ s, so the interfaces need no ``except`` for them: the kind
says the HTTP status (422, 404 for :class:`NotFoundError`, 413 for :class:`TooLargeError`) and the exit code
(2). Extraction's errors (:mod:`dsetlog.catalog.extract`) are kinds of these.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsetlog.errors import Kind, UsageError


class IngestError(UsageError, ValueError):
    """Bad input to ingest, a taxonomy, a prompt or parameters; the message says what to do."""


class NotFoundError(IngestError):
    """A project (or other thing) named by the caller does not exist."""

    kind = Kind.NOT_FOUND


class TooLargeError(IngestError):
    """A file over a limit: its size, or one of extraction's (``limit`` names it; 413 on HTTP)."""

    kind = Kind.TOO_LARGE

    def __init__(self, message: str, *, limit: str = "max_input_bytes") -> None:
        super().__init__(message)
        self.limit = limit


class MissingParametersError(IngestError):
    """Parameters saved for the first time without a required field; ``fields`` names them."""

    def __init__(self, fields: Sequence[str], project: str) -> None:
        super().__init__(f"give {', '.join(fields)} (required the first time parameters are set for project "
                         f"{project})")
        self.fields = list(fields)
