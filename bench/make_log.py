"""Write a synthetic but realistic event log of N events (or of N entries), fast.

The --events mode (iter_events, write_log: other benches rely on its exact bytes) follows a real
`dset generate` run over a few CSVs: every question is queued first (one QuestionQueued per CSV row),
then each is attempted and answered (AttemptStarted, EntryGenerated with a 40-80 word answer), with a
sprinkle of failures, bookmarks, edits and feedback. Roughly a third of the events are each of the
three main types.

    python bench/make_log.py DATA_DIR --events 1000000

Lines are stamped with a clock that moves 2 ms per event so timestamps differ
like in a real log. Seeded: the same arguments give the same bytes.

The --entries mode (iter_entry_events, write_entries_log; issue #15, "Ten million entries on one machine"):
N entries as `dset generate` and a review of its entries write them, ~3.2 events and ~1.2 kB an entry
(questions ~100 characters, answers ~600, a tenth with reasoning; retries, bookmarks, edits, feedback,
regenerations and judge scores over existing entries: see the comment above iter_entry_events). It streams
(memory flat whatever N), and with --procs 2 a worker process writes the smaller datasets meanwhile:

    python bench/make_log.py DATA_DIR --entries 10000000           # ~32M events
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import operator
import os
import random
import sys
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import BinaryIO

from dsetlog.store.events import (
    AttemptFailed,
    AttemptStarted,
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    Event,
    FeedbackGiven,
    ItemBookmarked,
    JobCompleted,
    JobStarted,
    JobSubmitted,
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


# --- the entries mode (issue #15: ten million entries on one machine) ---------------------------------------
#
# Per dataset, what `dset generate` over a CSV writes, then what the review of its entries adds:
#
#   DatasetCreated, one QuestionQueued per CSV row, RunStarted            (dsetlog/generation/answering.py)
#   per row: AttemptStarted, EntryGenerated                                (the engine, in row order)
#            2.0%: AttemptStarted, AttemptFailed first, the entry at attempt 2
#            0.5%: three failed attempts, ItemBookmarked; a second run answers those (attempt 4)
#   RunFinished
#   review, over random entries of the dataset:
#            3% edited (EntryEdited: answer only, question only, both, or category / note only; a changed
#               text is rescored, EntryScored, as PUT /entries does), 5% given feedback (FeedbackGiven, some
#               in bulk, some flagging: quality_issue / content_error), 1% regenerated (RegenerationRequested
#               and its job: JobSubmitted, JobStarted, EntryRegenerated, 85% current with its EntryScored,
#               15% set aside, JobCompleted), 2% scored by a judge (EntryScored)
#
# About 3.2 events an entry, 700 bytes of text (questions 60-160 characters, answers 300-1,000, a tenth with
# 200-400 characters of reasoning) drawn from a Zipf-weighted vocabulary (a few common words, a long tail of
# rare ones: VOCABULARY, search_words()). Ids look like the tool's (q_<16 hex>, entry_<16 hex>) and are a
# bijection of (seed, dataset, row), so any row's ids and question can be recomputed: nothing grows with N
# but the list of bookmarked rows (0.5%).

# one big dataset and smaller ones: the first holds half the entries (the export bench's "largest dataset")
_FIRST_SHARE = 0.5
_CHUNK = 512  # events per encode_records call (one ts each)
_FLUSH = 8 << 20  # bytes per write
_CLOCK0 = 1_780_000_000.0
_PART_SEQ = 10**12  # a part file's first seq: every line's seq then has 13 digits (renumbered by slicing)
_M64 = (1 << 64) - 1

_COMMON_WORDS = (
    "the of and to in is that for it as with was on be by are this which or from at an have not has its can "
    "also more other their these than been one such were into only most used when some many may between two "
    "each first new time over both while through during under where then about because however often like "
    "system data model water energy process cell protein market price policy history culture language "
    "network signal memory storage reaction force field theory method result analysis value function "
    "structure growth change effect cause reason example study rate level form type group part area point "
    "number year people world country city state law government economy trade money bank interest tax "
    "health disease treatment patient blood heart brain body food plant animal species climate temperature "
    "carbon oxygen light heat power engine machine computer software code program algorithm database "
    "server security password internet web browser user design material metal glass stone wood paper "
    "river mountain ocean island forest desert coast border empire king queen war army battle treaty "
    "revolution century ancient modern medieval religion church temple art music painting novel poem "
    "author school university student teacher research science physics chemistry biology mathematics "
    "equation graph variable probability statistics sample measure unit distance speed mass weight volume "
    "pressure current voltage circuit magnet wave frequency electron atom molecule acid enzyme gene dna "
    "virus bacteria vaccine immune muscle bone nerve hormone insulin glucose vitamin mineral soil crop "
    "harvest farm village port ship railway bridge tower castle museum library festival ritual custom "
    "contract court judge crime evidence rights freedom vote election parliament minister council tariff "
    "inflation supply demand profit loss investment stock bond insurance credit debt budget wage labour"
).split()
_SYLLABLES = ("ba be bi bo bu da de di do du fa fe fi ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no "
              "nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za ze zo bra cre dri "
              "gro plu sta tre chi sho tha vel mor dan kel rin tal sor qua").split()
_ZIPF_S = 1.07


def _vocabulary(size: int = 20_000) -> tuple[str, ...]:
    """Real words first (the frequent ones), then made-up ones (the long tail); the same in every process."""
    rng = random.Random(15)
    seen = set(_COMMON_WORDS)
    words = list(dict.fromkeys(_COMMON_WORDS))
    while len(words) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return tuple(words)


VOCABULARY = _vocabulary()


def search_words() -> list[str]:
    """Words of the vocabulary from frequent to rare (ranks 10, 100, 1,000, 10,000 and 19,000): in about 60%,
    10%, 1%, 0.1% and 0.05% of answers, for `q=` searches that find much, some, little and almost nothing."""
    return [VOCABULARY[r] for r in (10, 100, 1000, 10_000, 19_000)]


_QUESTION_WORDS = ("What", "How", "Why", "Which", "When", "Where", "Explain", "Describe", "Compare", "What is")
_Q_CATEGORIES = ("Science", "History", "Technology", "Health", "Finance", "Geography", "Law", "Culture", "")
_DIFFICULTIES = ("beginner", "intermediate", "advanced", "expert")
_FAILURES = (("HTTP 429: rate limited (retry after 2 s)", 429), ("HTTP 503: service unavailable", 503),
             ("timeout after 60 s", None), ("HTTP 500: internal server error", 500))
_REFUSAL = "I'm sorry, but I cannot help with that request. "
_EDIT_NOTES = ("fixed the units", "shorter", "corrected a date", "removed a wrong claim", "typo")
_COMMENTS = ("too vague", "wrong date", "good answer", "missing the main point", "cites no source",
             "answer contradicts itself", "clear and correct", "too long")
# 40% of feedback flags its entries (projections.datasets.FLAGGING_FEEDBACK)
_FEEDBACK_TYPES = ("bulk_edit",) * 6 + ("quality_issue",) * 3 + ("content_error",)
_REGEN_CONFIGS = ({"mode": "improve_quality", "temperature": 0.7}, {"mode": "fix_errors", "temperature": 0.3},
                  {"mode": "improve_quality", "temperature": 0.9, "accept_lower": False})
_MODEL, _PROVIDER = "deepseek-chat", "deepseek"


# The structural checks a generated entry carries (dsetlog.evaluation.quality.structural_checks, what
# answering.py writes on its EntryGenerated): all passed, not a question, a copy of the question, a refusal.
# One dict each, shared by every event (the encoder does not mind); their scores are quality.combine's.
_PASSED = {"non_empty": 1.0, "length_ok": 1.0, "no_refusal": 1.0, "is_question": 1.0, "not_copy": 1.0}
_NOT_QUESTION = {**_PASSED, "is_question": 0.0}
_COPY = {**_PASSED, "not_copy": 0.0}
_REFUSED = {**_PASSED, "no_refusal": 0.0}


class _Scores:
    """quality.combine of each set of checks above, without a judge and with each of its grades (1-5)."""

    def __init__(self) -> None:
        from dsetlog.evaluation.quality import combine

        self.plain: dict[int, float] = {}
        self.judged: dict[tuple[int, int], float] = {}
        for checks in (_PASSED, _NOT_QUESTION, _COPY, _REFUSED):
            self.plain[id(checks)] = combine(checks, duplicate=False, judge=None)
            for judge in range(1, 6):
                self.judged[(id(checks), judge)] = combine(checks, duplicate=False, judge=judge)

    def of(self, checks: dict[str, float], judge: int | None = None) -> float:
        return self.plain[id(checks)] if judge is None else self.judged[(id(checks), judge)]


def _mix(x: int) -> int:
    """A bijection of 64-bit ints that looks random enough for ids (distinct rows, distinct ids)."""
    x = (x * 0x9E3779B97F4A7C15) & _M64
    return x ^ (x >> 32)


class _Texts:
    """Two pools of Zipf-distributed words, built once per seed: answers and reasoning are slices of the
    first (whole sentences), questions slices of the second (lower-case words): no text is made word by word."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed ^ 0x5EED)
        weights = [1.0 / (r + 1) ** _ZIPF_S for r in range(len(VOCABULARY))]
        cum = list(itertools.accumulate(weights))
        words = rng.choices(VOCABULARY, cum_weights=cum, k=400_000)
        parts: list[str] = []
        starts: list[int] = []
        at = i = 0
        while i < len(words) - 30:
            n = rng.randint(8, 22)
            sentence = " ".join(words[i : i + n])
            sentence = sentence[0].upper() + sentence[1:] + ". "
            starts.append(at)
            parts.append(sentence)
            at += len(sentence)
            i += n
        self.answers = "".join(parts)
        self.answer_starts = [s for s in starts if s < len(self.answers) - 3000]
        qwords = rng.choices(VOCABULARY, cum_weights=cum, k=100_000)
        self.questions = " ".join(qwords)
        self.question_starts = list(itertools.accumulate((len(w) + 1 for w in qwords[:-100]), initial=0))[:-1]

    def question(self, h: int) -> tuple[str, dict[str, float]]:
        """The question of the row hashed ``h`` (the same text wherever it is asked for), and its checks."""
        h = (h * 0xD6E8FEB86659FD93) & _M64
        h ^= h >> 32
        starts = self.question_starts
        s = starts[(h >> 8) % len(starts)]
        end = self.questions.find(" ", s + 55 + (h >> 32) % 90)
        body = self.questions[s:end]
        if h & 31 == 0:  # a statement, not a question: is_question fails
            return f"Tell me about {body}.", _NOT_QUESTION
        return f"{_QUESTION_WORDS[(h >> 24) % len(_QUESTION_WORDS)]} {body}?", _PASSED

    def answer(self, rng: random.Random, lo: int = 250, hi: int = 950) -> str:
        """Whole sentences: ``lo`` to ``hi`` characters (most near the middle), up to a sentence more."""
        r = rng.random
        s = self.answer_starts[int(r() * len(self.answer_starts))]
        end = self.answers.find(". ", s + lo + int((r() + r()) * (hi - lo) / 2)) + 1
        return self.answers[s:end]


