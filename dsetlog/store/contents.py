"""What the log holds, read through the normal reader (so a corrupt line stops them with the usual message):
`dset log stats` (counts by event type, the log's extent) and `dset log history ID` (every event touching an id).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.store.scan import read_batches, read_records
from dsetlog.store.verify import open_log


class StatsReport(msgspec.Struct):
    path: str
    size: int
    records: int
    last_seq: int
    first_ts: str | None
    last_ts: str | None
    by_type: dict[str, int]  # most frequent first
    torn_file: str | None
    torn_file_bytes: int
    uncut_tail_bytes: int  # bytes after the last record not yet set aside by a writer


class HistoryItem(msgspec.Struct):
    seq: int
    ts: str
    type: str
    fields: dict[str, Any]



def stats(path: str | os.PathLike[str]) -> StatsReport:
    """Counts by event type and the log's extent; a corrupt line raises CorruptLogError."""
    path = Path(path)
    os.close(open_log(path))
    counts: Counter[str] = Counter()
    records = last_seq = end = 0
    first_ts = last_ts = None
    for recs, batch_end in read_batches(path):
        end = batch_end
        if first_ts is None:
            first_ts = recs[0].ts
        counts.update(rec.event.type for rec in recs)
        records += len(recs)
        last_seq, last_ts = recs[-1].seq, recs[-1].ts
    size = path.stat().st_size
    torn_path = path.with_name(path.name + ".torn")
    torn_bytes = torn_path.stat().st_size if torn_path.exists() else 0
    by_type = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return StatsReport(
        str(path), size, records, last_seq, first_ts, last_ts, by_type,
        str(torn_path) if torn_path.exists() else None, torn_bytes, max(0, size - end),
    )


def history(path: str | os.PathLike[str], entity_id: str) -> list[HistoryItem]:
    """Every event whose ids() include ``entity_id``, in log order."""
    path = Path(path)
    os.close(open_log(path))
    items = []
    for rec in read_records(path):
        if entity_id in rec.event.ids():
            fields = msgspec.to_builtins(rec.event)  # omits defaults: what the event actually said
            fields.pop("type", None)
            items.append(HistoryItem(rec.seq, rec.ts, rec.event.type, fields))
    return items

