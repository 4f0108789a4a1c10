"""`dset log verify | repair | stats | history ID`: audit and recovery of the event log.

``verify`` only reads. ``repair`` is the one command that rewrites the log, and
it never loses a byte: the whole file is copied aside first, bad lines go to a
``rejected`` file with their line numbers, a torn tail goes to ``.torn`` exactly
as :class:`~dsetlog.store.log.EventLog` would put it, and the new log replaces the old
one atomically. ``stats`` and ``history`` read through the normal reader, so a
corrupt line stops them with the same message the rest of dset gives.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import portalocker

from dsetlog.cli.options import EXIT_FAILED, EXIT_OK, add_data_option, data_dir
from dsetlog.errors import UsageError
from dsetlog.fsutil import atomic_writer, fsync_dir
from dsetlog.store.errors import CorruptLogError, LogError
from dsetlog.store.layout import Recorded, event_bytes, parse_line, why_bad
from dsetlog.store.log import LOG_NAME
from dsetlog.store.scan import find_valid_end, line_chunks, read_batches, read_records

_CHUNK = 1 << 22
_LISTED = 20  # bad lines kept in a report; a log full of garbage must not fill memory
_DUP_WINDOW = 1 << 16  # recent records remembered to spot a duplicated line or block
_LOCK_WAIT_VERIFY = 2.0  # appends hold the lock for milliseconds; verify never waits long
_LOCK_WAIT_REPAIR = 30.0

_json = msgspec.json.Encoder()


# --- reports --------------------------------------------------------------------


class BadLine(msgspec.Struct):
    line: int  # 1-based line number in the file as it was
    offset: int  # byte offset of the line's start
    length: int  # bytes, newline included
    reason: str


class TornTail(msgspec.Struct):
    """Bytes after the last valid record: a write that never finished, cut off on the next open."""

    line: int
    offset: int
    length: int
    reason: str


class VerifyReport(msgspec.Struct):
    path: str
    size: int
    lines: int  # whole lines before any torn tail
    records: int  # valid records among them
    last_seq: int
    bad_count: int
    bad: list[BadLine]  # the first few, in file order
    torn: TornTail | None = None
    writer_busy: bool = False  # the lock was held throughout, so the end may be a write in flight

    @property
    def ok(self) -> bool:
        return self.bad_count == 0 and self.torn is None


class RepairReport(msgspec.Struct):
    path: str
    changed: bool
    records: int
    last_seq: int
    size: int
    backup: str | None = None
    rejected_file: str | None = None
    rejected_count: int = 0
    rejected: list[BadLine] = []  # the first few
    renumbered: int = 0
    torn_bytes: int = 0
    torn_file: str | None = None
    snapshots_removed: int = 0


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


# --- scanning -------------------------------------------------------------------


def _lines(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) for every line in [0, end), which ends a line."""
    for pos, data, n in line_chunks(fd, 0, end):
        for line in data[:n].split(b"\n")[:-1]:
            yield pos, line
            pos += len(line) + 1


def _describe_tail(tail: bytes) -> str:
    if not tail.strip(b"\0"):
        return "NUL bytes (space allocated for a write that never landed)"
    nl = tail.find(b"\n")
    if nl < 0:
        return "incomplete last line (a write that never finished)"
    return f"{why_bad(tail[:nl])}, with nothing valid after it"


class _Classifier:
    """Judges each line in file order the way the readers do, blaming as few lines as it can.

    A line is "ok", "seq" (valid, but its seq does not follow), "dup" (an exact copy of a recent
    record: same seq, ts and crc) or "bad" (not a valid record). A seq gap as wide as the bad lines
    before it is explained by them. After a record with an unexpected seq, the next one may follow
    either that seq (lines went missing) or the count of lines (that one seq was damaged), so only
    the odd line out is reported, not every line after it.
    """

    def __init__(self) -> None:
        self.last_seq = 0
        self.alt_last: int | None = None  # the seq the odd record would have had by counting lines
        self.unexplained = 0  # bad lines since the last valid record: each may have held a seq
        self.recent: OrderedDict[tuple[int, str, int], int] = OrderedDict()

    def _fits(self, seq: int, last: int | None) -> bool:
        return last is not None and last + 1 <= seq <= last + 1 + self.unexplained

    def judge(self, number: int, line: bytes) -> tuple[str, Recorded | None, str]:
        rec = parse_line(line)
        if rec is None:
            self.unexplained += 1
            return "bad", None, why_bad(line)
        key = (rec.seq, rec.ts, rec.crc)
        first = self.recent.get(key)
        if first is not None:
            return "dup", rec, f"duplicate of line {first} (seq {rec.seq})"
        if self._fits(rec.seq, self.last_seq) or self._fits(rec.seq, self.alt_last):
            kind, why, self.alt_last = "ok", "", None
        else:
            due = self.last_seq + 1 + self.unexplained
            kind, why, self.alt_last = "seq", f"seq {rec.seq} where {due} was due", due
        self.last_seq, self.unexplained = rec.seq, 0
        self.recent[key] = number
        if len(self.recent) > _DUP_WINDOW:
            self.recent.popitem(last=False)
        return kind, rec, why


