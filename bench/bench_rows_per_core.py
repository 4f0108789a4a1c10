"""CPU per answered row: what one core of the client can drive when the model server is fast (issue 14).

When a model server answers quickly, the client's own CPU caps the rows/s. This script measures, in one
run and side by side, the user+sys CPU each client spends per answered row, against the same server: one
`dset simulate --latency-ms L` process (50 ms by default), started once, so it never shares an
interpreter or a GIL with the client being measured. Over the same N questions (6,000; 1,000 with
--quick) at each concurrency C (64; `--concurrency 64,256` for a list):

* raw aiohttp       an `aiohttp.ClientSession` (connector limit C) + `asyncio.Semaphore(C)` loop POSTing the
                    chat-completions body (json.dumps) and json.loads-ing the reply, persisting nothing: the
                    floor, what any Python client must at least spend;
* bare AsyncOpenAI  `openai.AsyncOpenAI(http_client=openai.DefaultAioHttpClient(...), max_retries=0)` and
                    `chat.completions.create()`, persisting nothing (bench_generate.py's "bare aiohttp" loop);
* dset generate     a real `dset generate Q.csv --base-url URL --model deepseek-chat --concurrency C
                    --no-progress --data TMP/data --out TMP/out` (DSET_API_KEY=x), every event durable as
                    always; its output.csv is checked to hold every question;
* dset generate     the same with `--cores 1` (never a send process on a second core) and with `--cores 2`
  --cores 1 / 2     (its requests sent from a send process from the start); `dset generate` (--cores auto, the
                    default) starts one once it is CPU-bound with a core to spare and keeps it if it pays;
* dset datasets     the document pipeline: a markdown document of N/10 sections, ingested first (not timed)
  generate          with `dset ingest --strategy markdown` into a fresh data dir, then `dset datasets generate
                    --datasets-per-chunk 10 --concurrency C` with its classification, parsing and chunking
                    models `vllm:deepseek-chat`, pointed at the same server by VLLM_BASE_URL (a profile that
                    needs no key; its structured mode json_schema): N/10 structured calls, ~N entries. Its
                    figures are per generated entry (the count it prints), quality analysis on as by default.
                    The document repeats 10 topics, so its entries are often near-duplicates of each other:
                    the near-duplicate check has more candidates to compare than on most real documents.

Every client is a fresh child process, timed from spawn to exit (interpreter start, imports, the calls, the
final fsyncs and output files all count); its user+sys CPU and peak RSS come from os.wait4 for that one
child. CPU ms/row = CPU s / rows; "rows/s per core" = 1000 / CPU ms per row, what the client would reach on
a core of its own while CPU-bound, whatever else the machine is doing. `start CPU s` is a fresh interpreter
importing what that client imports and exiting (IMPORTS: a fixed cost, spread over the rows); `ms/row
after` = (CPU s - start CPU s) / rows. `sim CPU` is the server's share
of one core over the same wall time. The load average is printed: on 2 cores anything else running
steals wall time (rows/s) but hardly CPU per row.

Targets (issue 14):
  1. `dset generate` CPU per row <= 1.5 x the raw aiohttp loop's (at each C measured);
  2. (--targets) at 100 ms latency, `dset generate` alone: C=64 >= 0.9 of the ideal 640 rows/s, and C=256 >=
     1,200 rows/s, the server in its own process on the same machine;
  3. the document pipeline's CPU per generated entry <= 2 x `dset generate`'s per row;
  4. (--targets) a second core used where it pays: target 2's runs again with `--cores 1` and `--cores 2`, side
     by side, the rows/s and CPU per row of each (CPU per row counts the send process too: os.wait4 counts a child's
     waited-for children).

    python bench/bench_rows_per_core.py                         # 6,000 questions, 50 ms, C = 64
    python bench/bench_rows_per_core.py --quick                 # 1,000 questions
    python bench/bench_rows_per_core.py --concurrency 64,256 --latency-ms 50
    python bench/bench_rows_per_core.py --targets               # and targets 2 and 4: 100 ms, C = 64, 256
    python bench/bench_rows_per_core.py --clients raw,dset --repeat 3

This is a script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import (  # noqa: E402 - the bench directory is not a package
    MODEL,
    TOPICS,
    Measure,
    SimProcess,
    child_env,
    dset_command,
    make_questions,
    measure_bare,
    measure_dset,
    read_questions,
    run_child,
)

RAW, OPENAI, DSET, DOCS = "raw aiohttp", "bare AsyncOpenAI", "dset generate", "dset datasets generate"
DSET1 = "dset generate --cores 1"  # one process, never a send process
DSET2 = "dset generate --cores 2"  # its requests sent from a second process from the start: target 4
CLIENTS = {"raw": RAW, "openai": OPENAI, "dset": DSET, "dset1": DSET1, "dset2": DSET2, "docs": DOCS}
PER_CHUNK = 10  # entries asked for per document chunk: N/10 calls for ~N entries
DOCS_SPEC = f"vllm:{MODEL}"  # every model role of the document run: the vllm profile, VLLM_BASE_URL = the server
TARGET_LATENCY_MS = 100.0
TARGET_CONCURRENCY = (64, 256)


# --------------------------------------------------------------------------------------------------
# The raw loop (its own subprocess: `bench_rows_per_core.py --raw URL C CSV`)


def raw_main(base_url: str, concurrency: int, questions_csv: str) -> int:
    import aiohttp

    questions = read_questions(Path(questions_csv))
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": "Bearer x", "Content-Type": "application/json", "X-Dset-Attempt": "1"}

    async def main() -> dict[str, object]:
        sem = asyncio.Semaphore(concurrency)
        failures = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:

            async def ask(question: str) -> None:
                nonlocal failures
                body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]})
                async with sem:
                    try:
                        async with session.post(url, data=body, headers=headers) as resp:
                            reply = json.loads(await resp.read())
                        if resp.status != 200 or not reply["choices"][0]["message"]["content"]:
                            failures += 1
                    except Exception:  # noqa: BLE001 - counted, never retried: the figure must show it
                        failures += 1

            started = time.perf_counter()
            await asyncio.gather(*(ask(q) for q in questions))
            loop_s = time.perf_counter() - started
        return {"loop_s": loop_s, "failures": failures, "rows": len(questions)}

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# The measurements


def measure_raw(sim: SimProcess, concurrency: int, questions_csv: Path, rows: int, work: Path) -> Measure:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--raw", sim.base_url, str(concurrency), str(questions_csv)]
    m, text = run_child(cmd, cwd=work, sim=sim, label=RAW, concurrency=concurrency, rows=rows)
    if m.ok:
        try:
            info = json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            m.ok, m.note = False, "no result line"
        else:
            if info["failures"]:
                m.ok, m.note = False, f"{info['failures']} failed calls"
    return m


def measure_openai(sim: SimProcess, concurrency: int, questions_csv: Path, rows: int, work: Path) -> Measure:
    m = measure_bare(sim, concurrency, questions_csv, rows, "aiohttp", work)
    m.label = OPENAI
    return m


def make_document(path: Path, sections: int) -> None:
    """A markdown handbook of ``sections`` short sections: one chunk each (markdown 2000), a heading of its own.

    Kept plain on purpose: the simulator's items are built from a chunk's keywords, and richer sections (more
    keywords) made it repeat an item within a reply, which the run refuses (a failed chunk, not a row)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# Handbook\n\n")
        for i in range(sections):
            topic = TOPICS[i % len(TOPICS)]
            fh.write(f"## Section {i + 1}: {topic}\n\n" + f"This section {i + 1} explains {topic}. " * 3
                     + f"The key fact of section {i + 1} is that {topic} matters because it shapes everyday life. "
                       f"A common misconception is that {topic} is simple.\n\n")


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """os.environ with ``values`` set meanwhile: run_child's children inherit it (through child_env())."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure_docs(sim: SimProcess, concurrency: int, doc: Path, chunks: int, work: Path) -> Measure:
    """Ingest the document into a fresh data dir (untimed), then time `dset datasets generate` to its exit."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"docs-c{concurrency}-", dir=work))
    data = run_dir / "data"
    ingest = subprocess.run([*dset_command(), "ingest", str(doc), "--project", "bench", "--strategy", "markdown",
                             "--data", str(data)], cwd=run_dir, env=child_env(), capture_output=True, text=True)
    if ingest.returncode != 0 or f"{chunks} chunks" not in ingest.stdout:
        shutil.rmtree(run_dir, ignore_errors=True)
        return Measure(DOCS, concurrency, 0, float("nan"), float("nan"), float("nan"), 0.0, 0, False,
                       f"ingest: exit {ingest.returncode}: {(ingest.stdout + ingest.stderr).strip()[-200:]}")
    cmd = [*dset_command(), "datasets", "generate", "--project", "bench", "--data", str(data),
           "--datasets-per-chunk", str(PER_CHUNK), "--concurrency", str(concurrency),
           "--classification-model", DOCS_SPEC, "--parsing-model", DOCS_SPEC, "--chunking-model", DOCS_SPEC,
           "--no-progress"]
    with environ(VLLM_BASE_URL=sim.base_url):  # the vllm profile, pointed at the same server (needs no key)
        m, text = run_child(cmd, cwd=run_dir, sim=sim, label=DOCS, concurrency=concurrency, rows=chunks)
    if m.ok:
        found = re.search(r"^(\d+) entries, (\d+) exported", text, re.MULTILINE)
        if not found:
            m.ok, m.note = False, "no entries line"
        else:
            m.rows = int(found.group(1))
            m.note = f"{chunks} chunks, {m.sim_requests} calls, {found.group(2)} exported"
    shutil.rmtree(run_dir, ignore_errors=True)
    return m


