"""`dset generate`'s --out folder as the training tools read it: the system prompt recorded and exported,
the folder loading with Hugging Face datasets (the seed's files as the seed made them), its rows joining
a document dataset's. A real `dset` process answering from the simulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from consumers import lf_attr, lf_convert, openai_chat_errors
from harness import Env, dset, questions_csv
from helpers import wait_job

from dsetlog.export.cards import CARD, DATASET_INFO
from dsetlog.export.datasets import export_dataset
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import RunStarted
from dsetlog.store.log import EventLog

SYSTEM = "You are a terse tutor. Answer in one sentence."
INSTRUCTION = "alpaca,sharegpt,openai-chat"
datasets.disable_progress_bars()


def generate(tmp: Path, *extra: str, n: int = 6) -> tuple[Path, Path]:
    q = questions_csv(tmp / "q.csv", n) if not (tmp / "q.csv").exists() else tmp / "q.csv"
    proc = dset(["generate", str(q), "--simulate", "--sim-latency-ms", "1", "--no-progress", "--data",
                 str(tmp / "data"), *extra], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "dset_generator", tmp / "data"


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def hf(folder: Path, config: str | None = None) -> datasets.DatasetDict:
    return datasets.load_dataset(str(folder), config, cache_dir=str(folder.parent / ".hf-cache"))


def test_the_system_prompt_is_recorded_and_exported(tmp_path: Path) -> None:
    out, data = generate(tmp_path, "--system", SYSTEM, "--formats", f"jsonl,{INSTRUCTION}")
    with EventLog.in_dir(data) as log:
        runs = [r.event for r in log.read() if isinstance(r.event, RunStarted)]
    assert [r.system for r in runs] == [SYSTEM]  # once per run, not on each of its entries
    assert all(r["system"] == SYSTEM for r in rows(out / "alpaca.jsonl"))
    assert all(r["conversations"][0] == {"from": "system", "value": SYSTEM} for r in rows(out / "sharegpt.jsonl"))
    chat = rows(out / "openai_chat.jsonl")
    assert all(m["messages"][0] == {"role": "system", "content": SYSTEM} for m in chat)
    assert openai_chat_errors(chat) == {}
    assert all(r["system"] == SYSTEM for r in rows(out / "dataset.jsonl"))
    info = json.loads((out / DATASET_INFO).read_text())
    assert set(info) == {"alpaca", "sharegpt", "openai_chat"}
    for entry in info.values():  # LLaMA-Factory takes the recorded prompt, not its template's default
        attr = lf_attr(entry)
        for example in rows(out / entry["file_name"]):
            assert lf_convert(attr, example)[2] == SYSTEM
    assert info["alpaca"]["columns"]["system"] == "system"
    # the seed's files stay as the seed made them
    with open(out / "output.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["timestamp", "question", "thoughts", "final_answer"]
    assert set(rows(out / "output.json")[0]) == {"metadata", "response"}
    assert f"System: {SYSTEM}" in (out / "output.txt").read_text()


def test_without_a_system_prompt_there_is_no_system_turn(tmp_path: Path) -> None:
    out, _ = generate(tmp_path, "--formats", INSTRUCTION)
    assert all(set(r) == {"instruction", "input", "output"} for r in rows(out / "alpaca.jsonl"))
    assert all([t["from"] for t in r["conversations"]] == ["human", "gpt"] for r in rows(out / "sharegpt.jsonl"))
    assert "system" not in json.loads((out / DATASET_INFO).read_text())["alpaca"]["columns"]


def test_the_out_folder_loads_and_joins_a_document_dataset(tmp_path: Path, make_simulator: Any) -> None:
    out, _ = generate(tmp_path, "--formats", f"parquet,jsonl,{INSTRUCTION}", "--reasoning", "think")
    loaded = hf(out)  # the card's default config: dataset.jsonl, not every file of the folder at once
    assert set(loaded) == {"train"} and loaded["train"].num_rows == 6
    assert all(s is not None and 0 <= s <= 1 for s in loaded["train"]["quality_score"])  # scored, not null
    assert all(d for d in loaded["train"]["difficulty"])
    assert hf(out, "json")["train"].num_rows == 6  # the seed's output.json is a config of its own
    assert all(r["output"].startswith("<think>\n") for r in hf(out, "alpaca")["train"])
    card = (out / CARD).read_text()
    assert "output.csv" in card and "dataset.parquet" in card
    # a questions dataset and a document dataset: one schema, so one training set
    env = Env(tmp_path / "docs", make_simulator())
    try:
        env.project_md(3)
        result = env.run(datasets_per_chunk=2)
        files, _ = export_dataset(env.rm, result.dataset_id, data_dir=env.data, format_type="jsonl")
        documents = hf(files[0].parent)["train"]
    finally:
        env.log.close()
    both = datasets.concatenate_datasets([loaded["train"], documents])
    assert both.num_rows == 6 + 6 and loaded["train"].features == documents.features
    parquet = datasets.load_dataset("parquet", data_files=str(out / "dataset.parquet"), split="train",
                                    cache_dir=str(tmp_path / ".hf-cache"))
    assert datasets.concatenate_datasets([loaded["train"], parquet]).num_rows == 12


@pytest.mark.parametrize(("flags", "message"), [
    (["--reasoning", "think"], "instruction formats"),
    (["--formats", "alpaca", "--reasoning", "field"], "alpaca"),
])
def test_options_the_formats_cannot_carry_are_refused(tmp_path: Path, simulator: Simulator, flags: list[str],
                                                      message: str) -> None:
    q = questions_csv(tmp_path / "q.csv", 2)
    proc = dset(["generate", str(q), "--base-url", simulator.base_url, "--no-progress", *flags], cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert simulator.stats()["requests"] == 0  # refused before anything was asked


def test_csv_bom_for_excel(tmp_path: Path) -> None:
    out, _ = generate(tmp_path, "--csv-bom")
    raw = (out / "output.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbftimestamp,question,thoughts,final_answer\n")


def test_a_regeneration_sends_the_runs_system_prompt_again(tmp_path: Path, make_client: Any,
                                                           simulator: Simulator) -> None:
    """The exports say the answer was made under the run's system prompt: a new revision is made under it too."""
    generate(tmp_path, "--system", SYSTEM, n=2)
    client = make_client(simulator_url=simulator.base_url, start_worker=True)
    (dataset,) = client.simulate_get("/api/v1/datasets").json["datasets"]
    (entry, _) = client.simulate_get(f"/api/v1/datasets/{dataset['id']}/entries").json["entries"]
    resp = client.simulate_post(f"/api/v1/datasets/{dataset['id']}/regenerate", json={
        "entry_ids": [entry["id"]], "regeneration_config": {"improve_quality": True}})
    assert resp.status_code == 200, resp.text
    assert wait_job(client, resp.json["job_id"])["status"] == "completed"
    (sent,) = simulator.requests()  # the one regeneration call
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM}
    assert entry["question"] in sent["messages"][-1]["content"]
