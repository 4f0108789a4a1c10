"""Ingest and chunk throughput (MB/s) per chunking strategy, over a generated markdown/text corpus.

    python bench/bench_ingest.py                       # 50 MB over 200 files (half .md, half .txt)
    python bench/bench_ingest.py --mb 10 --files 50 --runs 3

For each strategy, with its default chunk size and overlap, on a fresh data dir:

* chunk only : extract_bytes + content_hash + chunk_text per file, nothing written (the floor)
* ingest     : dsetlog.catalog.documents.ingest_file per file: the above, plus the events (DocumentIngested, a
               ChunkCreated per chunk, DocumentChunked) encoded and appended in one append_many with one
               fsync per file, and the read model caught up
* re-ingest  : the same files again: each is read, hashed and found unchanged (nothing appended)

MB are MiB of input files. The corpus is generated once per --mb/--files/--seed into --cache.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dsetlog.catalog.chunking import STRATEGIES, chunk_text  # noqa: E402
from dsetlog.catalog.documents import DEFAULT_CHUNKING, ingest_file  # noqa: E402
from dsetlog.catalog.extract import content_hash, extract_bytes  # noqa: E402
from dsetlog.catalog.projects import create_project  # noqa: E402
from dsetlog.store.log import LOG_NAME, EventLog  # noqa: E402
from projections.readmodel import ReadModel  # noqa: E402

MB = 1 << 20

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an which have not "
    "cell protein energy membrane sample patient dose trial river harbour engine signal network model "
    "measure result method value rate level process system function structure change growth pressure "
    "temperature reaction surface layer current field effect period source record data analysis"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 24))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice(".....?!")


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 7)))


def _document(rng: random.Random, size: int, markdown: bool) -> str:
    parts: list[str] = []
    total = 0
    section = 0
    while total < size:
        if markdown and (section == 0 or rng.random() < 0.12):
            level = 1 if section == 0 else rng.choice((2, 2, 3))
            section += 1
            heading = "#" * level + " " + " ".join(rng.choice(_WORDS) for _ in range(3)).title()
            parts.append(heading)
            total += len(heading) + 2
        para = _paragraph(rng)
        parts.append(para)
        total += len(para) + 2
    return "\n\n".join(parts) + "\n"


def make_corpus(cache: Path, mb: float, files: int, seed: int) -> Path:
    root = cache / f"corpus-{mb:g}mb-{files}f-s{seed}"
    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(seed)
    per_file = int(mb * MB / files)
    for i in range(files):
        markdown = i % 2 == 0
        text = _document(rng, per_file, markdown)
        (root / f"doc{i:04d}.{'md' if markdown else 'txt'}").write_text(text, encoding="utf-8")
    (root / ".done").touch()
    return root


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chunk_only(paths: list[Path], strategy: str) -> tuple[float, int]:
    size, overlap = DEFAULT_CHUNKING[strategy]
    t0 = time.perf_counter()
    chunks = 0
    for path in paths:
        raw = path.read_bytes()
        content_hash(raw)
        text = extract_bytes(raw, path.name).text
        chunks += len(chunk_text(text, strategy=strategy, chunk_size=size, overlap=overlap))
    return time.perf_counter() - t0, chunks


def ingest_all(paths: list[Path], strategy: str, work: Path) -> dict[str, float]:
    data = work / f"data-{strategy}"
    shutil.rmtree(data, ignore_errors=True)
    with EventLog.in_dir(data) as log:
        rm = ReadModel.open(data)
        pid = create_project(log, rm, name="bench").id
        t0 = time.perf_counter()
        chunks = 0
        for path in paths:
            result = ingest_file(log, rm, project_id=pid, path=path, strategy=strategy)
            assert result.status == "ingested", result
            chunks += result.chunks
        ingest_s = time.perf_counter() - t0
        seq = log.last_seq
        t0 = time.perf_counter()
        for path in paths:
            assert ingest_file(log, rm, project_id=pid, path=path, strategy=strategy).skipped
        again_s = time.perf_counter() - t0
        assert log.last_seq == seq
        log_mb = (data / LOG_NAME).stat().st_size / MB
    shutil.rmtree(data, ignore_errors=True)
    return {"ingest": ingest_s, "again": again_s, "chunks": chunks, "log_mb": log_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MiB (default 50)")
    parser.add_argument("--files", type=int, default=200, help="number of files (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=1, help="runs per measurement; the best is shown")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dsetlog-bench")
    parser.add_argument("--work", type=Path, default=None, help="scratch dir for the data dirs (default: a temp dir)")
    args = parser.parse_args()

    print("# " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    corpus = make_corpus(args.cache, args.mb, args.files, args.seed)
    paths = sorted(p for p in corpus.iterdir() if p.suffix in (".md", ".txt"))
    total_mb = sum(p.stat().st_size for p in paths) / MB
    print(f"# corpus: {len(paths)} files, {total_mb:.1f} MB, in {corpus}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    header = (
        f"{'strategy':<11} {'size/overlap':>12} {'chunks':>8} {'chunk only':>11} {'ingest':>9} "
        f"{'ingest s':>9} {'chunks/s':>9} {'re-ingest':>10} {'log MB':>7}"
    )
    print(header)
    print("-" * len(header))
    try:
        for strategy in args.strategies.split(","):
            size, overlap = DEFAULT_CHUNKING[strategy]
            floor = min(chunk_only(paths, strategy)[0] for _ in range(args.runs))
            runs = [ingest_all(paths, strategy, work) for _ in range(args.runs)]
            best = min(runs, key=lambda r: r["ingest"])
            again = statistics.median(r["again"] for r in runs)
            print(
                f"{strategy:<11} {f'{size}/{overlap}':>12} {int(best['chunks']):>8} "
                f"{total_mb / floor:>7.1f} MB/s {total_mb / best['ingest']:>5.1f} MB/s {best['ingest']:>8.2f}s "
                f"{best['chunks'] / best['ingest']:>9.0f} {total_mb / again:>5.0f} MB/s {best['log_mb']:>7.1f}",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# peak RSS {_peak_mb():.0f} MB", flush=True)


if __name__ == "__main__":
    main()
