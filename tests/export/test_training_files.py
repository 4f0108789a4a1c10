"""A document dataset's files as the training tools read them: Hugging Face datasets (the dataset card's
configs: a DatasetDict of train, validation and test; jsonl and parquet concatenated), pandas and pyarrow,
OpenAI's chat fine-tuning checks, LLaMA-Factory's dataset_info.json and converters, axolotl's chat_template
loader with the README's mapping. A real log, real chunks, the simulator on loopback, real files."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import msgspec
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from consumers import axolotl_turns, lf_attr, lf_convert, lf_remove_thought, openai_chat_errors
from harness import Env

from dsetlog.catalog.projects import save_parameters
from dsetlog.export.cards import CARD, DATASET_INFO
from dsetlog.export.datasets import ExportError, export_dataset
from dsetlog.export.formats import DATASET_CSV_COLUMNS, ENTRY_COLUMNS, EXPORT_FORMATS, EXPORT_SUFFIX
from dsetlog.export.options import ExportOptions
from dsetlog.generation.errors import DocGenError
from dsetlog.generation.requests import GenerateRequest
from dsetlog.prompts import parameters, templates
from dsetlog.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[2]
SPLITS = {"train", "validation", "test"}
datasets.disable_progress_bars()


@pytest.fixture
def env(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Iterator[Env]:
    env = Env(tmp_path, make_simulator())  # its data dir is the `data` fixture's: make_client serves it
    yield env
    env.log.close()


@pytest.fixture
def dataset_id(env: Env) -> str:
    """12 sections, 4 entries each, 40% of them negatives, in train / validation / test."""
    env.project_md(12)
    pid = env.rm.projects.project_by_name("demo").id
    save_parameters(env.log, env.rm, project_id=pid, params=parameters.ProjectParameters(
        purpose="fine-tuning", audience="students", dataset_format="jsonl", negativity_ratio=0.4))
    # deepseek: its model (deepseek-reasoner) is one the simulator reasons for; gemini's is not
    result = env.run(datasets_per_chunk=4, include_evaluation_sets=True, split_ratios=[0.5, 0.25, 0.25],
                     classification_model="deepseek",
                     analyze_quality=True, quality_threshold=0.0)
    assert result.outcome == "completed"
    return result.dataset_id


def by_question(env: Env, dataset_id: str) -> dict[str, list[Any]]:
    """The dataset's entries by question: two chunks can give the same question, with different answers."""
    found: dict[str, list[Any]] = {}
    for e in env.entries(dataset_id):
        found.setdefault(e.question, []).append(e)
    return found


def one_of(candidates: list[Any], output: str) -> Any:
    """The entry of ``candidates`` (entries asking the same question) whose answer ``output`` ends with."""
    chosen = [e for e in candidates if output.endswith(e.answer)]
    assert len(chosen) >= 1, [e.answer for e in candidates]
    return chosen[0]


def export(env: Env, dataset_id: str, fmt: str, **options: Any) -> Path:
    files, _ = export_dataset(env.rm, dataset_id, data_dir=env.data, output_dir="exports", format_type=fmt,
                              options=ExportOptions(**options))
    return files[0].parent


def hf(folder: Path, config: str | None = None) -> datasets.DatasetDict:
    return datasets.load_dataset(str(folder), config, cache_dir=str(folder.parent / ".hf-cache"))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def split_counts(env: Env, dataset_id: str, *, negatives: bool = True) -> dict[str, int]:
    assignment = env.rm.evaluations.splits(dataset_id)
    counts = dict.fromkeys(SPLITS, 0)
    for e in env.entries(dataset_id):
        if negatives or e.answer != templates.NEGATIVE_ANSWER:
            counts[assignment[e.id]] += 1
    return counts


def test_every_format_loads_as_train_validation_and_test(env: Env, dataset_id: str) -> None:
    expected, answered = split_counts(env, dataset_id), split_counts(env, dataset_id, negatives=False)
    assert all(expected.values()) and answered != expected  # negatives in every split
    for fmt in EXPORT_FORMATS:
        folder = export(env, dataset_id, fmt)
        loaded = hf(folder)  # the default config: the format just written
        assert set(loaded) == SPLITS, fmt
        want = answered if fmt in ("alpaca", "sharegpt", "openai-chat") else expected
        assert {s: loaded[s].num_rows for s in SPLITS} == want, fmt
    card = (folder / CARD).read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    # the configs of one file type (datasets reads every config with the first one's builder)
    assert {c["config_name"] for c in front["configs"]} == {"jsonl", "alpaca", "sharegpt", "openai-chat"}
    for config in ("jsonl", "alpaca", "sharegpt", "openai-chat"):
        assert set(hf(folder, config)) == SPLITS
    assert "parquet: train.parquet" in card and "csv: train.csv" in card  # said for people, with their files


