"""The guide's generation examples against a real model server (the real-model lane of test_realmodel.py:
llama-cpp-python's server with SmolLM2-135M-Instruct, driven through the ``vllm`` profile).

``generation_mode: "answer"`` without questions, with ``analyze_quality: false``: the reader's-questions
prompt and its reply schema go to a server dsetlog did not write, every entry made gets a numeric score from
its structural checks, and an emptied answer is scored 0 and leaves the export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_realmodel import Llama, dset, shown  # the lane's server and command line (skips without them)

from dsetlog.store.events import EntryEdited
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    server = Llama(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()

HARBOUR = """\
# The harbour

The harbour of Porthcurno opens at dawn and closes at dusk. Fishing boats unload their catch at the north
quay, and the harbour master keeps a register of every vessel that moors overnight.
"""


def test_answer_mode_without_questions_and_without_analysis_on_the_real_server(tmp_path: Path,
                                                                               real: Llama) -> None:
    llama = real
    data = tmp_path / "D"
    doc = tmp_path / "harbour.md"
    doc.write_text(HARBOUR, encoding="utf-8")
    proc = dset(llama, tmp_path, "ingest", str(doc), "--project", "port", "--strategy", "markdown",
                "--data", str(data))
    assert proc.returncode == 0, shown(proc, llama)
    models = ["--classification-model", "vllm", "--parsing-model", "vllm", "--chunking-model", "vllm"]
    proc = dset(llama, tmp_path, "datasets", "generate", "--project", "port", "--data", str(data), *models,
                "--generation-mode", "answer", "--datasets-per-chunk", "2", "--no-progress")
    assert proc.returncode in (0, 1), shown(proc, llama)  # 1: some slots bookmarked (the tiny model's JSON)
    rm = ReadModel.open(data)
    (ds,) = rm.datasets.datasets(kind="documents")
    made = rm.full(rm.datasets.entries(ds.id))
    assert made, shown(proc, llama)
    for e in made:
        assert e.question.strip() and e.metadata["mode"] == "answer" and e.metadata["profile"] == "vllm"
        assert isinstance(e.quality_score, float) and e.quality_analyzed  # analyze_quality's default: analysed
    # the same dataset without analysis: no new calls, and a score still
    proc = dset(llama, tmp_path, "datasets", "generate", "--project", "port", "--data", str(data), *models,
                "--generation-mode", "answer", "--datasets-per-chunk", "2", "--no-analyze-quality",
                "--enable-versioning", "--dataset-name", "structural", "--no-progress")
    assert proc.returncode in (0, 1), shown(proc, llama)
    rm.catch_up()
    (structural,) = rm.datasets.datasets(name="structural")
    entries = rm.datasets.entries(structural.id)
    assert entries, shown(proc, llama)
    assert all(isinstance(e.quality_score, float) and not e.quality_analyzed for e in entries)
    target = entries[0]
    with EventLog.in_dir(data) as log:  # what PUT {"answer": ""} appends, made by the one function it calls
        from dsetlog.generation.rescoring import edit_events

        with rm.lock:
            events = edit_events(rm, target, EntryEdited(dataset_id=structural.id, entry_id=target.id, answer=""))
        log.append_many(events)
    proc = dset(llama, tmp_path, "export", structural.id, "--format", "jsonl", "--output-dir", str(tmp_path / "out"),
                "--data", str(data))
    assert proc.returncode == 0, shown(proc, llama)
    exported = [json.loads(line) for f in (tmp_path / "out").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert target.id not in {row.get("id") for row in exported}
    print(f"\nrealmodel (guide): answer mode without questions, {len(made)} entries analysed (mean "
          f"{sum(e.quality_score for e in made) / len(made):.3f}), {len(entries)} structural (mean "
          f"{sum(e.quality_score for e in entries) / len(entries):.3f}); e.g. {made[0].question!r} -> "
          f"{made[0].answer[:80]!r}")
