"""What the guide's code asks of a real `dset serve`: a page of 10,000 entries, and every POST answered at once.

    python bench/bench_api_guide.py                   # 20,000 entries, pages of 1,000 and 10,000
    python bench/bench_api_guide.py --entries 50000 --repeat 5

1. Pages. A data dir holding one dataset (bench_api.write_dataset) is served by a `dset serve` subprocess (no
   job worker). GET /datasets/{id}/entries?per_page=N (sort_by=position) is timed from the request to the
   last byte, the first time (each entry is encoded then) and again (the page is a slice of pre-encoded
   entries); the server's peak RSS (VmHWM) is read before and after.
2. POSTs. A fresh `dset serve --simulate` (with its job worker, which imports the openai SDK in the
   background as it starts) answers every POST route once, first at once after its banner, then again on a
   second fresh server after a pause; each time is the request's round trip.

A measurement, not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_api import DATASET, write_dataset  # noqa: E402


def serve(data: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSET_") and not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "dsetlog", "serve", "--data", str(data), "--port", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("dset serve: http://"), line
    return proc, line.split()[2]


def call(base: str, method: str, path: str, body: Any = None) -> tuple[float, int, Any]:
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return time.perf_counter() - t, status, raw


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pages(entries: int, sizes: list[int], repeat: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-guide-"))
    write_dataset(tmp / "data", entries)
    proc, base = serve(tmp / "data", "--no-worker")
    try:
        call(base, "GET", "/health")
        print(f"GET /datasets/{{id}}/entries of a {entries:,}-entry dataset (sort_by=position)")
        print(f"| per_page | bytes | first | again (best of {repeat}) | server peak RSS before -> after |")
        print("|---|---|---|---|---|")
        for size in sizes:
            before = peak_rss_mb(proc.pid)
            first, status, raw = call(base, "GET", f"/datasets/{DATASET}/entries?per_page={size}&sort_by=position")
            assert status == 200 and len(json.loads(raw)["entries"]) == min(size, entries), status
            again = min(call(base, "GET", f"/datasets/{DATASET}/entries?per_page={size}&sort_by=position")[0]
                        for _ in range(repeat))
            after = peak_rss_mb(proc.pid)
            print(f"| {size:,} | {len(raw) / 1e6:.1f} MB | {first * 1000:.0f} ms | {again * 1000:.0f} ms | "
                  f"{before:.0f} -> {after:.0f} MB |")
    finally:
        proc.terminate()
        proc.wait()


DOC = "# Harbour\n\nThe harbour opens at dawn. Boats unload at the north quay.\n\n# Light\n\nThe lamp turns.\n"


def posts(pause: float) -> list[tuple[str, float, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-guide-posts-"))
    proc, base = serve(tmp / "data", "--simulate", "--sim-latency-ms", "2")
    out = []
    try:
        time.sleep(pause)

        def post(label: str, method: str, path: str, body: Any) -> Any:
            dt, status, raw = call(base, method, path, body)
            out.append((label, dt, status))
            return json.loads(raw)

        post("POST /projects", "POST", "/projects", {"name": "p"})
        doc = post("POST /projects/{p}/documents", "POST", "/projects/p/documents",
                   {"filename": "a.md", "content": DOC})
        post("POST /projects/{p}/documents/{d}/chunk", "POST", f"/projects/p/documents/{doc['id']}/chunk",
             {"strategy": "paragraphs"})
        post("POST /taxonomy/", "POST", "/taxonomy/", {"project_id": "p", "name": "t", "categories": ["A", "B"]})
        post("POST /prompts", "POST", "/prompts", {"name": "pr", "content": "{chunk}"})
        post("POST /datasets/parameters", "POST", "/datasets/parameters",
             {"project_id": "p", "purpose": "x", "audience": "y", "dataset_format": "jsonl"})
        job = post("POST /datasets/generate", "POST", "/datasets/generate",
                   {"project_id": "p", "classification_model": "gemini"})
        post("POST /datasets/generate-evaluation", "POST", "/datasets/generate-evaluation",
             {"project_id": "p", "dataset_name": "ev"})
        deadline = time.monotonic() + 60
        while json.loads(call(base, "GET", f"/datasets/generate/{job['job_id']}/status")[2])["status"] in (
                "pending", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ds = job["dataset_id"]
        entry = json.loads(call(base, "GET", f"/datasets/{ds}/entries?per_page=1")[2])["entries"][0]["id"]
        post("PUT /datasets/{id}/entries/{e}", "PUT", f"/datasets/{ds}/entries/{entry}", {"category": "B"})
        post("POST /datasets/{id}/feedback", "POST", f"/datasets/{ds}/feedback", {"entry_ids": [entry], "rating": 4})
        post("POST /datasets/{id}/regenerate", "POST", f"/datasets/{ds}/regenerate",
             {"entry_ids": [entry], "regeneration_config": {"model": "gemini"}})
        slow = post("POST /datasets/generate (again)", "POST", "/datasets/generate",
                    {"project_id": "p", "dataset_name": "second", "datasets_per_chunk": 50, "concurrency": 1})
        post("POST /jobs/{id}/cancel", "POST", f"/jobs/{slow['job_id']}/cancel", {})
    finally:
        proc.terminate()
        proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pause", type=float, default=3.0, help="seconds after start before the second round")
    args = ap.parse_args()
    print(f"python bench/bench_api_guide.py --entries {args.entries} --sizes {args.sizes} --repeat {args.repeat}\n")
    pages(args.entries, [int(s) for s in args.sizes.split(",")], args.repeat)
    first, later = posts(0.0), posts(args.pause)
    print(f"\nEvery POST route once on a fresh `dset serve --simulate`: at once after start / {args.pause:g} s after")
    print("| route | at once | later | status |")
    print("|---|---|---|---|")
    for (label, a, status), (_, b, _) in zip(first, later, strict=True):
        print(f"| {label} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {status} |")
    print(f"\nslowest: {max(a for _, a, _ in first) * 1000:.1f} ms at once, "
          f"{max(b for _, b, _ in later) * 1000:.1f} ms later (target: every POST within 100 ms)")


if __name__ == "__main__":
    main()