# What each client's child imports before its first call: spawning it with these imports alone is its start-up
# CPU (interpreter, imports), a fixed cost spread over the rows; "ms/row after start" takes it out.
IMPORTS = {
    RAW: "asyncio, json, aiohttp",
    OPENAI: "asyncio, json, httpx2, openai",
    DSET: "dsetlog.cli.main, dsetlog.generation.answering, dsetlog.engine.engine, dsetlog.llm.client",
    DSET1: "dsetlog.cli.main, dsetlog.generation.answering, dsetlog.engine.engine, dsetlog.llm.client",
    DSET2: "dsetlog.cli.main, dsetlog.generation.answering, dsetlog.engine.engine, dsetlog.llm.client",
    DOCS: "dsetlog.cli.main, dsetlog.jobs.lifecycle, dsetlog.engine.engine, dsetlog.llm.client",
}


def measure_start(sim: SimProcess, label: str, work: Path) -> float:
    """CPU seconds of a fresh interpreter that imports what ``label``'s child imports, and exits."""
    m, _ = run_child([sys.executable, "-c", f"import {IMPORTS[label]}"], cwd=work, sim=sim, label=label,
                     concurrency=0, rows=0)
    return m.cpu_s if m.ok else float("nan")


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class Row:
    m: Measure
    start_s: float = float("nan")

    @property
    def after_start_ms(self) -> float:
        return 1000 * (self.m.cpu_s - self.start_s) / self.m.rows if self.m.ok and self.m.rows else float("nan")

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.m.cpu_s / self.m.rows if self.m.ok and self.m.rows else float("nan")

    @property
    def per_core(self) -> float:
        return 1000 / self.cpu_ms if self.cpu_ms > 0 else float("nan")


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, wall-clock x cores) seconds of the whole machine so far, from /proc/stat (nan elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan"), float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick, sum(fields) / tick


def own_cpu() -> float:
    """CPU seconds of this process and of every child it has reaped (clients, ingests, servers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def least_cpu(ms: list[Measure]) -> Measure:
    good = [m for m in ms if m.ok and m.rows]
    return min(good, key=lambda m: m.cpu_s / m.rows) if good else ms[-1]


def fastest(ms: list[Measure]) -> Measure:
    good = [m for m in ms if m.ok]
    return max(good, key=lambda m: m.rate) if good else ms[-1]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_table(results: dict[tuple[int, str], Measure], concurrencies: list[int], labels: list[str],
                latency_ms: float, starts: dict[str, float]) -> None:
    head = (f"{'C':>4}  {'client':<22} {'rows':>6} {'wall s':>7} {'rows/s':>7} {'CPU s':>6} {'CPU ms/row':>10} "
            f"{'x raw':>6} {'rows/s per core':>15} {'start CPU s':>11} {'ms/row after':>12} {'client CPU':>10} "
            f"{'peak RSS':>9} {'sim CPU':>7}")
    print(head)
    print("-" * len(head))
    for conc in concurrencies:
        ideal = conc / (latency_ms / 1000)
        print(f"{conc:>4}  {'ideal (C / latency)':<22} {'':>6} {'':>7} {ideal:>7.0f}")
        raw = results.get((conc, RAW))
        for label in labels:
            m = results[(conc, label)]
            r = Row(m, starts.get(label, float("nan")))
            if not m.ok:
                print(f"{conc:>4}  {label:<22} failed: {m.note}")
                continue
            x_raw = f"{r.cpu_ms / Row(raw).cpu_ms:.2f}" if raw is not None and raw.ok else "-"
            print(f"{conc:>4}  {label:<22} {m.rows:>6} {m.wall_s:>7.2f} {m.rate:>7.0f} {m.cpu_s:>6.2f} "
                  f"{r.cpu_ms:>10.2f} {x_raw:>6} {r.per_core:>15,.0f} {r.start_s:>11.2f} {r.after_start_ms:>12.2f} "
                  f"{m.cpu_s / m.wall_s:>10.0%} "
                  f"{m.peak_rss_mb:>6.0f} MB {m.sim_cpu_s / m.wall_s:>7.0%}{'  ' + m.note if m.note else ''}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--raw"]:
        url, conc, questions_csv = argv[1:4]
        return raw_main(url, int(conc), questions_csv)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, help="questions (default 6000; 1000 with --quick); the document has "
                                                 "a tenth as many sections")
    p.add_argument("--quick", action="store_true", help="1,000 questions")
    p.add_argument("--latency-ms", type=float, default=50.0, help="the server's latency per call (default 50)")
    p.add_argument("--concurrency", default="64", help="comma-separated list (default 64)")
    p.add_argument("--clients", default="raw,openai,dset,docs",
                   help=f"comma-separated, from {', '.join(CLIENTS)} (default: all; raw is always run, the reference)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell, the least CPU per row kept (default 1)")
    p.add_argument("--targets", action="store_true",
                   help=f"also targets 2 and 4: dset generate alone at {TARGET_LATENCY_MS:g} ms, C = "
                        f"{' and '.join(map(str, TARGET_CONCURRENCY))}, against a second server, beside --cores 1")
    args = p.parse_args(argv)
    rows = args.questions or (1000 if args.quick else 6000)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    keys = [c.strip() for c in args.clients.split(",") if c.strip()]
    for k in keys:
        if k not in CLIENTS:
            p.error(f"unknown client {k!r}; choose from {', '.join(CLIENTS)}")
    if "raw" not in keys:
        keys.insert(0, "raw")
    labels = [CLIENTS[k] for k in CLIENTS if k in keys]
    chunks = max(1, rows // PER_CHUNK)

    import aiohttp
    import openai

    command = shlex.join(["python", "bench/bench_rows_per_core.py", *argv])
    work = Path(tempfile.mkdtemp(prefix="bench-rows-"))
    questions_csv = work / "questions.csv"
    make_questions(questions_csv, rows)
    doc = work / "handbook.md"
    make_document(doc, chunks)
    load0 = os.getloadavg()
    machine0, own0 = machine_cpu(), own_cpu()
    results: dict[tuple[int, str], Measure] = {}
    starts: dict[str, float] = {}
    targets: dict[tuple[int, str], Measure] = {}
    sim_line = ""

    def run(label: str, sim: SimProcess, conc: int) -> Measure:
        if label == RAW:
            return measure_raw(sim, conc, questions_csv, rows, work)
        if label == OPENAI:
            return measure_openai(sim, conc, questions_csv, rows, work)
        if label == DSET:
            return measure_dset(sim, conc, questions_csv, rows, work)
        if label in (DSET1, DSET2):
            return measure_dset(sim, conc, questions_csv, rows, work, extra=("--cores", label[-1]), label=label)
        return measure_docs(sim, conc, doc, chunks, work)

    def show(label: str, conc: int, m: Measure, latency: float) -> None:
        print(f"  .. {latency:g} ms C={conc:<4} {label:<22} {m.rows:>6} rows {m.rate:8.1f} rows/s  wall "
              f"{m.wall_s:6.2f} s  CPU {Row(m).cpu_ms:.2f} ms/row{'  ' + m.note if m.note else ''}", flush=True)

    # Compile every client's bytecode once, as an install does, before any child is timed.
    subprocess.run([sys.executable, "-c", "; ".join(f"import {names}" for names in IMPORTS.values())],
                   env=child_env(), check=True)
    try:
        sim = SimProcess(args.latency_ms)
        sim_line = f"server: `dset simulate --latency-ms {args.latency_ms:g}` in its own process ({sim.base_url})"
        print(f"bench_rows_per_core: {rows} questions, a {chunks}-section document x {PER_CHUNK} entries; {sim_line}; "
              f"aiohttp {aiohttp.__version__}, openai {openai.__version__}, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the start",
              flush=True)
        try:
            for conc in concurrencies:
                for label in labels:
                    runs = []
                    for _ in range(args.repeat):
                        m = run(label, sim, conc)
                        show(label, conc, m, args.latency_ms)
                        runs.append(m)
                    results[(conc, label)] = least_cpu(runs)
            for label in labels:
                starts[label] = min(measure_start(sim, label, work) for _ in range(max(args.repeat, 2)))
            if DSET in starts:  # the same imports, whatever --cores says
                starts.setdefault(DSET1, starts[DSET])
                starts.setdefault(DSET2, starts[DSET])
        finally:
            sim.stop()
        if args.targets:
            sim = SimProcess(TARGET_LATENCY_MS)
            try:
                for conc in TARGET_CONCURRENCY:
                    for label in (DSET, DSET1, DSET2):  # and what a second core gives (target 4)
                        runs = []
                        for _ in range(args.repeat):
                            m = run(label, sim, conc)
                            show(label, conc, m, TARGET_LATENCY_MS)
                            runs.append(m)
                        targets[(conc, label)] = fastest(runs)
            finally:
                sim.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    machine1, own1 = machine_cpu(), own_cpu()

    print()
    print(f"{rows} questions (the document pipeline: {chunks} chunks x {PER_CHUNK} entries asked for, per generated "
          f"entry); {sim_line}; every figure one fresh process, spawn to exit"
          f"{f', least CPU of {args.repeat}' if args.repeat > 1 else ''}")
    print_table(results, concurrencies, labels, args.latency_ms, starts)
    if targets:
        print()
        print(f"target 2: `dset generate` alone, server at {TARGET_LATENCY_MS:g} ms"
              f"{f', fastest of {args.repeat}' if args.repeat > 1 else ''}")
        print_table(targets, list(TARGET_CONCURRENCY), [DSET, DSET1, DSET2], TARGET_LATENCY_MS, starts)
    print()
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f} (1 min), {load0[1]:.2f} -> {load1[1]:.2f} (5 min), "
          f"{os.cpu_count()} cores")
    busy, steal, total = (b - a for a, b in zip(machine0, machine1, strict=True))
    if total > 0:
        wall = total / (os.cpu_count() or 1)
        others = busy - (own1 - own0)
        print(f"the machine over the run ({wall:.0f} s): this benchmark's processes {own1 - own0:.1f} s of CPU, "
              f"everything else {max(others, 0.0):.1f} s ({max(others, 0.0) / wall:.0%} of one core), "
              f"hypervisor steal {steal / total:.1%} of the cores' time")
    for conc in concurrencies:
        raw, dset, docs = (results.get((conc, label)) for label in (RAW, DSET, DOCS))
        if raw is not None and raw.ok and dset is not None and dset.ok:
            x = Row(dset).cpu_ms / Row(raw).cpu_ms
            nan = float("nan")
            after_dset = Row(dset, starts.get(DSET, nan)).after_start_ms
            after_raw = Row(raw, starts.get(RAW, nan)).after_start_ms
            after = (f"; after start-up {after_dset:.2f} / {after_raw:.2f} ms = {after_dset / after_raw:.2f}x"
                     if after_dset > 0 and after_raw > 0 else "")
            print(f"target 1 (C={conc}): dset generate {Row(dset).cpu_ms:.2f} ms / row = {x:.2f}x the raw loop's "
                  f"{Row(raw).cpu_ms:.2f} (target <= 1.5x) {verdict(x <= 1.5)}{after}")
        elif dset is not None:
            print(f"target 1 (C={conc}): not measured (a run failed: {dset.note or (raw.note if raw else '')})")
        if docs is not None and docs.ok and dset is not None and dset.ok:
            x = Row(docs).cpu_ms / Row(dset).cpu_ms
            print(f"target 3 (C={conc}): document pipeline {Row(docs).cpu_ms:.2f} ms / entry = {x:.2f}x dset "
                  f"generate's {Row(dset).cpu_ms:.2f} ms / row (target <= 2x) {verdict(x <= 2)}")
        elif docs is not None:
            why = (docs.note if not docs.ok else "dset generate was not run (--clients)" if dset is None
                   else f"dset generate failed: {dset.note}")
            print(f"target 3 (C={conc}): not measured ({why})")
    for conc in TARGET_CONCURRENCY if targets else ():
        m = targets[(conc, DSET)]
        ideal = conc / (TARGET_LATENCY_MS / 1000)
        if conc == 64:
            goal, text = 0.9 * ideal, f"0.9 x the ideal {ideal:.0f} = {0.9 * ideal:.0f}"
        else:
            goal, text = 1200.0, f"1,200; ideal {ideal:,.0f}"
        if m.ok:
            start = starts.get(DSET, float("nan"))
            print(f"target 2 (C={conc}, {TARGET_LATENCY_MS:g} ms): dset generate {m.rate:.0f} rows/s = "
                  f"{m.rate / ideal:.2f} of the ideal (target >= {text} rows/s) {verdict(m.rate >= goal)}; "
                  f"timed spawn to exit, the target leaves {rows / goal - rows / ideal:.2f} s beyond the ideal's "
                  f"{rows / ideal:.2f} s, and start-up alone takes {start:.2f} s of CPU")
        else:
            print(f"target 2 (C={conc}): failed: {m.note}")
    for conc in TARGET_CONCURRENCY if targets else ():
        two, one = targets[(conc, DSET2)], targets[(conc, DSET1)]
        if two.ok and one.ok:
            print(f"target 4 (C={conc}, {TARGET_LATENCY_MS:g} ms): --cores 2 {two.rate:.0f} rows/s, {Row(two).cpu_ms:.2f} "
                  f"ms CPU / row (run + send process); --cores 1 {one.rate:.0f} rows/s, {Row(one).cpu_ms:.2f} ms: "
                  f"{two.rate / one.rate:.2f}x the rows/s for {Row(two).cpu_ms / Row(one).cpu_ms:.2f}x the CPU "
                  f"({'pays' if two.rate >= one.rate * 1.1 else 'does not pay'} here; auto keeps a send process only "
                  "where it raises the rows/s by 10%)")
    if load0[0] > 1.0:
        print(f"note: load average {load0[0]:.1f} on {os.cpu_count()} cores at the start: wall-clock figures "
              "(rows/s) understate; CPU ms/row holds better. (The run itself, a client and the server, adds "
              "~1-1.5 to the load average by its end.)")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
