"""Every id the engine makes, in one place: the content-derived ids that make a rerun find its own work, and
the random ids of runs and jobs.

Content ids are a prefix and the start of a SHA-256 over their parts joined by U+001F, so the same project,
document, request or question always gives the same id (that is how a resumed run finds what it did); random
ids are a prefix and 12 hex digits. Changing either changes the ids of existing logs: never do.
"""

from __future__ import annotations

import hashlib
import uuid


def digest(*parts: object) -> str:
    """The SHA-256, in hex, of the parts (as text) joined by U+001F."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def content_id(prefix: str, *parts: object, length: int = 16) -> str:
    """``prefix_`` and the first ``length`` hex digits of :func:`digest` of the parts."""
    return f"{prefix}_{digest(*parts)[:length]}"


def new_id(prefix: str) -> str:
    """A fresh random id: ``prefix_`` and 12 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def new_job_id() -> str:
    """The id of a job, whoever submits it (the CLI or the server) and whatever it does."""
    return new_id("job")


def entry_id_for(item_id: str) -> str:
    """The entry made for a work item: ``entry_`` and the item id's part after its prefix (``slot_``, ``q_``)."""
    return "entry_" + item_id.split("_", 1)[1]
