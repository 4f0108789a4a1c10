"""Issue #15, "Ten million entries on one machine": every target of the issue, measured on one log of N entries.

    python bench/bench_scale.py --entries 100000
    python bench/bench_scale.py --entries 10000000 --cache /data/bench          # the issue's size
    python bench/bench_scale.py --entries 20000 --skip serve export-cli

The log is bench/make_log.py's entries mode (--entries: ~3.2 events an entry over 4 datasets, the first holding
half the entries; edits, feedback, regenerations and scores folded in), written once into --cache (default
/tmp/dsetlog-bench/scale-N, its data dir in data/) and reused. Each measure runs in a fresh process, so its
peak RSS (os.wait4's ru_maxrss: the process and any helper it waited for, such as the checksum worker) is its
own:

* rebuild        : ReadModel.open(use_snapshot=False), every projection folded from the first record: wall and
                   peak RSS (targets: <= 90 s at 10M entries, <= 3 s per 1M events)
* snapshot save  : the same open, then rm.save_snapshot() (the save alone is timed; no target)
* from snapshot  : ReadModel.open() in a new process with that snapshot (target: <= 5 s at 10M entries); and
                   the first use of the largest dataset after it (it decodes that dataset's part of the snapshot)
* serve          : `dset serve --data DIR --port 0 --no-worker` (bench/bench_api.py's start_server): the time to
                   its first 200 on GET /api/v1/health and to the end of its background check of the log; its
                   VmRSS (/proc/PID/status) once up and asked the first requests (target: <= 3 GB at 10M), then,
                   from a second process (bench_api.py --load: keep-alive connections, random pages), GET
                   /api/v1/datasets/{largest}/entries?per_page=50 as is, with filter_quality=0.5&sort_by=quality
                   and with category=Science&sort_by=difficulty: req/s and p50/p99 (targets: p99 <= 20 ms,
                   >= 1,000 req/s). Each is asked once before (what that first request took is shown: it builds
                   the sorted, filtered index)
* search         : q=WORD for --search-words words from frequent to rare (make_log.VOCABULARY), each asked once
                   with nothing cached, one after the other: p50/p99/max (target p99 <= 200 ms), then a load
                   run over their pages (cached)
* export         : the largest dataset with the code behind `dset export DATASET_ID --format jsonl|parquet` (read
                   model from the snapshot, as the command opens it; dsetlog.export.datasets.export_dataset into a
                   scratch --output-dir): entries/s (target >= 100,000) and the export's own memory, the highest
                   RSS sampled every 5 ms during it minus the RSS just before it, once the read model is loaded and
                   the dataset decoded (target: flat, <= +200 MB)
* export-cli     : the command itself, end to end (`python -m dsetlog export ...`): wall and peak RSS (no target)

Targets are the issue's, at its size (10M entries, or 1M events). Below that size a size-bound figure is also
extrapolated to it, linearly from here: a time times 10M / N; an RSS as that of an empty server plus its growth
per entry here times 10M (the empty server is measured too). The verdict is on the figure itself at 10M or
more, else on the extrapolation (marked "extrap."); fixed costs count N / 10M times too much in it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

TARGET_ENTRIES = 10_000_000
TARGET_EVENTS = 1_000_000
STEPS = ("rebuild", "snapshot", "serve", "search", "export", "export-cli")
SCENARIOS = (  # (name, query without page) on the largest dataset
    ("per_page=50 (sort quality)", "per_page=50"),
    ("filter_quality=0.5 sort quality", "per_page=50&filter_quality=0.5&sort_by=quality"),
    ("category=Science sort difficulty", "per_page=50&category=Science&sort_by=difficulty"),
)
MB = 1e6


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024 / MB
    return out


# --- one measure, in its own process ---------------------------------------------------------------------


def measure(kind: str, data: Path, args: list[str]) -> dict[str, Any]:
    """Run one measure in this (fresh) process; its result as JSON-able values."""
    from projections import ReadModel

    if kind == "rebuild":
        t0 = time.perf_counter()
        rm = ReadModel.open(data, use_snapshot=False)
        seconds = time.perf_counter() - t0
        views = rm.datasets.datasets()
        return {"seconds": seconds, "seq": rm.seq, "entries": sum(v.entries for v in views),
                "per_dataset": [v.entries for v in views], "rss_mb": _rss_mb()}
    if kind == "save":
        t0 = time.perf_counter()
        rm = ReadModel.open(data, use_snapshot=False)
        opened = time.perf_counter() - t0
        t1 = time.perf_counter()
        path = rm.save_snapshot()
        return {"seconds": time.perf_counter() - t1, "open_seconds": opened, "mb": path.stat().st_size / MB}
    if kind == "snapshot":
        dataset = args[0]
        t0 = time.perf_counter()
        rm = ReadModel.open(data)
        seconds = time.perf_counter() - t0
        rss_open = _rss_mb()
        t1 = time.perf_counter()
        with rm.lock:
            rm.datasets.entry(dataset, "")  # decodes the dataset's part of the snapshot
        return {"seconds": seconds, "used": rm.snapshot_used, "tail": rm.seq - rm.snapshot_seq, "rss_mb": rss_open,
                "first_use_seconds": time.perf_counter() - t1, "rss_used_mb": _rss_mb()}
    if kind == "export":
        return _measure_export(data, dataset=args[0], format_type=args[1], out=Path(args[2]))
    raise SystemExit(f"unknown measure {kind!r}")


def _measure_export(data: Path, *, dataset: str, format_type: str, out: Path) -> dict[str, Any]:
    """What `dset export DATASET --format F --output-dir OUT` does (dsetlog/cli/datasets.py: export), in steps."""
    from dsetlog.export.datasets import export_dataset
    from dsetlog.export.options import ExportOptions
    from dsetlog.paths import cli_export_dir
    from projections import ReadModel

    t0 = time.perf_counter()
    rm = ReadModel.open(data)
    with rm.lock:
        rm.datasets.entry(dataset, "")  # the dataset decoded: the read model's memory, not the export's
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    if format_type == "parquet":  # imported by the writer on its first use: counted, but shown apart
        import pyarrow
        import pyarrow.parquet  # noqa: F401

        pyarrow.array([""])  # pyarrow's first conversion imports pandas, where it is installed (~65 MB)
    imported_mb = _rss_mb() - rss_loaded
    from bench_export import peak_rss

    with peak_rss(rss_loaded) as high:
        t1 = time.perf_counter()
        folder = cli_export_dir(data, str(out), dataset)
        files, n = export_dataset(rm, dataset, data_dir=folder, output_dir=".", format_type=format_type,
                                  options=ExportOptions())
        export_s = time.perf_counter() - t1
    return {"entries": n, "files": len(files), "load_s": load_s, "seconds": export_s, "rss_loaded_mb": rss_loaded,
            "growth_mb": high[0] - rss_loaded, "import_mb": imported_mb,
            "mb": sum(f.stat().st_size for f in files) / MB}


@dataclass
class Child:
    result: dict[str, Any]
    seconds: float  # wall, from spawn to exit
    peak_mb: float  # os.wait4's ru_maxrss


def run_process(argv: list[str], log: Path) -> Child:
    """Run ``argv`` to its end; its last stdout line parsed as JSON ({} if it is not), wall and peak RSS."""
    t0 = time.perf_counter()
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=_env())
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): its rusage is what we are after
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}; its stderr is in {log}:\n"
                         + log.read_text()[-3000:])
    lines = out.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {"stdout": out}
    return Child(result if isinstance(result, dict) else {}, seconds, usage.ru_maxrss * 1024 / MB)  # KiB on Linux


def run_child(kind: str, data: Path, log: Path, *args: str) -> Child:
    return run_process([sys.executable, __file__, "--measure", kind, str(data), *args], log)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DSET_")}


# --- the log -----------------------------------------------------------------------------------------------------


def ensure_log(cache: Path, entries: int, *, datasets: int, seed: int, procs: int) -> tuple[Path, dict[str, Any]]:
    """The cached data dir of this log (made now if need be) and how it was made."""
    from make_log import write_entries_log

    from dsetlog.store.log import LOG_NAME

    data, meta_file = cache / "data", cache / "make.json"
    wanted = {"entries": entries, "datasets": datasets, "seed": seed}
    if meta_file.exists() and (data / LOG_NAME).exists():
        meta = json.loads(meta_file.read_text())
        if {k: meta.get(k) for k in wanted} == wanted and (data / LOG_NAME).stat().st_size == meta.get("bytes"):
            meta["cached"] = True
            return data, meta
        raise SystemExit(f"{cache} holds another log ({meta_file}: {meta}); give another --cache")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    print(f"# writing {entries:,} entries to {data} (bench/make_log.py --entries, {procs} process(es)) ...",
          flush=True)
    t0 = time.perf_counter()
    path, events = write_entries_log(tmp, entries, datasets=datasets, seed=seed, procs=procs)
    seconds = time.perf_counter() - t0
    meta = {**wanted, "events": events, "bytes": path.stat().st_size, "seconds": seconds, "procs": procs}
    tmp.rename(data)
    meta_file.write_text(json.dumps(meta))
    meta["cached"] = False
    return data, meta


# --- the server ------------------------------------------------------------------------------------------------


def _get(url: str, timeout: float = 600) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    return time.perf_counter() - t0, body


def wait_verified(proc: subprocess.Popen[str], base: str, timeout: float) -> float:
    """Seconds until /health says the background check of the log is over (state "ok")."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"dset serve exited ({proc.returncode}) during its check of the log")
        state = _get(base + "/health")[1]["log"]["check"]["state"]
        if state == "ok":
            return time.perf_counter() - t0
        if state != "checking":
            raise SystemExit(f"the log check ended in {state!r}")
        time.sleep(0.2)
    raise SystemExit(f"the log check did not end within {timeout:.0f} s")


