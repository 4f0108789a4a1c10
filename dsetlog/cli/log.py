"""`dset log verify | repair | stats | history ID`: the command line of the event log's audit and recovery.

This module parses the arguments and prints the reports; the work is the store's: ``verify`` only reads
(:mod:`dsetlog.store.verify`), ``repair`` is the one command that rewrites the log and never loses a byte
(:mod:`dsetlog.store.repair`), ``stats`` and ``history`` read through the normal reader
(:mod:`dsetlog.store.contents`), so a corrupt line stops them with the same message the rest of dset gives.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from dsetlog.cli.options import EXIT_FAILED, EXIT_OK, add_data_option, data_dir
from dsetlog.store.contents import HistoryItem, StatsReport, history, stats
from dsetlog.store.log import log_path
from dsetlog.store.repair import RepairReport, repair
from dsetlog.store.verify import VerifyReport, verify

_json = msgspec.json.Encoder()


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
        except OSError as exc:
            print(f"dset: error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _log_path(args: argparse.Namespace) -> Path:
    return log_path(data_dir(args))


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