def test_jsonl_and_parquet_have_one_schema(env: Env, dataset_id: str) -> None:
    folder = export(env, dataset_id, "parquet")
    export(env, dataset_id, "jsonl")
    jsonl = hf(folder)["train"]
    parquet = datasets.load_dataset("parquet", data_files=str(folder / "train.parquet"), split="train",
                                    cache_dir=str(folder.parent / ".hf-cache"))
    assert jsonl.features == parquet.features
    assert list(jsonl.features) == list(ENTRY_COLUMNS)
    both = datasets.concatenate_datasets([jsonl, parquet])
    assert both.num_rows == 2 * jsonl.num_rows
    assert str(both.features["created_at"].dtype) == "timestamp[us, tz=UTC]"
    assert json.loads(both[0]["metadata"])["mode"] == "default"  # metadata: a JSON object's text in both
    assert str(both.features["quality_analyzed"].dtype) == "bool" and all(both["quality_analyzed"])  # analysed
    table = pq.read_table(folder / "train.parquet")
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    frame = pd.read_parquet(folder / "train.parquet")
    assert str(frame["updated_at"].dtype) == "datetime64[us, UTC]"
    entries = {e.id: e for e in env.entries(dataset_id)}
    first = frame.iloc[0]
    assert first["created_at"].isoformat().replace("+00:00", "Z") == entries[first["id"]].created_at
    lines = pd.read_json(folder / "train.jsonl", lines=True, dtype={"metadata": str})
    assert list(lines.columns) == list(frame.columns)


def test_csv_has_the_columns_that_tell_rows_apart_and_a_bom_for_excel(env: Env, dataset_id: str) -> None:
    folder = export(env, dataset_id, "csv")
    plain = (folder / "train.csv").read_bytes()
    assert not plain.startswith(b"\xef\xbb\xbf")
    frame = pd.read_csv(folder / "train.csv", keep_default_na=False)
    assert list(frame.columns) == list(DATASET_CSV_COLUMNS)
    entries = {e.id: e for e in env.entries(dataset_id)}
    assert set(frame["id"]) <= set(entries) and all(frame["category"])
    assert set(frame["difficulty"]) <= {"beginner", "intermediate", "advanced", "expert"}
    export(env, dataset_id, "csv", csv_bom=True)
    bom = (folder / "train.csv").read_bytes()
    assert bom.startswith(b"\xef\xbb\xbf") and bom[3:] == plain
    assert list(pd.read_csv(folder / "train.csv", encoding="utf-8-sig").columns) == list(DATASET_CSV_COLUMNS)
    with pytest.raises(ExportError, match="csv format only"):
        export(env, dataset_id, "jsonl", csv_bom=True)


def test_negatives_go_with_their_text_or_not_at_all(env: Env, dataset_id: str) -> None:
    folder = export(env, dataset_id, "alpaca")
    default = [r for s in SPLITS for r in rows(folder / f"{s}.alpaca.jsonl")]
    assert default and all(r["output"] != templates.NEGATIVE_ANSWER and r["input"] == "" for r in default)
    export(env, dataset_id, "alpaca", context="chunk")
    with_text = [r for s in SPLITS for r in rows(folder / f"{s}.alpaca.jsonl")]
    negatives = [r for r in with_text if r["output"] == templates.NEGATIVE_ANSWER]
    assert len(with_text) == len(env.entries(dataset_id)) and len(negatives) == len(with_text) - len(default)
    chunks: dict[str, set[str]] = {}  # a question asked of several chunks has each one's text
    for e in env.entries(dataset_id):
        chunks.setdefault(e.question, set()).add(env.rm.projects.chunk(e.source_chunk).text)
    assert all(r["input"] in chunks[r["instruction"]] for r in with_text)  # every row, not only the negatives
    export(env, dataset_id, "openai-chat", context="chunk")
    chat = rows(folder / "train.openai-chat.jsonl")
    for m in chat:
        question, text = m["messages"][0]["content"].split("\n\n", 1)
        assert text in chunks[question]
    with pytest.raises(ExportError, match="instruction formats"):
        export(env, dataset_id, "parquet", context="chunk")


