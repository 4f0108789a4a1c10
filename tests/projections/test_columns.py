"""projections.columns: the Datasets projection's columns, their tables, ids and snapshot bytes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from helpers import append, three_ways

from dsetlog.ids import entry_id_for
from dsetlog.store.events import (
    DatasetCreated,
    EntryEdited,
    EntryGenerated,
    EntryScored,
    FeedbackGiven,
    QuestionQueued,
    Usage,
)
from projections import ReadModel, readmodel
from projections.columns import SHARED_KEPT, Rows, Shared, Strings, Times
from projections.itemids import ItemIds

DS = "ds"


def test_timestamps_come_back_as_the_same_text() -> None:
    times = Times()
    canonical = ["2026-12-03T06:17:55.123456Z", "1970-01-01T00:00:00.000000Z", "2099-02-28T23:59:59.999999Z",
                 "2024-02-29T12:00:00.000001Z"]
    codes = [times.code(ts) for ts in canonical]
    assert all(c >= 0 for c in codes) and codes[1] == 0
    assert [times.text(c) for c in codes] == canonical
    assert codes == sorted(codes, key=lambda c: times.text(c)) or sorted(codes) == [
        times.code(ts) for ts in sorted(canonical)]  # microseconds order as the texts do
    # anything that would not come back the same is kept as it is
    odd = ["", "2026-12-03T06:17:55Z", "2026-12-03 06:17:55.123456Z", "2026-12-03T06:17:5\u0665.123456Z",
           "2026-12-03T25:17:55.123456Z", "2026-13-03T06:17:55.123456Z", "0999-01-01T00:00:00.000000Z",
           "2026-12-03T06:17:55.+12345Z", "1969-12-31T23:59:59.999999Z"]
    odd_codes = [times.code(ts) for ts in odd]
    assert all(c < 0 for c in odd_codes)
    assert [times.text(c) for c in odd_codes] == odd
    again = Times(list(times.odd))  # as a snapshot restores them
    assert [again.text(c) for c in odd_codes + codes] == odd + canonical


def test_strings_and_dicts_are_kept_once() -> None:
    strings = Strings()
    assert strings.code(None) == 0 and strings.code("") == 1
    a, b = strings.code("Science"), strings.code("Math")
    assert strings.code("Science") == a != b and strings.values[a] == "Science"
    shared = Shared()
    one, two = shared.code({"length": 1.0}), shared.code({"length": 1.0})
    assert one == two and shared.code({}) == 0
    listed = [shared.code({"tags": ["x"]}) for _ in range(2)]  # unhashable values: kept, not shared
    assert listed[0] != listed[1] and shared.values[listed[0]] == {"tags": ["x"]}
    many = Shared()
    codes = [many.code({"grade": float(i)}) for i in range(SHARED_KEPT + 10)]
    assert len(set(codes)) == SHARED_KEPT + 10
    assert many.code({"grade": 3.0}) == codes[3]  # recognised while the table was not full
    assert many.code({"grade": float(SHARED_KEPT + 5)}) != codes[SHARED_KEPT + 5]  # past it: a new one


_VALUES = (1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 1.5, 0.5, 0, 0, 1, 0, 7)  # NEW_ENTRY_COLUMNS


def test_entry_ids_follow_their_items_or_are_kept() -> None:
    rows = Rows(DS)
    items = rows.items
    abc, other = "00000000000000ab", "ffffffffffffffff"
    made = (f"q_{abc}", f"slot_{abc}", "odd", f"q_{other}", "q_ABCDEF0123456789")
    for item_id in made:
        items.add(item_id, 0, 0, 0, True)
    assert items.ids.shared_digits  # q_ and slot_ with the same digits

    def add(item: int, entry_id: str) -> bool:
        return rows.add_entry(item, made[item], entry_id, _VALUES)

    assert add(0, entry_id_for(f"q_{abc}"))  # entry_<digits>: not stored
    assert add(2, "e-odd") and add(3, "entry_zzz")  # does not follow its item: kept
    assert add(4, "entry_ABCDEF0123456789")  # its item's digits are not the engine's shape: kept
    assert rows.entries.odd_ids == {1: "e-odd", 2: "entry_zzz", 3: "entry_ABCDEF0123456789"}
    assert [rows.entry_id(r) for r in range(4)] == [f"entry_{abc}", "e-odd", "entry_zzz", "entry_ABCDEF0123456789"]
    assert [rows.entry_row(i) for i in (f"entry_{abc}", "e-odd", "entry_zzz", f"entry_{other}", "entry_", "x",
                                        "entry_ABCDEF0123456789")] == [0, 1, 2, None, None, None, 3]
    assert rows.in_item_order and list(rows.order()) == [0, 1, 2, 3]
    # an id some entry has already: not added (slot_'s entry_<digits> is q_'s; e-odd is item 2's)
    assert not add(1, entry_id_for(f"slot_{abc}")) and not add(1, "e-odd")
    assert add(1, f"entry_{other}")  # free: q_<other>'s entry has another id
    assert len(rows.entries) == 5 and rows.entry_id(4) == f"entry_{other}" and not rows.in_item_order
    assert list(rows.order()) == [0, 4, 1, 2, 3]  # the items' order
    assert [rows.entry_view(r).prompt_tokens for r in range(5)] == [3] * 5  # the pending values reached the columns
    assert [items.ids.id(r) for r in range(5)] == list(made)


def test_item_ids_find_their_rows_as_the_table_grows() -> None:
    ids = ItemIds()
    made = [f"q_{(i * 0x9E37) << 16:016x}" for i in range(5000)] + [f"slot_{i:016x}" for i in range(3000)]
    made += ["plain", "q_short", "q_00000000000000G0", "q_+000000000000001", "q_000000000000000_1", "q_١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦",
             "q_ 000000000000001", "q_-000000000000001", "q_ABCDEF0123456789", "q_abcdef012345678g"]
    rows = [ids.add(item_id) for item_id in made]
    assert rows == list(range(len(made)))
    ids.settle()  # found by the table, not by their strings
    assert [ids.get(item_id) for item_id in made] == rows
    assert [ids.id(r) for r in rows] == made
    assert [ids.get(x) for x in ("q_0000000000000000x", "q_" + "0" * 15 + "1", "other_0000000000000000")] == [
        None, None, None]
    assert len(ids.odd) == 10 and len(ids.slots) >= 2 * len(made)
    again = ItemIds.from_arrays(list(ids.prefixes), list(ids.odd), [memoryview(b) for b in ids.arrays()],
                                 shared_digits=ids.shared_digits)
    assert [again.get(item_id) for item_id in made] == rows and list(again.ids()) == made
    full = ItemIds()
    for i in range(300):  # past 254 prefixes: kept as strings
        full.add(f"p{i}_{i:016x}")
    assert len(full.prefixes) == 254 and len(full.odd) == 46
    assert [full.get(f"p{i}_{i:016x}") for i in range(300)] == list(range(300))


def _events() -> list[object]:
    events: list[object] = [DatasetCreated(dataset_id=DS, name="qs")]
    for i in range(30):
        item = f"q_{i:016x}"
        events.append(QuestionQueued(dataset_id=DS, item_id=item, question=f"question {i}?", row=i))
    for i in reversed(range(30)):  # entries in another order than their items
        item = f"q_{i:016x}"
        events.append(EntryGenerated(
            dataset_id=DS, item_id=item, entry_id=entry_id_for(item) if i % 7 else f"odd-{i}", question=f"q{i}",
            answer=f"a{i}", category=("Science", "Math", "")[i % 3], quality_score=None if i % 5 == 0 else i / 30,
            quality={"length": 1.0}, metadata={"slot": i % 2} if i % 4 else {}, usage=Usage(prompt_tokens=i,
            completion_tokens=2 * i), latency_ms=i * 1.5, simulated=bool(i % 2)))
    events += [EntryEdited(dataset_id=DS, entry_id=entry_id_for("q_" + "3".zfill(16)), answer="edited", category="Other"),
               EntryScored(dataset_id=DS, entry_id="odd-7", quality_score=0.9, quality={"judge": 0.9},
                           below_threshold=True, duplicate_of=entry_id_for("q_" + "1".zfill(16)), analyzed=True),
               FeedbackGiven(dataset_id=DS, entry_ids=[entry_id_for("q_" + "2".zfill(16)), "odd-14"],
                             feedback_type="content_error", rating=2, comments="no")]
    return events


def test_the_columns_read_back_the_same_from_a_rebuild_a_catch_up_and_a_snapshot(tmp_path: Path) -> None:
    events = _events()
    models = list(three_ways(tmp_path, events, cuts=[10, 40], snap_at=45))  # type: ignore[arg-type]
    seen = [[msgspec.to_builtins(msgspec.structs.asdict(e)) for e in m.datasets.entries(DS)] for m in models]
    assert all(s == seen[0] for s in seen)
    by_id = {e["id"]: e for e in seen[0]}
    assert [e["item_id"] for e in seen[0]] == [f"q_{i:016x}" for i in range(30)]  # the items' order
    edited = by_id[entry_id_for("q_" + "3".zfill(16))]
    assert (edited["category"], edited["revision"], edited["updated_at"] >= edited["created_at"]) == ("Other", 2, True)
    scored = by_id["odd-7"]
    assert (scored["quality_score"], scored["below_threshold"], scored["duplicate_of"], scored["quality_analyzed"]) \
        == (0.9, True, entry_id_for("q_" + "1".zfill(16)), True)
    assert by_id["odd-14"]["flagged"] and by_id["odd-14"]["feedback"][1] == [2]  # FeedbackView by position: count, ratings
    assert by_id[entry_id_for("q_" + "5".zfill(16))]["quality_score"] is None
    assert by_id[entry_id_for("q_" + "9".zfill(16))]["metadata"] == {"slot": 1} and by_id["odd-0"]["metadata"] == {}


def test_a_view_is_a_copy(tmp_path: Path) -> None:
    append(tmp_path, *_events())  # type: ignore[arg-type]
    rm = ReadModel.open(tmp_path)
    before = rm.datasets.entry(DS, "odd-14")
    assert before is not None and before.feedback is not None
    before.feedback.ratings.append(5)  # changes the copy only
    append(tmp_path, FeedbackGiven(dataset_id=DS, entry_ids=["odd-14"], feedback_type="praise", rating=4))
    rm.catch_up()
    after = rm.datasets.entry(DS, "odd-14")
    assert after is not None and after.feedback is not None
    assert (before.feedback.count, after.feedback.ratings) == (1, [2, 4])


def test_a_bulk_fold_finds_ids_by_their_strings_then_settles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    complete = ItemIds(complete=True)
    made = [f"q_{i:016x}" for i in range(2000)] + ["plain", "q_NOT_HEX_0000000"]
    assert [complete.add(item_id) for item_id in made if complete.get(item_id) is None] == list(range(len(made)))
    assert complete.get("q_" + "f" * 16) is None and complete.get(made[-1]) == len(made) - 1
    assert not complete.shared_digits and complete.by_digits(5) == [5]
    complete.add(f"slot_{5:016x}")  # the digits of q_<5>: both rows have them
    assert complete.may_share_digits and complete.by_digits(5) == [5, len(made)]
    made.append(f"slot_{5:016x}")
    complete.settle()  # the table, made in one pass
    assert complete.shared_digits  # found as the table was made
    assert complete._known == {} and [complete.get(item_id) for item_id in made] == list(range(len(made)))
    assert complete.by_digits(5) == [5, len(made) - 1] and complete.get("q_" + "f" * 16) is None

    append(tmp_path, *_events())  # type: ignore[arg-type]
    monkeypatch.setattr(readmodel, "_BULK_BYTES", 0)  # every catch-up folds in bulk
    bulk = ReadModel.open(tmp_path, use_snapshot=False)
    monkeypatch.setattr(readmodel, "_BULK_BYTES", 1 << 40)
    live = ReadModel.open(tmp_path, use_snapshot=False)
    assert not bulk.datasets.bulk and bulk.datasets.rows(DS).items.ids._known == {}  # settled
    assert bulk.datasets.entries(DS) == live.datasets.entries(DS)
    assert bulk.datasets.items(DS) == live.datasets.items(DS)


def test_a_reader_without_the_lock_never_loses_a_new_entrys_values() -> None:
    """An export reads views of rows it took under the model's lock while folds add entries (api/download.py):
    its reads flush the new entries' pending values, and none may be lost or doubled."""
    import threading

    from projections.columns import NEW_ENTRY_COLUMNS

    rows, n = Rows(DS), 20_000
    for i in range(n):
        rows.items.add(f"q_{i:016x}", 0, 0, 0, True)
    rows.add_entry(0, f"q_{0:016x}", entry_id_for(f"q_{0:016x}"), _VALUES)
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            assert rows.entry_views([0])[0].prompt_tokens == 3

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, n):
            rows.add_entry(i, f"q_{i:016x}", entry_id_for(f"q_{i:016x}"), _VALUES)
    finally:
        done.set()
        reader.join()
    e = rows.entries
    assert {len(getattr(e, name)) for name in NEW_ENTRY_COLUMNS} == {len(e.item)} == {n}


