"""A writer process for the log tests (run as a script, killed with SIGKILL by some of them).

    python tests/log_writer.py loop  LOG TAG [SEED]          append batches until killed
    python tests/log_writer.py mixed LOG TAG COUNT [SEED] [GO_FILE]

Every event is a QuestionQueued whose item_id is ``TAG-COUNTER`` (counter from 0,
in append order), so a test can tell exactly which event belongs at which seq.
After each append returns (so it is durable) one line goes to stdout, flushed::

    FIRST_SEQ LAST_SEQ TAG FIRST_COUNTER

``loop`` prints ``ready`` once the log is open. ``mixed`` appends COUNT events in
singletons and small batches; with GO_FILE it says ``ready`` and waits for that
file to exist, so two writers start together.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from dsetlog.store.events import QuestionQueued
from dsetlog.store.log import EventLog


def event(tag: str, counter: int) -> QuestionQueued:
    return QuestionQueued(
        dataset_id="log-tests", item_id=f"{tag}-{counter}", question=f"question {counter} from {tag}?", row=counter
    )


def main(argv: list[str]) -> int:
    mode, path, tag = argv[0], Path(argv[1]), argv[2]
    out = sys.stdout
    if mode == "loop":
        rng = random.Random(argv[3] if len(argv) > 3 else tag)
        counter = 0
        with EventLog(path) as log:
            out.write("ready\n")
            out.flush()
            while True:
                n = rng.choice((1, 1, 2, 5, 20, 50))
                seqs = log.append_many(event(tag, counter + i) for i in range(n))
                out.write(f"{seqs.start} {seqs.stop - 1} {tag} {counter}\n")
                out.flush()
                counter += n
    if mode == "mixed":
        count = int(argv[3])
        rng = random.Random(argv[4] if len(argv) > 4 else tag)
        go = Path(argv[5]) if len(argv) > 5 else None
        with EventLog(path) as log:
            if go is not None:
                out.write("ready\n")
                out.flush()
                while not go.exists():
                    time.sleep(0.001)
            counter = 0
            while counter < count:
                n = min(count - counter, rng.choice((1, 1, 1, 2, 3, 7)))
                if n == 1:
                    seq = log.append(event(tag, counter))
                    out.write(f"{seq} {seq} {tag} {counter}\n")
                else:
                    seqs = log.append_many(event(tag, counter + i) for i in range(n))
                    out.write(f"{seqs.start} {seqs.stop - 1} {tag} {counter}\n")
                counter += n
            out.flush()
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