def load(base: str, paths: list[str], args: argparse.Namespace) -> dict[str, float]:
    """bench_api.py's load process (--load: --connections keep-alive connections for --seconds, each request
    a random one of ``paths``, which are URL paths with their query)."""
    spec = json.dumps({"base": base, "paths": paths, "connections": args.connections, "seconds": args.seconds})
    # the spec on stdin: 2,000 pages' paths are more than one argument may hold (128 KB)
    out = subprocess.run([sys.executable, str(HERE / "bench_api.py"), "--load", "-"], input=spec, cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _errors(r: dict[str, float]) -> str:
    return f", {r['errors']:,.0f} requests answered other than 200 (see serve.log)" if r["errors"] else ""


def _failed_as_inf(r: dict[str, float], key: str) -> float:
    """A latency, or infinity when some requests failed (a run with errors misses its target)."""
    return float("inf") if r["errors"] else r[key]


def _path(url: str) -> str:
    """The path of an absolute URL (with its query), as the load process sends it."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def empty_server_mb(work: Path, threads: int) -> float:
    """VmRSS of `dset serve` on an empty data dir after a first request: the base an RSS is extrapolated from."""
    from bench_api import start_server, stop_server

    empty = work / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    proc, base, _ = start_server(empty, threads, work / "serve-empty.log")
    try:
        _get(base + "/datasets")
        return _status_mb(proc.pid)["VmRSS"]
    finally:
        stop_server(proc)
        shutil.rmtree(empty, ignore_errors=True)


# --- the table ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    figure: str
    at_target: str = ""  # extrapolated to the size
    target: str = ""
    verdict: str = ""


class Table:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.rows: list[Row] = []

    def add(self, measure: str, figure: str, *, value: float | None = None, limit: float | None = None,
            target: str = "", scale: float | None = None, fmt: Callable[[float], str] = str,
            higher_is_better: bool = False, mark: str = " (extrap.)") -> None:
        """A row; with ``limit`` a verdict on ``value``, or on ``scale`` when given: the figure brought to the
        target's size (extrapolated when below it)."""
        at_target, verdict = "", ""
        if limit is not None and value is not None:
            judged = value
            if scale is not None:
                at_target = fmt(scale)
                judged = scale
            else:
                mark = ""
            ok = judged >= limit if higher_is_better else judged <= limit
            verdict = ("met" if ok else "MISSED") + mark
        self.rows.append(Row(measure, figure, at_target, target, verdict))
        shown = f"  {measure}: {figure}" + (f" -> {at_target}" if at_target else "")
        print(shown + (f"  [{verdict}]" if verdict else ""), flush=True)

    def print(self) -> None:
        head = Row("measure", f"at {self.entries:,} entries", "extrapolated to the target size", "#15 target",
                   "verdict")
        rows = [head, *self.rows]
        widths = [max(len(getattr(r, f)) for r in rows) for f in ("measure", "figure", "at_target", "target",
                                                                  "verdict")]

        def line(r: Row) -> str:
            cells = (r.measure, r.figure, r.at_target, r.target, r.verdict)
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        print(line(head))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in self.rows:
            print(line(r))


def _s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def _mb(x: float) -> str:
    return f"{x:,.0f} MB"


# --- the benchmark ------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, skip: set[str]) -> Table:
    import make_log

    data, meta = ensure_log(args.cache, args.entries, datasets=args.datasets, seed=args.seed, procs=args.procs)
    events, size_b = int(meta["events"]), int(meta["bytes"])
    n = args.entries
    to_entries = TARGET_ENTRIES / n if n < TARGET_ENTRIES else None
    to_events = TARGET_EVENTS / events if events < TARGET_EVENTS else None
    sizes = make_log.dataset_sizes(n, args.datasets)
    largest = make_log.dataset_id_of(max(range(len(sizes)), key=sizes.__getitem__))
    work = Path(tempfile.mkdtemp(prefix="work-", dir=args.cache))
    log = args.cache / "bench.log"
    table = Table(n)
    print(f"# log: {events:,} events, {size_b / MB:,.0f} MB ({size_b / n:,.0f} bytes an entry, "
          f"{events / n:.2f} events an entry) in {data}; largest dataset {largest} ({max(sizes):,} entries)")
    how = "cached: made earlier" if meta.get("cached") else "made"
    table.add("make the log (make_log.py --entries)",
              f"{how} in {meta['seconds']:.1f} s, {events / meta['seconds']:,.0f} events/s with "
              f"{meta.get('procs', '?')} process(es), {size_b / n:,.0f} B/entry")
    try:
        if "rebuild" not in skip:
            c = run_child("rebuild", data, log)
            r = c.result
            if r["entries"] != n:
                print(f"  ! the read model holds {r['entries']:,} entries, not {n:,}: {r['per_dataset']}")
            secs = float(r["seconds"])
            table.add("full rebuild, wall", _s(secs), value=secs, limit=90, target="<= 90 s at 10M entries",
                      scale=secs * to_entries if to_entries else None, fmt=_s)
            table.add("full rebuild, per 1M events", f"{_s(secs)} for {events:,} events", value=secs, limit=3,
                      target="<= 3 s at 1M events", scale=secs * TARGET_EVENTS / events, fmt=_s,
                      mark=" (extrap.)" if to_events else " (per 1M)")
            table.add("full rebuild, peak RSS", f"{_mb(c.peak_mb)} (RSS after {_mb(r['rss_mb'])})",
                      target="(none)")
        if "snapshot" not in skip:
            c = run_child("save", data, log)
            table.add("snapshot save", f"{_s(c.result['seconds'])}, {_mb(c.result['mb'])} file", target="(none)")
            c = run_child("snapshot", data, log, largest)
            r = c.result
            if not r["used"]:
                print("  ! the snapshot was not used")
            secs = float(r["seconds"])
            table.add("start-up from snapshot: ReadModel.open", _s(secs), value=secs, limit=5,
                      target="<= 5 s at 10M entries", scale=secs * to_entries if to_entries else None, fmt=_s)
            table.add("  then first use of the largest dataset",
                      f"{_s(r['first_use_seconds'])}; RSS {_mb(r['rss_mb'])} -> {_mb(r['rss_used_mb'])}, "
                      f"peak {_mb(c.peak_mb)}", target="(none)")
        if "serve" not in skip or "search" not in skip:
            bench_serve(args, skip, data, largest, work, table, to_entries)
        if "export" not in skip or "export-cli" not in skip:
            bench_export(args, skip, data, largest, work, log, table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table


def bench_serve(args: argparse.Namespace, skip: set[str], data: Path, dataset: str, work: Path, table: Table,
                to_entries: float | None) -> None:
    import make_log
    from bench_api import start_server, stop_server

    base_mb = empty_server_mb(work, args.threads) if to_entries else 0.0
    proc, base, startup = start_server(data, args.threads, args.cache / "serve.log")
    try:
        verified = wait_verified(proc, base, timeout=args.verify_timeout)
        table.add("dset serve: up (first 200 on /health)", f"{_s(startup)}; its check of the log done "
                  f"{_s(verified)} later", target="(none)")
        url = f"{base}/datasets/{dataset}/entries"
        firsts: dict[str, tuple[float, dict[str, Any]]] = {}
        for _, query in SCENARIOS:
            firsts[query] = _get(f"{url}?{query}&page=1")
        mem = _status_mb(proc.pid)
        rss = mem["VmRSS"]
        scaled = base_mb + (rss - base_mb) * to_entries if to_entries else None
        table.add("dset serve: VmRSS after start-up", f"{_mb(rss)} (peak {_mb(mem['VmHWM'])}"
                  + (f"; empty server {_mb(base_mb)}" if to_entries else "") + ")", value=rss, limit=3000,
                  target="<= 3 GB at 10M entries", scale=scaled, fmt=_mb)
        if "serve" not in skip:
            for name, query in SCENARIOS:
                first_s, first = firsts[query]
                pages = max(1, min(int(first["pages"]), 2000))
                r = load(base, [_path(f"{url}?{query}&page={p}") for p in range(1, pages + 1)], args)
                table.add(f"GET entries {name}: p99",
                          f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms{_errors(r)} (first request, which "
                          f"builds its index: {first_s * 1e3:,.0f} ms; {first['total']:,} match)",
                          value=_failed_as_inf(r, "p99_ms"), limit=20, target="p99 <= 20 ms")
                table.add(f"GET entries {name}: throughput", f"{r['rps']:,.0f} req/s ({r['requests']:,.0f} in "
                          f"{args.seconds:g} s)", value=0.0 if r["errors"] else r["rps"], limit=1000,
                          target=">= 1,000 req/s", higher_is_better=True)
        if "search" not in skip:
            wait_search_index(base, data, table, to_entries, startup)
            bench_search(args, base, url, table, to_entries, make_log.VOCABULARY)
        mem = _status_mb(proc.pid)
        table.add("dset serve: VmRSS at the end", f"{_mb(mem['VmRSS'])} (peak {_mb(mem['VmHWM'])})",
                  target="(none)")
    finally:
        stop_server(proc)


def wait_search_index(base: str, data: Path, table: Table, to_entries: float | None, startup: float) -> None:
    """Wait for the server's search index (projections.search) to reach the end of the log: its build time."""
    t0 = time.perf_counter()
    while True:
        index = _get(f"{base}/health")[1]["search_index"]
        if index["off"]:
            raise SystemExit("the server's search index is off: see serve.log")
        if index["indexed"] >= index["log_bytes"]:
            break
        time.sleep(0.5)
    built = startup + time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (data / "snapshots" / "search").iterdir())
    table.add("search index: built by dset serve", f"{_s(built)} from start-up (as it serves), "
              f"{_mb(size / 1e6)} on disk" + (f"; x {to_entries:g} for 10M entries: {_s(built * to_entries)}"
                                              if to_entries else ""), target="(none)")


def bench_search(args: argparse.Namespace, base: str, url: str, table: Table, to_entries: float | None,
                 vocabulary: tuple[str, ...]) -> None:
    k = args.search_words
    # frequent to rare, spread evenly on a log scale of the vocabulary's ranks (Zipf: frequency ~ 1 / rank)
    ranks = sorted({min(len(vocabulary) - 1, round(5 * (len(vocabulary) / 5) ** (i / max(1, k - 1))))
                    for i in range(k)})
    words = [vocabulary[r] for r in ranks]
    # the first search of a dataset's entry index also codes its entries' texts as the search index numbers them
    # (once per index, as the index's first page sorts): timed on its own, with a word that is not in the log
    first_s, _ = _get(f"{url}?per_page=50&q=zzzzqqqq&page=1")
    cold: list[float] = []
    matches: list[int] = []
    for word in words:
        seconds, body = _get(f"{url}?per_page=50&q={word}&page=1")
        cold.append(seconds * 1e3)
        matches.append(int(body["total"]))
    cold_sorted = sorted(cold)
    p50 = cold_sorted[len(cold) // 2]
    p99 = cold_sorted[min(len(cold) - 1, int(len(cold) * 0.99))]
    table.add(f"search q=WORD, nothing cached ({len(words)} words): p99",
              f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max {cold_sorted[-1]:,.0f} ms (matches {min(matches):,} to "
              f"{max(matches):,}; words {words[0]!r} .. {words[-1]!r}; before them the index's first search, "
              f"which codes its entries' texts: {first_s * 1e3:,.0f} ms)", value=p99, limit=200,
              target="p99 <= 200 ms", scale=p99 * to_entries if to_entries else None,
              fmt=lambda v: f"{v:,.0f} ms")
    # the same words again, from the load process: their results are cached now, pages drawn at random
    rng = random.Random(15)
    paths = [_path(f"{url}?per_page=50&q={w}&page={1 + rng.randrange(max(1, min(2000, -(-m // 50))))}")
             for w, m in zip(words, matches, strict=True) for _ in range(50)]
    r = load(base, paths, args)
    table.add("search q=WORD, results cached: p99",
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['rps']:,.0f} req/s{_errors(r)}",
              value=_failed_as_inf(r, "p99_ms"), limit=200, target="p99 <= 200 ms")


def bench_export(args: argparse.Namespace, skip: set[str], data: Path, dataset: str, work: Path, log: Path,
                 table: Table) -> None:
    for fmt in args.formats:
        out = work / f"export-{fmt}"
        if "export" not in skip:
            c = run_child("export", data, log, dataset, fmt, str(out))
            r = c.result
            rate = r["entries"] / r["seconds"] if r["seconds"] else 0.0
            table.add(f"export {fmt}: entries/s",
                      f"{rate:,.0f} entries/s ({r['entries']:,} entries in {_s(r['seconds'])}, {r['files']} files, "
                      f"{_mb(r['mb'])}; read model opened in {_s(r['load_s'])})", value=rate, limit=100_000,
                      target=">= 100,000 entries/s", higher_is_better=True)
            table.add(f"export {fmt}: memory beyond the loaded read model",
                      f"+{_mb(r['growth_mb'])} (of which loading pyarrow {_mb(r['import_mb'])}, with the pandas its first "
                      f"conversion imports where installed; RSS loaded "
                      f"{_mb(r['rss_loaded_mb'])}, peak {_mb(c.peak_mb)})" if fmt == "parquet" else
                      f"+{_mb(r['growth_mb'])} (RSS loaded {_mb(r['rss_loaded_mb'])}, peak {_mb(c.peak_mb)})",
                      value=r["growth_mb"], limit=200, target="flat, <= +200 MB")
            shutil.rmtree(out, ignore_errors=True)
        if "export-cli" not in skip:
            argv = [sys.executable, "-m", "dsetlog", "export", dataset, "--data", str(data), "--format", fmt,
                    "--output-dir", str(out)]
            c = run_process(argv, log)
            table.add(f"`dset export --format {fmt}`, end to end", f"{_s(c.seconds)} wall, peak RSS {_mb(c.peak_mb)}",
                      target="(none)")
            shutil.rmtree(out, ignore_errors=True)


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, help="entries of the log (required)")
    parser.add_argument("--cache", type=Path, help="where the log is kept (default /tmp/dsetlog-bench/scale-N)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STEP",
                        help=f"leave out some of: {', '.join(STEPS)} (space- or comma-separated)")
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--procs", type=int, help="processes writing the log (default: make_log.py's)")
    parser.add_argument("--formats", nargs="+", default=["jsonl", "parquet"])
    parser.add_argument("--threads", type=int, default=8, help="dset serve --threads")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections of the load process")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load run")
    parser.add_argument("--search-words", type=int, default=12, help="q= words, frequent to rare (at most 28: the "
                                                                      "index keeps 32 results)")
    parser.add_argument("--verify-timeout", type=float, default=3600.0, help="seconds to wait for serve's log check")
    parser.add_argument("--measure", nargs="+", metavar=("KIND", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.measure[2:])))
        return 0
    skip = {s for item in args.skip for s in item.split(",") if s}
    if skip - set(STEPS):
        parser.error(f"--skip: unknown {', '.join(sorted(skip - set(STEPS)))} (steps: {', '.join(STEPS)})")
    if args.entries is None or args.entries < 1:
        parser.error("--entries N (>= 1) is required")
    args.search_words = max(1, min(args.search_words, 28))
    args.cache = args.cache or Path(tempfile.gettempdir()) / "dsetlog-bench" / f"scale-{args.entries}"
    if args.procs is None:
        from make_log import default_procs

        args.procs = default_procs(args.entries)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally blocks stop the server
    shown = argv if argv is not None else sys.argv[1:]
    print(f"$ python bench/bench_scale.py {' '.join(shown)}")
    print(f"# nproc {_nproc()}, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}, "
          f"page size {resource.getpagesize()}; each measure in a fresh process", flush=True)
    table = bench(args, skip)
    print()
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
