"""rows/s of `dset generate` against the simulator, beside the ideal and bare AsyncOpenAI loops.

In one run, on the same questions and the same simulator (a separate `dset simulate` process, so it
never shares an interpreter or a GIL with the client being measured), for each concurrency C:

* ideal           C / latency: what a client with zero cost per row would reach;
* bare httpx2     `openai.AsyncOpenAI` + `asyncio.Semaphore(C)` over every question, persisting nothing,
                  with the settings LLMClient had (max_retries=0, one httpx2 client whose limits are
                  sized to C: max_connections 2C, keep-alive C) and `chat.completions.create()`.
                  The reference of the issue's target;
* bare aiohttp    the same loop over the SDK's aiohttp transport (`openai.DefaultAioHttpClient`, needs
                  aiohttp installed; shown as unavailable otherwise);
* bare LLMClient  the same loop over dset's own `dsetlog.llm.client.LLMClient.complete()`, persisting nothing:
                  `dset generate` / this is what durability (events, fsyncs, projections, outputs) costs;
* dset generate   a real `dset generate Q.csv --base-url URL --model deepseek-chat --concurrency C
                  --no-progress --data TMP/data --out TMP/out` subprocess (DSET_API_KEY=x), on an empty
                  data dir each time; its output.csv is checked to hold every question.

Every measurement is a fresh child process, timed from spawn to exit (interpreter start, imports,
queueing, the calls, the final fsync and the output files all count, for the bare loops too); its
peak RSS and CPU time come from os.wait4 for that one child, so numbers never mix. `client CPU`
near 100% means the client is CPU-bound; `sim CPU` is the simulator process's share of one core
over the same time: near 100% would mean the simulator, not the client, sets the pace. On a
2-core machine anything else running steals from one of the two: the load average is printed.

Targets (issue 3): at C=64 dset >= 0.85 x bare httpx2; peak RSS < 300 MB.

    python bench/bench_generate.py                      # 5,000 questions, 100 ms, C = 64 and 256
    python bench/bench_generate.py --quick              # 1,000 questions
    python bench/bench_generate.py --concurrency 64 --variants httpx2,llmclient --repeat 3

This is a script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "deepseek-chat"
BARE = {"httpx2": "bare httpx2", "aiohttp": "bare aiohttp", "llmclient": "bare LLMClient"}
DSET = "dset generate"
TOPICS = ("the water cycle", "photosynthesis", "plate tectonics", "the printing press", "compound interest",
          "vaccines", "black holes", "the French Revolution", "supply and demand", "neural networks")


# --------------------------------------------------------------------------------------------------
# The bare loops (each in its own subprocess: `bench_generate.py --bare URL C CSV VARIANT`)


def read_questions(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return [r[0] for r in rows[1:] if r and r[0].strip()]


def bare_main(base_url: str, concurrency: int, questions_csv: str, variant: str) -> int:
    import httpx2
    import openai

    questions = read_questions(Path(questions_csv))

    async def main() -> dict[str, object]:
        if variant == "llmclient":
            from dsetlog.engine.build import EngineSettings, client_for
            from dsetlog.llm.providers import resolve

            llm = client_for(resolve("deepseek", model=MODEL, base_url=base_url), EngineSettings(concurrency=concurrency))

            async def call(question: str) -> bool:
                c = await llm.complete([{"role": "user", "content": question}], attempt=1)
                return bool(c.content)

            close = llm.close
        else:
            limits = httpx2.Limits(max_connections=max(concurrency * 2, 16),
                                   max_keepalive_connections=max(concurrency, 16))
            factory = openai.DefaultAioHttpClient if variant == "aiohttp" else openai.DefaultAsyncHttpx2Client
            try:
                http_client = factory(limits=limits, timeout=300.0)
            except RuntimeError as exc:  # the aiohttp extra is not installed
                return {"unavailable": str(exc)}
            client = openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0, timeout=300.0,
                                        http_client=http_client)

            async def call(question: str) -> bool:
                resp = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": question}],
                    extra_headers={"X-Dset-Attempt": "1"},  # what dset sends: the same request, byte for byte
                )
                return bool(resp.choices and resp.choices[0].message.content)

            close = client.close

        sem = asyncio.Semaphore(concurrency)
        failures = 0

        async def ask(question: str) -> None:
            nonlocal failures
            async with sem:
                try:
                    if not await call(question):
                        failures += 1
                except Exception:  # noqa: BLE001 - counted, never retried: the figure must show it
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(ask(q) for q in questions))
        loop_s = time.perf_counter() - started
        await close()
        return {"loop_s": loop_s, "failures": failures, "rows": len(questions)}

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# The driver


def dset_command() -> list[str]:
    script = Path(sys.executable).with_name("dset")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dsetlog"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSET_", "DEEPSEEK_"))}
    env["DSET_API_KEY"] = "x"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # A user's install has its bytecode compiled; a child that compiled dsetlog from source on every start
    # (PYTHONDONTWRITEBYTECODE, set on some machines) would charge ~0.2 s of start-up CPU that no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimProcess:
    """`dset simulate --port 0 --latency-ms L` as a child process."""

    def __init__(self, latency_ms: float) -> None:
        cmd = [*dset_command(), "simulate", "--port", "0", "--latency-ms", f"{latency_ms:g}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=ROOT, env=child_env())
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening on" not in line:
            self.proc.kill()
            raise SystemExit(f"simulator did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1].strip()

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def requests(self) -> int:
        with urllib.request.urlopen(self.base_url.rsplit("/v1", 1)[0] + "/_sim/stats", timeout=10) as resp:
            return int(json.load(resp)["requests"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Measure:
    label: str
    concurrency: int
    rows: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    sim_cpu_s: float
    sim_requests: int
    ok: bool
    note: str = ""

    @property
    def rate(self) -> float:
        return self.rows / self.wall_s if self.ok and self.wall_s > 0 else float("nan")


def run_child(cmd: list[str], *, cwd: Path, sim: SimProcess, label: str, concurrency: int,
              rows: int) -> tuple[Measure, str]:
    """Run one child to its exit: wall time, and CPU and peak RSS from os.wait4 (this child only)."""
    sim_cpu0, sim_req0 = sim.cpu(), sim.requests()
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=child_env(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    m = Measure(label, concurrency, rows, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                sim.cpu() - sim_cpu0, sim.requests() - sim_req0, proc.returncode == 0)
    if not m.ok:
        m.note = f"exit {proc.returncode}: {' '.join(text.strip().splitlines()[-1:])}"
    elif m.sim_requests != rows:
        m.note = f"{m.sim_requests} requests for {rows} rows"
    return m, text


def measure_bare(sim: SimProcess, concurrency: int, questions_csv: Path, rows: int, variant: str,
                 work: Path) -> Measure:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", sim.base_url, str(concurrency),
           str(questions_csv), variant]
    m, text = run_child(cmd, cwd=work, sim=sim, label=BARE[variant], concurrency=concurrency, rows=rows)
    if not m.ok:
        return m
    try:
        info = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        m.ok, m.note = False, "no result line"
        return m
    if "unavailable" in info:
        m.ok, m.note = False, f"unavailable: {info['unavailable']}"
    elif info["failures"]:
        m.ok, m.note = False, f"{info['failures']} failed calls"
    return m


def measure_dset(sim: SimProcess, concurrency: int, questions_csv: Path, rows: int, work: Path, *,
                 extra: Sequence[str] = (), label: str = DSET) -> Measure:
    """`dset generate` over the questions, ``extra`` flags added, in a fresh data dir; its output.csv checked."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"dset-c{concurrency}-", dir=work))
    csv_copy = run_dir / "questions.csv"  # dset writes bookmarks back into its CSV: each run gets its own
    shutil.copyfile(questions_csv, csv_copy)
    cmd = [*dset_command(), "generate", str(csv_copy), "--base-url", sim.base_url, "--model", MODEL,
           "--concurrency", str(concurrency), "--no-progress", "--data", str(run_dir / "data"),
           "--out", str(run_dir / "out"), *extra]
    m, _ = run_child(cmd, cwd=run_dir, sim=sim, label=label, concurrency=concurrency, rows=rows)
    if m.ok:
        with open(run_dir / "out" / "output.csv", newline="", encoding="utf-8") as fh:
            written = sum(1 for _ in csv.reader(fh)) - 1
        if written != rows:
            m.ok, m.note = False, f"output.csv has {written} rows, expected {rows}"
    shutil.rmtree(run_dir, ignore_errors=True)
    return m