def _scan(path: Path, fd: int, size: int) -> VerifyReport:
    valid_end, _ = find_valid_end(fd, size)
    records = last_seq = 0
    try:  # the common case, a sound log, at the speed of a replay (checksums on the second core)
        for recs, _ in read_batches(path, end=valid_end):
            records += len(recs)
            last_seq = recs[-1].seq
    except CorruptLogError:  # then line by line, to name every bad line and not only the first
        return _classify(path, fd, size, valid_end)
    return VerifyReport(str(path), size, records, records, last_seq, 0, [], _torn(fd, size, valid_end, records))


def _classify(path: Path, fd: int, size: int, valid_end: int) -> VerifyReport:
    judge = _Classifier()
    bad: list[BadLine] = []
    bad_count = lines = records = last_seq = 0
    for offset, line in _lines(fd, valid_end):
        lines += 1
        kind, rec, why = judge.judge(lines, line)
        if rec is not None and kind != "dup":
            records += 1
            last_seq = rec.seq
        if kind != "ok":
            bad_count += 1
            if len(bad) < _LISTED:
                bad.append(BadLine(lines, offset, len(line) + 1, why))
    return VerifyReport(str(path), size, lines, records, last_seq, bad_count, bad, _torn(fd, size, valid_end, lines))


def _torn(fd: int, size: int, valid_end: int, lines: int) -> TornTail | None:
    if valid_end >= size:
        return None
    tail = os.pread(fd, min(size - valid_end, 1 << 16), valid_end)
    return TornTail(lines + 1, valid_end, size - valid_end, _describe_tail(tail))


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _try_lock(fh: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
            return True
        except portalocker.exceptions.LockException:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def _open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"no event log at {path} (give the data directory with --data DIR or DSET_DATA_DIR)") from None


# --- verify -----------------------------------------------------------------------


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check every line of the log without changing anything (not even creating the lock file)."""
    path = Path(path)
    fd = _open_log(path)
    try:
        # Hold the lock only to read the size: appends are whole under it, so a half-written
        # line then is a real torn tail and not a write in flight. Reading happens unlocked.
        busy = False
        try:
            lock_fh = open(_lock_path(path), "rb")  # noqa: SIM115 - closed just below
        except OSError:
            lock_fh = None  # no writer has ever opened this log here
        if lock_fh is not None:
            with lock_fh:
                busy = not _try_lock(lock_fh, _LOCK_WAIT_VERIFY)
                size = os.fstat(fd).st_size
        else:
            size = os.fstat(fd).st_size
        report = _scan(path, fd, size)
        report.writer_busy = busy
        return report
    finally:
        os.close(fd)


# --- repair -----------------------------------------------------------------------


def _stamp(path: Path) -> str:
    """A UTC timestamp for the side files, unique among this log's existing ones."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stamp, n = base, 1
    while any(path.with_name(f"{path.name}.{kind}-{stamp}").exists() for kind in ("bak", "rejected")):
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _copy(fd: int, size: int, dest: Path, mode: int) -> None:
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        pos = 0
        while pos < size:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not chunk:
                raise LogError(f"{dest}: the log shrank while it was being copied; nothing was changed")
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)


def _renumbered(line: bytes, rec: Recorded, seq: int) -> bytes:
    if rec.seq == seq:
        return line  # untouched lines keep their exact bytes
    body = event_bytes(line)  # so crc stays valid: the event bytes are not re-encoded
    return b'{"seq":%d,"ts":%s,"crc":%d,"event":%s}' % (seq, _json.encode(rec.ts), rec.crc, body)


