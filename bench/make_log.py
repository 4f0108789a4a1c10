"""Write a synthetic but realistic event log of N events, fast.

The mix follows a real `dset generate` run over a few CSVs: every question is
queued first (one QuestionQueued per CSV row), then each is attempted and
answered (AttemptStarted, EntryGenerated with a 40-80 word answer), with a
sprinkle of failures, bookmarks, edits and feedback. Roughly a third of the
events are each of the three main types.

    python bench/make_log.py DATA_DIR --events 1000000

Lines are stamped with a clock that moves 2 ms per event so timestamps differ
like in a real log. Seeded: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    Event,
    FeedbackGiven,
    ItemBookmarked,
    QuestionQueued,
    RegenerationRequested,
    RunFinished,
    RunStarted,
    Usage,
)
from dsetlog.store.layout import encode_records
from dsetlog.store.log import LOG_NAME

_WORDS = (
    "the a model data training set answer question system process energy water cell protein market price "
    "policy history culture language network signal memory storage reaction force field theory method "
    "result analysis value function structure growth change effect cause reason example case study term "
    "rate level form type group part area point number time year people world country city state law "
    "because however therefore although while which where when often usually typically generally mostly"
).split()
_CATEGORIES = ("Science", "History", "Technology", "Health", "Finance", "Geography", "")
_DIFFICULTY = ("easy", "medium", "hard")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def iter_events(n_events: int, *, datasets: int = 4, seed: int = 7) -> Iterator[Event]:
    """``n_events`` events (a few more when asked for fewer than a dozen), in an order a real tool writes them."""
    rng = random.Random(seed)
    per_ds = max(1, n_events // datasets)
    emitted = 0
    for d in range(datasets):
        budget = per_ds if d < datasets - 1 else n_events - emitted
        ds_id = f"ds-{d:04d}-{rng.getrandbits(32):08x}"
        run_id = f"run-{d:04d}"
        head: list[Event] = [
            DatasetCreated(
                dataset_id=ds_id,
                name=f"questions-{d}",
                source=f"data/samples/questions-{d}.csv",
                params={"concurrency": 8, "temperature": 0.7},
            ),
            RunStarted(
                run_id=run_id,
                dataset_id=ds_id,
                command="generate",
                model="deepseek-chat",
                provider="deepseek",
            ),
        ]
        # ~3 events per item plus a few extras; the head/tail cost 3 events
        n_items = max(1, (budget - 3) // 3)
        yield from head
        emitted += len(head)
        left = budget - len(head) - 1
        item_ids = []
        for i in range(n_items):
            if left <= 0:
                break
            item_id = f"{rng.getrandbits(64):016x}"
            item_ids.append(item_id)
            yield QuestionQueued(
                dataset_id=ds_id,
                item_id=item_id,
                question=_sentence(rng, rng.randint(8, 16)) + "?",
                row=i + 1,
            )
            left -= 1
            emitted += 1
        answered: list[str] = []
        for item_id in item_ids:
            if left <= 0:
                break
            yield AttemptStarted(dataset_id=ds_id, item_id=item_id, attempt=1, run_id=run_id)
            left -= 1
            emitted += 1
            if left <= 0:
                break
            roll = rng.random()
            if roll < 0.01:
                yield AttemptFailed(
                    dataset_id=ds_id,
                    item_id=item_id,
                    attempt=1,
                    reason="HTTP 429: rate limited",
                    status_code=429,
                    run_id=run_id,
                )
            elif roll < 0.012:
                yield ItemBookmarked(
                    dataset_id=ds_id, item_id=item_id, reason="timeout after 3 attempts", attempts=3
                )
            elif roll < 0.015 and answered:
                target = rng.choice(answered)
                if rng.random() < 0.5:
                    yield EntryEdited(
                        dataset_id=ds_id, entry_id=target, answer=_sentence(rng, 50), feedback="fixed"
                    )
                else:
                    yield FeedbackGiven(
                        dataset_id=ds_id,
                        entry_ids=[target],
                        feedback_type="quality_issue",
                        comments="too vague",
                        rating=rng.randint(1, 5),
                    )
            elif roll < 0.0155 and answered:
                yield RegenerationRequested(
                    dataset_id=ds_id, entry_ids=[rng.choice(answered)], job_id="job-1"
                )
            else:
                entry_id = f"e{rng.getrandbits(64):016x}"
                answered.append(entry_id)
                score = round(rng.uniform(0.3, 1.0), 3)
                yield EntryGenerated(
                    dataset_id=ds_id,
                    item_id=item_id,
                    entry_id=entry_id,
                    question=_sentence(rng, rng.randint(8, 16)) + "?",
                    answer=_sentence(rng, rng.randint(40, 80)) + ".",
                    category=rng.choice(_CATEGORIES),
                    model="deepseek-chat",
                    provider="deepseek",
                    usage=Usage(prompt_tokens=rng.randint(40, 120), completion_tokens=rng.randint(60, 140)),
                    latency_ms=round(rng.uniform(300, 4000), 1),
                    run_id=run_id,
                    prompt_name="answer_question",
                    prompt_hash="3f9a1c0d2b7e",
                    quality_score=score,
                    quality={"length": round(rng.random(), 3), "readability": round(rng.random(), 3)},
                    difficulty=rng.choice(_DIFFICULTY),
                )
            left -= 1
            emitted += 1
        # top up to the exact budget with retries of the first items
        while left > 0:
            yield AttemptStarted(dataset_id=ds_id, item_id=rng.choice(item_ids), attempt=2, run_id=run_id)
            left -= 1
            emitted += 1
        yield RunFinished(run_id=run_id, dataset_id=ds_id, outcome="completed", answered=len(answered))
        emitted += 1


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def write_log(
    data_dir: str | Path, n_events: int, *, datasets: int = 4, seed: int = 7, batch: int = 100
) -> Path:
    """Write a fresh ``<data_dir>/events.jsonl`` of ``n_events`` events; returns its path.

    Bypasses EventLog's per-batch fsync (one fsync at the end): this is a fixture
    writer, not the tool, and 1M events should take seconds.
    """
    path = Path(data_dir) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        raise SystemExit(
            f"{path} already exists; pick an empty data dir (this tool never appends to a real log)"
        )
    clock = 1_780_000_000.0
    seq = 1
    pending: list[Event] = []
    with open(path, "wb") as fh:
        for ev in iter_events(n_events, datasets=datasets, seed=seed):
            pending.append(ev)
            if len(pending) == batch:
                fh.write(encode_records(pending, first_seq=seq, ts=_ts(clock)))
                seq += len(pending)
                clock += 0.002 * len(pending)
                pending.clear()
        if pending:
            fh.write(encode_records(pending, first_seq=seq, ts=_ts(clock)))
        fh.flush()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = write_log(args.data_dir, args.events, datasets=args.datasets, seed=args.seed)
    print(
        f"wrote {args.events} events, {path.stat().st_size / 1e6:.1f} MB to {path} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
