"""An entry's history for the API: the records of the log at the seqs the Datasets projection kept for it.

The records are found by the store's one binary search by seq (:func:`dsetlog.store.scan.seek_seq`), in
O(log size) small reads, so an entry's history is served in microseconds even from a log of millions of
events, where `dset log history` scans the whole file. :func:`dsetlog.store.log.records_at` does it for a
data dir; this wrapper keeps the call api/datasets.py makes with the log's path until it calls that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dsetlog.store.layout import Recorded
from dsetlog.store.scan import read_seqs


def records_by_seq(path: str | os.PathLike[str], seqs: Iterable[int]) -> list[Recorded]:
    """The valid records with these seqs, in seq order (a seq not found, or a damaged line, is left out)."""
    return read_seqs(Path(path), seqs)