_texts_cache: dict[int, _Texts] = {}


def _texts(seed: int) -> _Texts:
    if seed not in _texts_cache:
        _texts_cache[seed] = _Texts(seed)
    return _texts_cache[seed]


def dataset_sizes(n_entries: int, datasets: int) -> list[int]:
    """Entries per dataset: the first holds half (all of them when alone), the others the rest, decreasing."""
    if datasets <= 1:
        return [n_entries]
    rest = n_entries - round(n_entries * _FIRST_SHARE)
    weights = [datasets - d for d in range(1, datasets)]
    others = [rest * w // sum(weights) for w in weights]
    others[0] += rest - sum(others)
    return [n_entries - rest, *others]


def dataset_id_of(d: int) -> str:
    """The id of the entries mode's dataset ``d`` (as `dset generate --dataset NAME` makes it)."""
    from dsetlog.ids import content_id

    return content_id("ds", "questions", _dataset_name(d))


def _dataset_name(d: int) -> str:
    names = ("support-faq", "science-qa", "history-qa", "finance-faq", "health-qa", "legal-qa")
    return names[d % len(names)] + (f"-{d // len(names)}" if d >= len(names) else "")


def _dataset_events(d: int, n: int, seed: int) -> Iterator[Event]:
    """Everything the log holds for dataset ``d`` of ``n`` entries, in log order."""
    texts = _texts(seed)
    score = _Scores().of
    rng = random.Random(seed * 1_000_003 + d)
    ds_id = dataset_id_of(d)
    name = _dataset_name(d)
    source = f"/home/user/data/{name}.csv"
    base = ((seed & 0xFFFF) << 48) | (d << 40)
    answer, question = texts.answer, texts.question

    def row(i: int) -> tuple[int, str]:
        """Row ``i``'s hash (its question's seed) and the hex its item and entry ids end with."""
        h = _mix(base | i)
        return h, "%016x" % h  # noqa: UP031 - the fastest of the three spellings

    run_id = f"run_{rng.getrandbits(48):012x}"
    yield DatasetCreated(dataset_id=ds_id, name=name, kind="questions", source=source)
    for i in range(n):
        h, hx = row(i)
        yield QuestionQueued(dataset_id=ds_id, item_id="q_" + hx, question=question(h)[0], row=i + 1, source=source)
    settings = {"concurrency": 8, "cores": "auto", "max_retries": 3, "backoff": 1.0, "timeout": 60.0, "rpm": 0,
                "tpm": 0, "budget": "None", "formats": ["jsonl"], "out": f"/home/user/out/{name}"}
    tokens = [0, 0]
    r = rng.random

    def entry(h: int, hx: str, attempt: int, run: str) -> EntryGenerated:
        q, checks = question(h)
        x = r()
        if x < 0.01:
            a, checks = _REFUSAL + answer(rng, 20, 120), _REFUSED
        elif x < 0.013:
            a, checks = q, _COPY
        else:
            a = answer(rng)
        reasoning = answer(rng, 150, 400) if r() < 0.1 else ""
        completion = (len(a) + len(reasoning)) >> 2
        usage = Usage(prompt_tokens=30 + (len(q) >> 2), completion_tokens=completion)
        tokens[0] += usage.prompt_tokens
        tokens[1] += completion
        x = r()
        return EntryGenerated(
            dataset_id=ds_id, item_id="q_" + hx, entry_id="entry_" + hx, question=q, answer=a, reasoning=reasoning,
            category=_Q_CATEGORIES[int(r() * len(_Q_CATEGORIES))], model=_MODEL, provider=_PROVIDER, usage=usage,
            latency_ms=int(4000 + completion * (60 + 120 * r())) / 10, attempt=attempt, run_id=run,
            quality_score=score(checks), quality=checks,
            difficulty=_DIFFICULTIES[0 if x < 0.05 else 1 if x < 0.3 else 2 if x < 0.75 else 3])

    def failed(item_id: str, attempt: int, run: str) -> Iterator[Event]:
        reason, status = _FAILURES[int(r() * len(_FAILURES))]
        yield AttemptStarted(dataset_id=ds_id, item_id=item_id, attempt=attempt, run_id=run)
        yield AttemptFailed(dataset_id=ds_id, item_id=item_id, attempt=attempt, reason=reason, status_code=status,
                            run_id=run)

    def finished(run: str, answered: int, failed_n: int) -> RunFinished:
        p, c = tokens
        tokens[:] = [0, 0]
        return RunFinished(run_id=run, dataset_id=ds_id, outcome="completed", answered=answered, failed=failed_n,
                           prompt_tokens=p, completion_tokens=c, cost=round((p * 0.27 + c * 1.10) / 1e6, 6))

    # the run
    yield RunStarted(run_id=run_id, dataset_id=ds_id, command="generate", model=_MODEL, provider=_PROVIDER,
                     settings=settings)
    bookmarked = array("q")
    for i in range(n):
        h, hx = row(i)
        item_id = "q_" + hx
        x = r()
        if x < 0.005:
            for attempt in (1, 2, 3):
                yield from failed(item_id, attempt, run_id)
            yield ItemBookmarked(dataset_id=ds_id, item_id=item_id, reason=_FAILURES[0][0], attempts=3,
                                 run_id=run_id)
            bookmarked.append(i)
            continue
        attempt = 1
        if x < 0.025:
            yield from failed(item_id, 1, run_id)
            attempt = 2
        yield AttemptStarted(dataset_id=ds_id, item_id=item_id, attempt=attempt, run_id=run_id)
        yield entry(h, hx, attempt, run_id)
    yield finished(run_id, n - len(bookmarked), len(bookmarked))
    if bookmarked:  # the next run retries the bookmarked items
        run2 = f"run_{rng.getrandbits(48):012x}"
        yield RunStarted(run_id=run2, dataset_id=ds_id, command="generate", model=_MODEL, provider=_PROVIDER,
                         settings=settings)
        for i in bookmarked:
            h, hx = row(i)
            yield AttemptStarted(dataset_id=ds_id, item_id="q_" + hx, attempt=4, run_id=run2)
            yield entry(h, hx, 4, run2)
        yield finished(run2, len(bookmarked), 0)
    del bookmarked

    # the review: how many entries each kind of change names, drawn in proportion to what is left of each
    left = [round(n * 0.03), round(n * 0.05), round(n * 0.01), round(n * 0.02)]  # edit, feedback, regen, score

    def some_entry() -> tuple[int, str]:
        """A random existing entry: its row's hash and its entry id."""
        h, hx = row(int(r() * n))
        return h, "entry_" + hx

    def rescored(entry_id: str, checks: dict[str, float]) -> EntryScored:
        """The rescoring PUT /entries and a regeneration write (structural checks alone: no chunk to ground)."""
        return EntryScored(dataset_id=ds_id, entry_id=entry_id, quality_score=score(checks), quality=checks,
                           difficulty=_DIFFICULTIES[1 + int(r() * 3)], analyzed=False)

    while (total := sum(left)) > 0:
        pick = r() * total
        kind = 0
        while pick >= left[kind]:
            pick -= left[kind]
            kind += 1
        if kind == 0:  # an edit through PUT /entries/{id}
            left[0] -= 1
            h, entry_id = some_entry()
            x = r()
            note = _EDIT_NOTES[int(r() * len(_EDIT_NOTES))] if r() < 0.3 else None
            new_q = new_a = category = None
            if x < 0.40:
                new_a = answer(rng)
            elif x < 0.65:
                new_q = question(h ^ 0xED17)[0]
            elif x < 0.85:
                new_q, new_a = question(h ^ 0xED17)[0], answer(rng)
            elif x < 0.95:
                category = _Q_CATEGORIES[int(r() * (len(_Q_CATEGORIES) - 1))]
            else:
                note = note or _EDIT_NOTES[0]
            yield EntryEdited(dataset_id=ds_id, entry_id=entry_id, question=new_q, answer=new_a, category=category,
                              feedback=note)
            if new_q is not None or new_a is not None:
                yield rescored(entry_id, _PASSED)
        elif kind == 1:  # feedback, now and then on a selection at once
            k = min(left[1], 1 if r() < 0.9 else 2 + int(r() * 7))
            left[1] -= k
            rating = 1 + int(r() * 5) if r() < 0.7 else None
            comment = _COMMENTS[int(r() * len(_COMMENTS))] if r() < 0.5 else None
            yield FeedbackGiven(dataset_id=ds_id, entry_ids=[some_entry()[1] for _ in range(k)],
                                feedback_type=_FEEDBACK_TYPES[int(r() * len(_FEEDBACK_TYPES))], comments=comment,
                                rating=rating)
        elif kind == 2:  # a regeneration job over a few entries (POST /regenerate, then the job worker)
            k = min(left[2], 1 + int(r() ** 2 * 12))
            left[2] -= k
            job_id = f"job_{rng.getrandbits(48):012x}"
            config = _REGEN_CONFIGS[int(r() * len(_REGEN_CONFIGS))]
            entry_ids = [some_entry()[1] for _ in range(k)]
            yield RegenerationRequested(dataset_id=ds_id, entry_ids=entry_ids, job_id=job_id, config=config)
            yield JobSubmitted(job_id=job_id, kind="regenerate", dataset_id=ds_id,
                               request={"dataset_id": ds_id, "entry_ids": entry_ids, "regeneration_config": config})
            yield JobStarted(job_id=job_id)
            done = set_aside = 0
            for entry_id in dict.fromkeys(entry_ids):
                new_a = answer(rng)
                current = r() < 0.85  # else it scored lower than the revision it was to replace
                done += current
                set_aside += not current
                yield EntryRegenerated(
                    dataset_id=ds_id, entry_id=entry_id, job_id=job_id, answer=new_a, model=_MODEL,
                    provider=_PROVIDER, usage=Usage(prompt_tokens=250 + len(new_a) // 8,
                                                    completion_tokens=len(new_a) // 4),
                    config=config, current=current, quality_score=1.0 if current else score(_NOT_QUESTION),
                    replaced_score=score(_NOT_QUESTION) if current else 1.0)
                if current:
                    yield rescored(entry_id, _PASSED)
            yield JobCompleted(job_id=job_id, result={"regenerated": done, "set_aside": set_aside, "failed": 0})
        else:  # `dset score --judge`: a judge's grade joins the checks
            left[3] -= 1
            h, entry_id = some_entry()
            judge = 1 + int(r() * 5)
            checks = question(h)[1]
            judged = score(checks, judge)
            yield EntryScored(dataset_id=ds_id, entry_id=entry_id, quality_score=judged,
                              quality={**checks, "judge": float(judge)}, difficulty=_DIFFICULTIES[int(r() * 4)],
                              below_threshold=judged < 0.7, analyzed=True)


def iter_entry_events(n_entries: int, *, datasets: int = 4, seed: int = 7) -> Iterator[Event]:
    """The events of ``n_entries`` entries over ``datasets`` datasets, in log order (see the comment above)."""
    for d, n in enumerate(dataset_sizes(n_entries, datasets)):
        if n:
            yield from _dataset_events(d, n, seed)


def _clock(sizes: list[int], d: int) -> float:
    """Dataset ``d``'s first timestamp: its events are 1 ms apart (fewer than 4 an entry), an hour between."""
    return _CLOCK0 + 3600 * d + 0.004 * sum(sizes[:d])


def _write_dataset(fh: BinaryIO, d: int, sizes: list[int], seed: int, first_seq: int) -> tuple[int, int]:
    """Dataset ``d``'s lines, numbered from ``first_seq``, appended to ``fh``: (events, bytes)."""
    clock, seq, written = _clock(sizes, d), first_seq, 0
    pending: list[Event] = []
    out: list[bytes] = []
    size = 0

    def encode() -> None:
        nonlocal seq, size
        out.append(encode_records(pending, first_seq=seq, ts=_ts(clock + 0.001 * (seq - first_seq))))
        size += len(out[-1])
        seq += len(pending)
        pending.clear()

    for ev in _dataset_events(d, sizes[d], seed):
        pending.append(ev)
        if len(pending) == _CHUNK:
            encode()
            if size >= _FLUSH:
                fh.write(b"".join(out))
                written += size
                out.clear()
                size = 0
    if pending:
        encode()
    fh.write(b"".join(out))
    return seq - first_seq, written + size


def _write_part(path: str, d: int, sizes: list[int], seed: int) -> tuple[int, int]:
    """In a worker: dataset ``d`` into its own file, numbered from _PART_SEQ (renumbered when appended)."""
    with open(path, "wb") as fh:
        return _write_dataset(fh, d, sizes, seed, _PART_SEQ)


def _append_renumbered(fh: BinaryIO, part: Path, first_seq: int) -> int:
    """Append a part's lines to ``fh`` with seqs from ``first_seq`` (the event bytes, crc and ts unchanged);
    returns how many. A part's seqs all have 13 digits, so the old one is cut off by position."""
    cut = len(b'{"seq":%d' % _PART_SEQ)
    seq = first_seq
    carry = b""
    with open(part, "rb") as src:
        while chunk := src.read(_FLUSH):
            buf = carry + chunk
            end = buf.rfind(b"\n") + 1
            carry = buf[end:]
            lines = buf[:end].split(b"\n")
            lines.pop()  # after the last newline
            heads = map(b'{"seq":%d'.__mod__, range(seq, seq + len(lines)))
            tails = map(operator.getitem, lines, itertools.repeat(slice(cut, None)))
            fh.write(b"\n".join(map(operator.add, heads, tails)))
            fh.write(b"\n")
            seq += len(lines)
    if carry:
        raise RuntimeError(f"{part} ends without a newline")
    return seq - first_seq


def default_procs(n_entries: int) -> int:
    """2 from 50,000 entries on a machine of 2 or more cores (a worker then pays for its start), else 1."""
    return 2 if n_entries >= 50_000 and (os.cpu_count() or 1) >= 2 else 1


def write_entries_log(data_dir: str | Path, n_entries: int, *, datasets: int = 4, seed: int = 7,
                      procs: int = 1) -> tuple[Path, int]:
    """Write a fresh ``<data_dir>/events.jsonl`` of ``n_entries`` entries (iter_entry_events); (its path, events).

    With ``procs`` > 1 the first dataset is written here while ``procs - 1`` worker processes write the others
    into part files, appended (renumbered) after it: the same bytes as with one process.
    """
    path = Path(data_dir) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        raise SystemExit(
            f"{path} already exists; pick an empty data dir (this tool never appends to a real log)"
        )
    sizes = dataset_sizes(n_entries, datasets)
    present = [d for d, n in enumerate(sizes) if n]
    _texts(seed)  # built once, before any fork
    seq = 1
    with open(path, "wb") as fh:
        if procs <= 1 or len(present) < 2:
            for d in present:
                seq += _write_dataset(fh, d, sizes, seed, seq)[0]
        else:
            parts = {d: path.with_name(f".{LOG_NAME}.part-{d}") for d in present[1:]}
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(procs - 1, mp_context=ctx) as pool:
                futures = {d: pool.submit(_write_part, str(p), d, sizes, seed) for d, p in parts.items()}
                try:
                    seq += _write_dataset(fh, present[0], sizes, seed, seq)[0]
                    for d, part in parts.items():
                        events, _ = futures[d].result()
                        if _append_renumbered(fh, part, seq) != events:
                            raise RuntimeError(f"part {part} holds fewer lines than its worker wrote")
                        seq += events
                        part.unlink()
                finally:
                    for f in futures.values():
                        f.cancel()
                    for part in parts.values():
                        part.unlink(missing_ok=True)
        fh.flush()
    return path, seq - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--events", type=int, help="the --events mode: this many events (default 1,000,000)")
    size.add_argument("--entries", type=int, help="the entries mode (issue #15): this many entries, ~3.2 events each")
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--procs", type=int, help="--entries: processes writing (default 2 from 50,000 entries "
                                                  "on a machine of 2+ cores, else 1); the bytes are the same")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.entries is None:
        events = 1_000_000 if args.events is None else args.events
        path = write_log(args.data_dir, events, datasets=args.datasets, seed=args.seed)
        print(
            f"wrote {events} events, {path.stat().st_size / 1e6:.1f} MB to {path} in {time.perf_counter() - t0:.1f} s"
        )
        return 0
    procs = args.procs or default_procs(args.entries)
    path, events = write_entries_log(args.data_dir, args.entries, datasets=args.datasets, seed=args.seed,
                                     procs=procs)
    seconds = time.perf_counter() - t0
    size_b = path.stat().st_size
    print(f"wrote {events:,} events ({args.entries:,} entries, {events / max(1, args.entries):.2f} events an entry), "
          f"{size_b:,} bytes ({size_b / max(1, args.entries):,.0f} an entry) to {path} in {seconds:.1f} s "
          f"with {procs} process{'es' if procs > 1 else ''}: {events / seconds:,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