def test_openai_chat_files_pass_the_fine_tuning_checks(env: Env, dataset_id: str) -> None:
    for options in ({}, {"reasoning": "think"}, {"context": "chunk"}):
        folder = export(env, dataset_id, "openai-chat", **options)
        for split in SPLITS:
            examples = rows(folder / f"{split}.openai-chat.jsonl")
            assert examples and openai_chat_errors(examples) == {}, (options, split)
    # what the checks catch, so that passing them means something
    bad = [{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": ""}]},
           {"messages": [{"role": "robot", "content": "x", "reasoning_content": "r"}]}]
    assert set(openai_chat_errors(bad)) == {"missing_content", "assistant_not_last", "unrecognized_role",
                                            "message_unrecognized_key", "example_missing_assistant_message"}


def test_reasoning_as_llamafactory_and_axolotl_read_it(env: Env, dataset_id: str) -> None:
    entries = by_question(env, dataset_id)
    assert all(e.reasoning for same in entries.values() for e in same)  # deepseek-reasoner on the simulator reasons
    folder = export(env, dataset_id, "alpaca", reasoning="think")
    for r in rows(folder / "train.alpaca.jsonl"):
        e = one_of(entries[r["instruction"]], r["output"])
        assert r["output"] == f"<think>\n{e.reasoning.strip()}\n</think>\n\n{e.answer}"
        assert lf_remove_thought(r["output"]) == e.answer  # LLaMA-Factory's enable_thinking=False
    export(env, dataset_id, "sharegpt", reasoning="field")
    for r in rows(folder / "train.sharegpt.jsonl"):
        gpt = r["conversations"][-1]
        e = one_of(entries[r["conversations"][0]["value"]], gpt["value"])
        assert gpt == {"from": "gpt", "value": e.answer, "reasoning_content": e.reasoning}
    export(env, dataset_id, "sharegpt")
    assert all(set(r["conversations"][-1]) == {"from", "value"} for r in rows(folder / "train.sharegpt.jsonl"))
    with pytest.raises(ExportError, match="alpaca"):
        export(env, dataset_id, "alpaca", reasoning="field")


def test_dataset_info_registers_each_split_as_llamafactory_reads_it(env: Env, dataset_id: str) -> None:
    folder = export(env, dataset_id, "alpaca", reasoning="think")
    export(env, dataset_id, "sharegpt")
    export(env, dataset_id, "openai-chat")
    export(env, dataset_id, "jsonl")
    info = json.loads((folder / DATASET_INFO).read_text())
    instruction = sorted(p.name for p in folder.iterdir() if re.search(r"\.(alpaca|sharegpt|openai-chat)\.jsonl$",
                                                                         p.name))
    assert sorted(v["file_name"] for v in info.values()) == instruction  # each split of each format, once
    assert {"alpaca_train", "sharegpt_validation", "openai_chat_test"} <= set(info)
    for name, entry in info.items():
        attr = lf_attr(entry)
        path = folder / entry["file_name"]
        assert path.is_file(), name
        loaded = datasets.load_dataset("json", data_files=[str(path)], split="train",  # LLaMA-Factory's call
                                       cache_dir=str(folder.parent / ".hf-cache"))
        columns = [attr[c] for c in ("prompt", "query", "response")] if attr["formatting"] == "alpaca" \
            else [attr["messages"]]
        assert set(columns) <= set(loaded.column_names), name
        for example in loaded:
            prompt, response, system = lf_convert(attr, example)
            assert prompt[-1]["role"] == "user" and prompt[-1]["content"] and response, name
            assert system == ""  # a document dataset has no system prompt: the template's default applies
    assert info["openai_chat_train"]["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                 "assistant_tag": "assistant", "system_tag": "system"}


def axolotl_config(reasoning: bool) -> dict[str, Any]:
    """The README's axolotl dataset config for the sharegpt file."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(# axolotl.*?)```", readme, re.DOTALL)
    assert block, "the README documents the axolotl mapping in a yaml block starting '# axolotl'"
    config = yaml.safe_load(block.group(1))["datasets"][0]
    if not reasoning:
        config["message_property_mappings"].pop("reasoning_content")
    return config


def test_sharegpt_loads_with_axolotls_chat_template_mapping(env: Env, dataset_id: str) -> None:
    entries = by_question(env, dataset_id)
    for reasoning in ("omit", "field"):
        folder = export(env, dataset_id, "sharegpt", reasoning=reasoning)
        config = axolotl_config(reasoning == "field")
        assert config["path"].endswith(".sharegpt.jsonl") and config["type"] == "chat_template"
        loaded = hf(folder, "sharegpt")  # axolotl loads its path with datasets too
        for row in loaded["train"]:
            turns = axolotl_turns(config, row)
            assert [t["role"] for t in turns] == ["user", "assistant"]
            e = one_of(entries[turns[0]["content"]], turns[1]["content"])
            want = {"role": "assistant", "content": e.answer}
            if reasoning == "field":
                want["reasoning_content"] = e.reasoning
            assert turns[1] == want
    export(env, dataset_id, "openai-chat", reasoning="field")  # axolotl's default mapping reads it as it is
    for row in hf(folder, "openai-chat")["train"]:
        turns = axolotl_turns({"type": "chat_template"}, row)
        e = one_of(entries[turns[0]["content"]], turns[1]["content"])
        assert turns[1]["reasoning_content"] == e.reasoning


def test_the_download_zip_is_a_loadable_dataset(env: Env, dataset_id: str,
                                                make_client: Callable[..., Any]) -> None:
    client = make_client()
    url = f"/api/v1/datasets/{dataset_id}/download"
    resp = client.simulate_get(url, params={"format_type": "openai-chat", "reasoning": "think"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    target = env.tmp / "unzipped"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert set(zf.namelist()) == {f"{s}{EXPORT_SUFFIX['openai-chat']}" for s in SPLITS} | {CARD, DATASET_INFO}
        zf.extractall(target)
    loaded = hf(target)
    assert {s: loaded[s].num_rows for s in SPLITS} == split_counts(env, dataset_id, negatives=False)
    assert openai_chat_errors(loaded["train"].to_list()) == {}
    assert all(m["messages"][-1]["content"].startswith("<think>\n") for m in loaded["train"])
    refused = client.simulate_get(url, params={"format_type": "jsonl", "reasoning": "think"})
    assert refused.status_code == 400 and "instruction formats" in refused.json["description"]
    assert client.simulate_get(url, params={"reasoning": "inline"}).status_code in (400, 422)
    bom = client.simulate_get(url, params={"format_type": "csv", "csv_bom": "true"})
    with zipfile.ZipFile(io.BytesIO(bom.content)) as zf:
        assert zf.read("train.csv").startswith(b"\xef\xbb\xbf")


def test_the_generate_request_carries_the_options_to_its_files(env: Env) -> None:
    env.project_md(3)
    result = env.run(datasets_per_chunk=2, format_type="sharegpt", reasoning="field", context="chunk")
    path = env.data / result.files[0]
    entries = env.entries(result.dataset_id)
    assert [r["conversations"][-1]["reasoning_content"] for r in rows(path)] == [e.reasoning for e in entries]
    assert all("\n\n" in r["conversations"][0]["value"] for r in rows(path))  # the question, then its text
    with pytest.raises(msgspec.ValidationError, match="instruction formats"):
        msgspec.convert({"project_id": "demo", "format_type": "jsonl", "reasoning": "think"}, GenerateRequest)
    with pytest.raises(msgspec.ValidationError, match="reasoning"):
        msgspec.convert({"project_id": "demo", "reasoning": "inline"}, GenerateRequest)
    # the project's saved format (jsonl) cannot carry it: refused as the run is planned (the API: a 400 at
    # submission), before any call
    before = len(env.requests("generate"))
    with pytest.raises(DocGenError, match="instruction formats"):
        env.run(datasets_per_chunk=3, reasoning="think")
    assert len(env.requests("generate")) == before


def test_batch_parts_are_registered_each_and_load_as_one_split(env: Env, dataset_id: str) -> None:
    counts = split_counts(env, dataset_id, negatives=False)
    files, _ = export_dataset(env.rm, dataset_id, data_dir=env.data, output_dir="parts", format_type="alpaca",
                              batch_size=5)
    folder = files[0].parent
    parts = sorted(p.name for p in folder.glob("train_part*.alpaca.jsonl"))
    # batches of 5 entries, negatives then left out of each
    assert len(parts) == -(-split_counts(env, dataset_id)["train"] // 5) > 1
    info = json.loads((folder / DATASET_INFO).read_text())
    parts = [p for p in parts if (folder / p).stat().st_size]  # a part of negatives alone is empty: not a dataset
    assert {f"alpaca_{p.split('.')[0]}" for p in parts} <= set(info)
    assert all(info[f"alpaca_{p.split('.')[0]}"]["file_name"] == p for p in parts)
    loaded = hf(folder)
    assert {s: loaded[s].num_rows for s in SPLITS} == counts  # the parts of a split are that split
