"""The search index (projections.search): a q= search finds what reading every text finds, whether the index
is whole, behind, rebuilt, shared by processes or unusable; and what a search means (issue 15)."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pytest
from helpers import append

import projections.search as search
import projections.segments as segments
import projections.texts as texts
from api.entry_index import EntryIndex
from api.schemas import EntriesQuery
from dsetlog.store.events import (
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryRegenerated,
    Event,
    QuestionQueued,
    RevisionRestored,
)
from dsetlog.store.log import LOG_NAME
from projections import ReadModel
from projections.search import OLD_SEARCH_NAME, SEARCH_DIR, SearchIndex, matcher, words
from projections.snapshot import SNAPSHOT_DIR

DS = "ds"


@pytest.mark.parametrize(("needle", "text", "found"), [
    ("insulin", "Insulin resistance", True),
    ("insulin", "an insulinoma", True),
    ("sulin", "Insulin resistance", False),  # not where a word starts
    ("sulin", "(sulin", True),
    ("fact 12?", "it is fact 12? yes", True),
    ("fact 12?", "fact 12!", False),
    ("fact 12", "fact 120", True),  # the last word is a prefix
    ("fact 12", "fact, 12", False),  # the punctuation between is part of the needle
    (" apple", "pineapple apple", True),  # a needle starting with a space needs no word start
    ("bar", "foo_bar", True),  # "_" separates words (it is punctuation)
    ("oo", "foo_bar", False),
    ("光合", "植物的光合作用", True),  # every Chinese character starts a word
    ("ข้าว", "กินข้าว", True),  # Thai too
    ("strasse", "STRASSE", True),
    ("straße".casefold(), "Straße", True),  # casefolded needles (the API's) meet casefolded texts
    ("cafe", "café", False),  # accents count
    ("", "anything", True),
])
def test_what_a_search_means(needle: str, text: str, found: bool) -> None:
    assert matcher(needle.casefold())(text) is found


VOCAB = ["insulin", "insulinoma", "glucose", "fact", "12", "120", "apple", "pineapple", "foo_bar", "café",
         "cafe", "光合作用", "植物", "กินข้าว", "Straße", "ΣΑΣ", "x", "e\u0301t\u00e9", "fact12"]
PUNCT = [" ", " ", " ", ", ", "? ", "-", "_", "(", "。"]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(VOCAB) + rng.choice(PUNCT) for _ in range(n)).strip()


def _corpus(n: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="qs"), DatasetCreated(dataset_id="other", name="o")]
    for i in range(n):
        q, a = _text(rng, 3) + "?", _text(rng, 12)
        for ds in (DS, "other"):  # the same texts in another dataset: hits there are not this dataset's
            events += [QuestionQueued(dataset_id=ds, item_id=f"q{i}", question=q, row=i),
                       EntryGenerated(dataset_id=ds, item_id=f"q{i}", entry_id=f"e{i}", question=q, answer=a,
                                      quality_score=rng.random())]
    return events


def _needles(rm: ReadModel, rng: random.Random, k: int) -> list[str]:
    """Pieces of the texts themselves (at word starts and not), words of the vocabulary, and odd ones."""
    full = rm.full(rm.datasets.entries(DS))
    out = ["insulin", "sulin", "fact 12", "fact 12?", "光合", "ข้าว", "straße", "cafe", "?", "zzz", "e\u0301t",
           "x", "120", "a"]
    while len(out) < k:
        t = rng.choice(full)
        text = rng.choice((t.question, t.answer))
        at = rng.randrange(len(text))
        out.append(text[at:at + rng.randint(1, 14)])
    return [n.casefold() for n in out if n.strip()]


def _expected(rm: ReadModel, needle: str) -> list[str]:
    m = matcher(needle)
    return [e.id for e in rm.full(rm.datasets.entries(DS)) if m(e.question) or m(e.answer)]


def _search(rm: ReadModel, needle: str, **filters: object) -> list[str]:
    with rm.lock:
        index = EntryIndex(rm, DS)
        positions, _ = index.query(rm, EntriesQuery(q=needle, sort_by="position", **filters))  # type: ignore[arg-type]
        return [index.entry_id(i) for i in positions]


def _lines(data: Path, rm: ReadModel) -> dict[str, int]:
    """Each dataset's lines in the data dir's index."""
    index = SearchIndex(data, rm.path)
    manifest = index._read_manifest()
    assert manifest is not None
    return dict(manifest.lines)


@pytest.fixture(params=[0, 32, 10**9])
def dense(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """segments.DENSE: 0, every word's texts listed; 10**9, every word's a bitmap; 32, as kept."""
    monkeypatch.setattr(segments, "DENSE", request.param)
    return int(request.param)


def test_searches_find_what_reading_every_text_finds(tmp_path: Path, dense: int) -> None:
    append(tmp_path, *_corpus(300))
    rm = ReadModel.open(tmp_path)
    needles = _needles(rm, random.Random(3), 120)
    for needle in needles:
        assert _search(rm, needle) == _expected(rm, needle), needle
    index = SearchIndex(tmp_path, rm.path)
    assert index.reach() == rm.offset  # the first search indexed the log
    hits = index.hits(DS, "insulin")
    assert hits is not None and pc.any(hits.mask).as_py() and len(hits.mask) == 2 * len(hits.starts) + 1
    # and with the index gone (a file where its directory was), the same, read from the texts
    shutil.rmtree(tmp_path / SNAPSHOT_DIR / SEARCH_DIR)
    (tmp_path / SNAPSHOT_DIR / SEARCH_DIR).write_text("not an index")
    unusable = ReadModel.open(tmp_path)
    assert unusable.search_hits(DS, "insulin") is None
    for needle in needles[:40]:
        assert _search(unusable, needle) == _expected(rm, needle), needle


def test_filters_and_orders_apply_to_a_search(tmp_path: Path) -> None:
    append(tmp_path, *_corpus(200))
    rm = ReadModel.open(tmp_path)
    full = {e.id: e for e in rm.full(rm.datasets.entries(DS))}
    m = matcher("insulin")
    want = sorted((i for i, e in full.items() if (m(e.question) or m(e.answer)) and (e.quality_score or 0) >= 0.5),
                  key=lambda i: (-(full[i].quality_score or 0), i))
    with rm.lock:
        index = EntryIndex(rm, DS)
        positions, _ = index.query(rm, EntriesQuery(q="insulin", min_quality=0.5))
        assert [index.entry_id(i) for i in positions] == want


def test_edits_regenerations_and_restores_move_what_is_found(tmp_path: Path, dense: int) -> None:
    append(tmp_path, *_corpus(20))
    rm = ReadModel.open(tmp_path)
    assert "e3" not in _search(rm, "zebra")
    append(tmp_path, EntryEdited(dataset_id=DS, entry_id="e3", answer="a zebra"),
           EntryEdited(dataset_id=DS, entry_id="e4", question="zebra question?"))
    rm.catch_up()
    assert _search(rm, "zebra") == ["e3", "e4"]
    append(tmp_path, EntryEdited(dataset_id=DS, entry_id="e3", answer="a horse"),
           EntryRegenerated(dataset_id=DS, entry_id="e5", job_id="j", answer="zebras regenerated"),
           EntryRegenerated(dataset_id=DS, entry_id="e6", job_id="j", answer="zebra set aside", current=False))
    rm.catch_up()
    assert _search(rm, "zebra") == ["e4", "e5"]  # e3 edited away; a set-aside revision is not the entry's text
    seq = rm.seq
    append(tmp_path, RevisionRestored(dataset_id=DS, entry_id="e7", seq=seq, answer="zebra restored"))
    rm.catch_up()
    assert _search(rm, "zebra") == ["e4", "e5", "e7"]
    assert _search(rm.as_of(seq), "zebra") == ["e4", "e5"]  # an older model, the same index
    # a word only in a question edited away: the line that still holds it also holds the entry's answer now
    append(tmp_path, QuestionQueued(dataset_id=DS, item_id="q900", question="walrus question?", row=900),
           EntryGenerated(dataset_id=DS, item_id="q900", entry_id="e900", question="walrus question?",
                          answer="plain"))
    rm.catch_up()
    assert _search(rm, "walrus") == ["e900"]
    append(tmp_path, EntryEdited(dataset_id=DS, entry_id="e900", question="seal question?"))
    rm.catch_up()
    assert _search(rm, "walrus") == [] and _search(rm, "seal") == ["e900"] and _search(rm, "plain") == ["e900"]


def test_texts_past_the_index_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path, *_corpus(150))
    rm = ReadModel.open(tmp_path)
    monkeypatch.setattr(search, "COMMIT_BYTES", 4096)
    index = SearchIndex(tmp_path, rm.path)
    reach = index.catch_up(limit=20_000)  # a part of the log, as a server's indexing thread leaves it meanwhile
    assert 0 < reach < rm.offset
    monkeypatch.setattr(texts, "SEARCH_INLINE_BYTES", 0)  # searches do not add to it
    needles = _needles(rm, random.Random(5), 60)
    for needle in needles:
        assert _search(rm, needle) == _expected(rm, needle), needle
    assert SearchIndex(tmp_path, rm.path).reach() == reach
    assert index.catch_up() == rm.offset


def test_an_index_of_a_log_rewritten_since_is_built_again(tmp_path: Path) -> None:
    append(tmp_path, *_corpus(40, seed=1))
    rm = ReadModel.open(tmp_path)
    assert _search(rm, "insulin") == _expected(rm, "insulin")
    old = SearchIndex(tmp_path, rm.path).reach()
    # another log in its place (as a repair or a restore leaves it), longer than the indexed part
    (tmp_path / LOG_NAME).unlink()
    append(tmp_path, *_corpus(60, seed=2))
    rm = ReadModel.open(tmp_path)
    assert rm.offset > old
    for needle in ("insulin", "glucose", "光合", "fact 12"):
        assert _search(rm, needle) == _expected(rm, needle), needle
    assert _lines(tmp_path, rm) == {DS: 60, "other": 60}  # the old lines are gone


def test_an_index_stops_before_a_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path, *_corpus(100))
    rm = ReadModel.open(tmp_path)
    monkeypatch.setattr(search, "COMMIT_BYTES", 4096)
    index = SearchIndex(tmp_path, rm.path)
    reach = index.catch_up(limit=10_000)
    log = tmp_path / LOG_NAME
    data = bytearray(log.read_bytes())
    at = data.index(b'"answer":"', reach + 20_000) + 12
    data[at] = ord("#") if data[at] != ord("#") else ord("%")  # its crc no longer holds
    log.write_bytes(bytes(data))
    stopped = index.catch_up()
    assert reach < stopped < at and not index.off  # up to the bad line, and on
    assert index.catch_up() == stopped  # and there it stays, without an error


_INDEXER = """
import sys
from pathlib import Path
import projections.search as search
import projections.segments as segments
search.COMMIT_BYTES = 2048
data = Path(sys.argv[1])
print(search.SearchIndex(data, data / "events.jsonl").catch_up())
"""


def test_processes_sharing_a_data_dir_index_it_once(tmp_path: Path) -> None:
    append(tmp_path, *_corpus(200))
    rm = ReadModel.open(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", _INDEXER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {int(o) for o in outs} == {rm.offset}
    assert _lines(tmp_path, rm) == {DS: 200, "other": 200}
    hits = SearchIndex(tmp_path, rm.path).hits(DS, "glucose")
    assert hits is not None and len(set(hits.starts.to_pylist())) == 200
    assert _search(rm, "glucose") == _expected(rm, "glucose")


def test_segments_merged_find_what_they_found_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    dense: int) -> None:
    append(tmp_path, *_corpus(150))
    rm = ReadModel.open(tmp_path)
    needles = _needles(rm, random.Random(9), 50)
    monkeypatch.setattr(search, "COMMIT_BYTES", 2048)  # a segment of a few lines each
    monkeypatch.setattr(search, "MERGE_FANOUT", 10**6)  # never merged
    apart = SearchIndex(tmp_path, rm.path)
    apart.catch_up()
    many = apart._read_manifest()
    assert many is not None and len(many.segments) > 20
    found = {n: _search(rm, n) for n in needles}
    assert all(found[n] == _expected(rm, n) for n in needles)
    shutil.rmtree(tmp_path / SNAPSHOT_DIR / SEARCH_DIR)
    monkeypatch.setattr(search, "MERGE_FANOUT", 3)
    monkeypatch.setattr(segments, "MERGE_PIECE", 3)  # a dataset's words merged a few at a time: a batch each
    merged = SearchIndex(tmp_path, rm.path)
    merged.catch_up()
    few = merged._read_manifest()
    assert few is not None and len(few.segments) < len(many.segments) // 3
    assert max(merged._segment(seg.name)["word"].num_chunks for seg in few.segments) > 3
    assert few.lines == many.lines
    assert sum(s.lines for s in few.segments) == sum(s.lines for s in many.segments) == 300
    names = {p.name for p in (tmp_path / SNAPSHOT_DIR / SEARCH_DIR).glob("*.arrow")}
    assert names == {s.name for s in few.segments}  # the segments merged away are deleted
    for segment in few.segments:  # bitmaps where words are common (all with dense 10**9), lists otherwise
        table = merged._segment(segment.name)
        word_rows = pc.sum(pc.not_equal(table["word"], "")).as_py()
        as_bits = len(table) - table["bits"].null_count
        assert as_bits == {0: 0, 10**9: word_rows}.get(dense, as_bits) and (dense != 32 or as_bits > 0)
    rm2 = ReadModel.open(tmp_path)
    for needle in needles:
        assert _search(rm2, needle) == found[needle], needle
        for ds in (DS, "other"):
            a, b = apart.hits(ds, needle), merged.hits(ds, needle)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a.mask.equals(b.mask) and a.starts.equals(b.starts), needle


def test_the_old_sqlite_index_is_deleted(tmp_path: Path) -> None:
    append(tmp_path, *_corpus(5))
    rm = ReadModel.open(tmp_path)
    old = tmp_path / SNAPSHOT_DIR / OLD_SEARCH_NAME
    old.parent.mkdir(parents=True, exist_ok=True)
    for name in ("", "-wal"):
        old.with_name(OLD_SEARCH_NAME + name).write_bytes(b"x" * 100)
    assert _search(rm, "insulin") == _expected(rm, "insulin")
    assert not list(old.parent.glob(OLD_SEARCH_NAME + "*"))


def _words_by_character(folded: str) -> list[str]:
    """words() as it was written a character at a time: the definition its regular expressions keep."""
    out, word = [], []
    for c in search._spaced(folded):
        if search._in_word(c):
            word.append(c)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out


def test_texts_and_needles_split_into_words_by_the_definition() -> None:
    rng = random.Random(11)
    alphabet = ("abcXYZ09 _-.,?!'\t\n" "éüßİΣσς" "e\u0301" "ßﬃ" "光合作用" "กินข้าว" "हिन्दी" "١٢٣" "\ue000"
                "\U000f0000" "😀" "ⅷ" "\u200b" "ǅ" "·")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += [chr(cp) for cp in range(0, 0x3000)]  # every character of the first planes' common part, alone
    for text in texts:
        folded = text.casefold()
        assert words(folded) == _words_by_character(folded), repr(text)


def test_a_full_disk_turns_the_index_off_and_searches_read_the_texts(tmp_path: Path,
                                                                      tmpfs: Callable[[str], Path]) -> None:
    made = tmp_path / "made"
    append(made, *_corpus(300))
    log = (made / LOG_NAME).read_bytes()
    disk = tmpfs(f"{len(log) // 1024 + 4}k")  # the log and a few kB: not the index's first segment (~12 kB)
    (disk / LOG_NAME).write_bytes(log)
    rm = ReadModel.open(disk)
    needles = ["insulin", "fact 12", "光合", "zzz"]
    assert all(_search(rm, n) == _expected(rm, n) for n in needles)
    index = rm.search_index()
    assert index.off and index.reach() == 0 and rm.search_hits(DS, "insulin") is None
    left = [p.name for p in (disk / SNAPSHOT_DIR / SEARCH_DIR).iterdir()] if (disk / SNAPSHOT_DIR / SEARCH_DIR).exists() else []
    assert not [n for n in left if n.endswith(".tmp")]  # no half-written file


def test_a_search_after_another_writer_merged_its_segments_away(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    append(tmp_path, *_corpus(120))
    rm = ReadModel.open(tmp_path)
    monkeypatch.setattr(search, "COMMIT_BYTES", 4096)
    monkeypatch.setattr(search, "MERGE_FANOUT", 10**6)
    reader = SearchIndex(tmp_path, rm.path)
    reach = reader.catch_up(limit=30_000)
    before = reader.hits(DS, "glucose")  # its segments are open (mapped) now
    assert before is not None and 0 < reach < rm.offset
    monkeypatch.setattr(search, "MERGE_FANOUT", 2)
    writer = SearchIndex(tmp_path, rm.path)  # as another process: it indexes the rest and merges
    assert writer.catch_up() == rm.offset
    opened = set(reader._segments)
    after = reader.hits(DS, "glucose")
    assert after is not None and not reader.off and after.reach == rm.offset
    assert after.mask[: len(before.mask)].equals(before.mask)  # the lines it had, the same bits
    now = writer._read_manifest()
    assert now is not None and opened - {seg.name for seg in now.segments}  # some merged away, their files gone
    assert set(reader._segments) <= {seg.name for seg in now.segments}  # and their maps let go
    assert _search(rm, "glucose") == _expected(rm, "glucose")