def _clear_snapshots(data: Path) -> int:
    snapshots = data / "snapshots"
    if not snapshots.is_dir():
        return 0
    removed = 0
    for entry in snapshots.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Under the log's lock: back the log up, set bad lines and a torn tail aside, renumber, replace.

    A log that verifies is left alone (no backup either).
    """
    path = Path(path)
    fd = _open_log(path)
    try:
        with open(_lock_path(path), "a+b") as lock_fh:
            if not _try_lock(lock_fh, _LOCK_WAIT_REPAIR):
                raise LogError(
                    f"{path}: another process has held the log's lock for {_LOCK_WAIT_REPAIR:.0f} s; "
                    "stop it and run `dset log repair` again. Nothing was changed."
                )
            return _repair_locked(path, fd)
    finally:
        os.close(fd)


def _repair_locked(path: Path, fd: int) -> RepairReport:
    st = os.fstat(fd)
    size = st.st_size
    found = _scan(path, fd, size)
    if found.ok:
        return RepairReport(str(path), False, found.records, found.last_seq, size)

    stamp = _stamp(path)
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    _copy(fd, size, backup, st.st_mode & 0o777)
    fsync_dir(path.parent)  # the backup must exist for sure before the log is touched

    report = RepairReport(str(path), True, 0, 0, 0, backup=str(backup))
    valid_end = found.torn.offset if found.torn else size
    rejected_path = path.with_name(f"{path.name}.rejected-{stamp}")
    rejected_fh = None
    try:
        with atomic_writer(path) as out:
            judge = _Classifier()
            seq = number = 0
            for offset, line in _lines(fd, valid_end):
                number += 1
                kind, rec, why = judge.judge(number, line)
                if rec is None or kind == "dup":
                    if rejected_fh is None:
                        rejected_fh = open(rejected_path, "xb")  # noqa: SIM115 - closed in finally
                    # A header line, then the line's exact bytes, so it can be inspected or mended by hand.
                    rejected_fh.write(b"# line %d, byte %d: %s\n" % (number, offset, why.encode()))
                    rejected_fh.write(line + b"\n")
                    report.rejected_count += 1
                    if len(report.rejected) < _LISTED:
                        report.rejected.append(BadLine(number, offset, len(line) + 1, why))
                    continue
                seq += 1
                if rec.seq != seq:
                    report.renumbered += 1
                out.write(_renumbered(line, rec, seq) + b"\n")
            report.records = report.last_seq = seq
            report.size = out.tell()
            # Everything set aside is durable before the rename makes the new log the log.
            if rejected_fh is not None:
                rejected_fh.flush()
                os.fsync(rejected_fh.fileno())
                report.rejected_file = str(rejected_path)
            if found.torn is not None:
                torn_path = path.with_name(path.name + ".torn")
                with open(torn_path, "ab") as fh:
                    fh.write(os.pread(fd, size - valid_end, valid_end))
                    fh.flush()
                    os.fsync(fh.fileno())
                report.torn_bytes, report.torn_file = size - valid_end, str(torn_path)
    finally:
        if rejected_fh is not None:
            rejected_fh.close()
    # Projection snapshots name seqs of the old numbering; they are only caches.
    report.snapshots_removed = _clear_snapshots(path.parent)
    check_fd = os.open(path, os.O_RDONLY)
    try:
        check = _scan(path, check_fd, os.fstat(check_fd).st_size)
    finally:
        os.close(check_fd)
    if not check.ok:  # cannot happen unless the disk lies; say so rather than claim success
        raise LogError(f"{path}: still does not verify after repair; the original is in {backup}")
    return report


# --- stats and history --------------------------------------------------------------


def stats(path: str | os.PathLike[str]) -> StatsReport:
    """Counts by event type and the log's extent; a corrupt line raises CorruptLogError."""
    path = Path(path)
    os.close(_open_log(path))
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
    os.close(_open_log(path))
    items = []
    for rec in read_records(path):
        if entity_id in rec.event.ids():
            fields = msgspec.to_builtins(rec.event)  # omits defaults: what the event actually said
            fields.pop("type", None)
            items.append(HistoryItem(rec.seq, rec.ts, rec.event.type, fields))
    return items


# --- command line -------------------------------------------------------------------


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):  # noqa: B007 - the unit reached is the one printed
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit} ({n} bytes)"


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else _json.encode(value).decode()
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > limit:
        return f"{text[: limit - 1]}… ({len(text)} chars)"
    return text


def _data_flag(path: Path) -> str:
    return f"--data {shlex.quote(str(path.parent))}"


def _print_verify(report: VerifyReport) -> None:
    path = Path(report.path)
    summary = f"{report.records} records, last seq {report.last_seq}, {report.size} bytes"
    if report.ok:
        print(f"ok: {summary}")
        return
    if report.bad:
        first = report.bad[0]
        print(f"corrupt: line {first.line} (byte {first.offset}): {first.reason}")
        if report.bad_count > 1:
            print(f"  {report.bad_count} bad lines in all:")
            for bad in report.bad[1:]:
                print(f"    line {bad.line}: {bad.reason}")
            if report.bad_count > len(report.bad):
                print(f"    ... and {report.bad_count - len(report.bad)} more")
        print(f"  {report.lines} lines, {summary}")
    torn = report.torn
    if torn is not None:
        print(f"torn tail: line {torn.line} (byte {torn.offset}), {torn.length} bytes: {torn.reason}")
        if not report.bad:
            print(f"  the {report.records} records before it are fine (last seq {report.last_seq}); file is {report.size} bytes")
        print(f"  it is cut off and kept in {path.name}.torn the next time a writer opens the log")
        if report.writer_busy:
            print("  (a writer held the lock the whole time: this may be a write in flight; run verify again)")
    print(
        f"fix: dset log repair {_data_flag(path)}   (copies the log aside first; "
        "bad lines go to a rejected file with their line numbers)"
    )