def make_questions(path: Path, n: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question"])
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            # a question (the simulator answers one with a paragraph of ~500 characters, as models do)
            w.writerow([f"Question {i + 1}: how does {topic} work, explained to a first-year student with one "
                        f"concrete example and one common misconception (variant {i // len(TOPICS)})?"])


def best(ms: list[Measure]) -> Measure:
    good = [m for m in ms if m.ok]
    return max(good, key=lambda m: m.rate) if good else ms[-1]


def ratio(a: Measure | None, b: Measure | None) -> str:
    """a / b in rows/s: wall clock, and by CPU time (rows per CPU-second), which a busy machine disturbs less."""
    if a is None or b is None or not (a.ok and b.ok):
        return "-"
    return f"{a.rate / b.rate:.2f} (by CPU {b.cpu_s / a.cpu_s:.2f})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare"]:
        url, conc, questions_csv, variant = argv[1:5]
        return bare_main(url, int(conc), questions_csv, variant)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, help="questions in the CSV (default 5000; 1000 with --quick)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="simulator latency per call (default 100)")
    p.add_argument("--concurrency", default="64,256", help="comma-separated list (default 64,256)")
    p.add_argument("--variants", default="httpx2,aiohttp,llmclient",
                   help="bare loops, comma-separated, from httpx2, aiohttp, llmclient (default: all three)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell, the best is kept (default 1)")
    p.add_argument("--quick", action="store_true", help="1,000 questions")
    args = p.parse_args(argv)
    rows = args.questions or (1000 if args.quick else 5000)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "httpx2" not in variants:
        variants.insert(0, "httpx2")  # the reference for the target
    for v in variants:
        if v not in BARE:
            p.error(f"unknown variant {v!r}; choose from {', '.join(BARE)}")
    labels = [BARE[v] for v in variants] + [DSET]

    import openai

    command = shlex.join(["python", "bench/bench_generate.py", *argv])
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    questions_csv = work / "questions.csv"
    make_questions(questions_csv, rows)
    sim = SimProcess(args.latency_ms)
    load0 = os.getloadavg()[0]
    print(f"bench_generate: {rows} questions; simulator at {args.latency_ms:g} ms in its own process "
          f"({sim.base_url}); openai {openai.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, load average {load0:.2f} at the start", flush=True)
    results: dict[tuple[int, str], Measure] = {}
    try:
        for conc in concurrencies:
            for label in labels:
                runs = []
                for _ in range(args.repeat):
                    if label == DSET:
                        m = measure_dset(sim, conc, questions_csv, rows, work)
                    else:
                        variant = next(k for k, v in BARE.items() if v == label)
                        m = measure_bare(sim, conc, questions_csv, rows, variant, work)
                    runs.append(m)
                    print(f"  .. C={conc:<4} {label:<15} {m.rate:8.1f} rows/s  wall {m.wall_s:6.2f} s"
                          f"{'  ' + m.note if m.note else ''}", flush=True)
                results[(conc, label)] = best(runs)
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()[0]

    print()
    head = (f"{'C':>5}  {'what':<17} {'rows/s':>8} {'of ideal':>8} {'vs bare':>7} {'wall s':>7} "
            f"{'CPU ms/row':>10} {'rows/CPU-s':>10} {'client CPU':>10} {'peak RSS':>9} {'sim CPU':>7}")
    print(head)
    print("-" * len(head))
    for conc in concurrencies:
        ideal = conc / (args.latency_ms / 1000)
        print(f"{conc:>5}  {'ideal (C/latency)':<17} {ideal:>8.1f} {'100%':>8}")
        ref = results.get((conc, BARE["httpx2"]))
        for label in labels:
            m = results[(conc, label)]
            if not m.ok and m.note.startswith("unavailable"):
                print(f"{conc:>5}  {label:<17} {'n/a':>8}  {m.note}")
                continue
            vs = f"{m.rate / ref.rate:.2f}" if ref is not None and ref.ok and m.ok else "-"
            print(f"{conc:>5}  {label:<17} {m.rate:>8.1f} {m.rate / ideal:>8.0%} {vs:>7} "
                  f"{m.wall_s:>7.2f} {1000 * m.cpu_s / m.rows:>10.2f} {m.rows / m.cpu_s:>10.0f} "
                  f"{m.cpu_s / m.wall_s:>10.0%} "
                  f"{m.peak_rss_mb:>6.0f} MB {m.sim_cpu_s / m.wall_s:>7.0%}{'  ' + m.note if m.note else ''}")
    print()
    for conc in concurrencies:
        dset = results.get((conc, DSET))
        parts = [f"C={conc}: dset / bare httpx2 = {ratio(dset, results.get((conc, BARE['httpx2'])))}"]
        if "llmclient" in variants:
            parts.append(f"dset / bare LLMClient (cost of durability) = "
                         f"{ratio(dset, results.get((conc, BARE['llmclient'])))}")
        if dset is not None:
            parts.append(f"dset peak RSS {dset.peak_rss_mb:.0f} MB")
        print("; ".join(parts))
    print("targets: dset / bare httpx2 >= 0.85 at C=64; peak RSS < 300 MB. Every figure: one fresh process, "
          f"spawn to exit (best of {args.repeat}). Load average {load0:.2f} -> {load1:.2f}.")
    print("rows/CPU-s: rows per second of the client's own CPU time, what it would reach on a core of its own "
          "while it is CPU-bound.")
    if max(load0, load1) > (os.cpu_count() or 1) - 0.5:
        print(f"warning: the machine was busy (load average up to {max(load0, load1):.1f} on {os.cpu_count()} "
              "cores): the wall-clock figures (rows/s, wall s) understate; CPU ms/row and rows/CPU-s hold.")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