def test_pending_values_and_remembered_string_codes_change_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """New entries' values reach the columns PENDING_KEPT at a time and Strings.codes remembers COMBOS_KEPT
    combinations: with both tiny (a flush every 3 entries, combinations forgotten every 2) the state is byte for
    byte the one of the defaults, however it was folded."""
    from projections import columns

    def state(m: ReadModel) -> dict[str, bytes]:
        return {p.name: msgspec.msgpack.encode(p.snapshot_state()) for p in m.projections}

    default = [state(m) for m in three_ways(tmp_path, _events(), cuts=[10, 40], snap_at=45)]  # type: ignore[arg-type]
    monkeypatch.setattr(columns, "PENDING_KEPT", 3)
    monkeypatch.setattr(columns, "COMBOS_KEPT", 2)
    tiny = [state(ReadModel.open(tmp_path, use_snapshot=False)), state(ReadModel.open(tmp_path))]
    monkeypatch.setattr(readmodel, "_BULK_BYTES", 0)
    tiny.append(state(ReadModel.open(tmp_path, use_snapshot=False)))  # in bulk
    assert all(s == default[0] for s in default + tiny)
    strings = Strings()
    first = strings.codes("Science", "m", None)
    assert strings.codes("Math", "m", "") == (first[1] + 1, first[1], 1)  # each new string coded in order
    strings.codes("Law", "x", "")  # a third combination: the remembered ones were forgotten, the codes stay
    assert strings.codes("Science", "m", None) == first and strings.values[first[0]] == "Science"