def _print_repair(report: RepairReport) -> None:
    path = Path(report.path)
    if not report.changed:
        print(
            f"ok: nothing to repair: {report.records} records, last seq {report.last_seq}, "
            f"{report.size} bytes (nothing changed, no backup made)"
        )
        return
    print(f"backup: {report.backup} (the log exactly as it was)")
    if report.rejected_count:
        print(f"rejected: {report.rejected_count} bad line(s) moved to {report.rejected_file}:")
        for bad in report.rejected:
            print(f"    line {bad.line}: {bad.reason}")
        if report.rejected_count > len(report.rejected):
            print(f"    ... and {report.rejected_count - len(report.rejected)} more")
    if report.renumbered:
        print(
            f"renumbered: {report.renumbered} record(s) so seqs stay gap-free "
            "(event bytes, checksums and timestamps unchanged)"
        )
    if report.torn_bytes:
        print(f"torn tail: {report.torn_bytes} bytes cut off and kept in {report.torn_file}")
    if report.snapshots_removed:
        print(f"snapshots: removed {report.snapshots_removed} (caches; rebuilt from the log)")
    print(
        f"repaired: {report.records} records, last seq {report.last_seq}, {report.size} bytes; "
        f"`dset log verify {_data_flag(path)}` passes"
    )


def _print_stats(report: StatsReport) -> None:
    rows = [
        ("log", report.path),
        ("size", _size(report.size)),
        ("records", str(report.records)),
        ("last seq", str(report.last_seq)),
        ("first", report.first_ts or "-"),
        ("last", report.last_ts or "-"),
        ("torn file", f"{report.torn_file}: {_size(report.torn_file_bytes)}" if report.torn_file else "none"),
    ]
    if report.uncut_tail_bytes:
        rows.append(("uncut tail", f"{_size(report.uncut_tail_bytes)} after the last record"))
    for key, value in rows:
        print(f"{key:<11}{value}")
    if report.by_type:
        width = max(len("event type"), *(len(t) for t in report.by_type))
        print()
        print(f"{'event type':<{width}}  {'count':>9}  share")
        total = report.records or 1
        for name, count in report.by_type.items():
            print(f"{name:<{width}}  {count:>9}  {100 * count / total:5.1f}%")


def _print_history(path: Path, entity_id: str, items: list[HistoryItem]) -> None:
    print(f"{len(items)} event(s) in {path} touch {entity_id}")
    for item in items:
        print()
        print(f"seq {item.seq}  {item.ts}  {item.type}")
        width = max((len(k) for k in item.fields), default=0)
        for key, value in item.fields.items():
            print(f"    {key:<{width}}  {_short(value)}")


def _guarded(body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """OS errors become one line on stderr; a closed pipe (`| head`) ends quietly."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        except LogError:
            raise
        except OSError as exc:
            print(f"dset: error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _log_path(args: argparse.Namespace) -> Path:
    return data_dir(args) / LOG_NAME


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify(_log_path(args))
    if args.json:
        print(_json.encode(report).decode())
    else:
        _print_verify(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_repair(args: argparse.Namespace) -> int:
    report = repair(_log_path(args))
    if args.json:
        print(_json.encode(report).decode())
    else:
        _print_repair(report)
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    report = stats(_log_path(args))
    if args.json:
        print(_json.encode(report).decode())
    else:
        _print_stats(report)
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    path = _log_path(args)
    items = history(path, args.id)
    if not items:
        print(f"dset: no event in {path} mentions id {args.id!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(_json.encode(items).decode())
    else:
        _print_history(path, args.id, items)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "log", help="audit and recover the event log",
        description="Audit and recover the event log (<data>/events.jsonl).",
    )
    actions = parser.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int], str]] = [
        ("verify", "check every line (changes nothing); exit 1 naming the first bad line", _cmd_verify,
         "print the report as JSON"),
        ("repair", "back the log up, set bad lines and a torn tail aside, renumber seqs", _cmd_repair,
         "print the report as JSON"),
        ("stats", "events by type, size, seqs and timestamps", _cmd_stats, "print machine-readable JSON"),
        ("history", "every event that touches an id (entry, dataset, item, run, job...)", _cmd_history,
         "print the events as a JSON array"),
    ]
    for name, help_text, func, json_help in commands:
        p = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == "history":
            p.add_argument("id", metavar="ID", help="the id to follow, e.g. an entry_id")
        add_data_option(p)
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(func=_guarded(func))
