"""The guide's Best Practices, as written, against the real app: what generation and scoring do.

Jobs run in the app's worker (falcon.testing) or as real `dset` processes, every model answered by the
simulator on loopback; each test names the guide's example it makes work and fails without the change:

* ``generation_mode: "answer"`` with no ``questions``: the questions a reader would ask of each chunk,
  answered from it (422 before);
* ``analyze_quality: false``: a numeric score from the structural checks, said so (``quality_analyzed``),
  so ``e['quality_score'] < min_quality`` works and the threshold applies (every score was null before);
* ``classification_model: "gemini"`` under ``--simulate``: the gemini profile's model, priced as gemini,
  labelled simulated (deepseek-reasoner and deepseek's price before);
* an improve-quality regeneration that scores lower is set aside, the better revision stays current, and
  the user can choose (``accept_lower``, PUT ``revision_seq``): the dataset's mean quality never drops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from harness import ROOT, Env, markdown
from helpers import wait_job

from dsetlog.llm.providers import PRICES, resolve, resolve_spec
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import EntryRegenerated, EntryScored, RevisionRestored
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

API = "/api/v1"


# --- helpers -------------------------------------------------------------------------------------------


@pytest.fixture
def client(make_client: Callable[..., testing.TestClient], simulator: Simulator) -> testing.TestClient:
    return make_client(simulator_url=simulator.base_url, start_worker=True)


def project(client: testing.TestClient, sections: int = 3) -> str:
    pid = client.simulate_post(f"{API}/projects", json={"name": "port"}).json["id"]
    resp = client.simulate_post(f"{API}/projects/{pid}/documents", json={
        "filename": "guide.md", "content": markdown(sections), "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    return pid


def generate(client: testing.TestClient, **body: Any) -> dict[str, Any]:
    resp = client.simulate_post(f"{API}/datasets/generate", json=body)
    assert resp.status_code == 200, resp.text
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed", status
    return status["result"]


def entries(client: testing.TestClient, dataset_id: str) -> list[dict[str, Any]]:
    page = client.simulate_get(f"{API}/datasets/{dataset_id}/entries", params={"per_page": 500,
                                                                              "sort_by": "position"})
    assert page.status_code == 200, page.text
    return page.json["entries"]


def regenerate(client: testing.TestClient, dataset_id: str, ids: list[str], **config: Any) -> dict[str, Any]:
    resp = client.simulate_post(f"{API}/datasets/{dataset_id}/regenerate",
                                json={"entry_ids": ids, "regeneration_config": config})
    assert resp.status_code == 200, resp.text
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed", status
    return status["result"]


def downloaded(client: testing.TestClient, dataset_id: str) -> list[dict[str, Any]]:
    resp = client.simulate_get(f"{API}/datasets/{dataset_id}/download", params={"format_type": "jsonl"})
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def user_prompt(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


# --- generation_mode "answer" without questions ----------------------------------------------------------


def test_answer_mode_without_questions_asks_the_readers_questions_of_each_chunk(
        client: testing.TestClient, simulator: Simulator, data: Path) -> None:
    pid = project(client, sections=3)
    result = generate(client, project_id=pid, generation_mode="answer", datasets_per_chunk=2)
    made = entries(client, result["dataset_id"])
    chunks = [{"id": c.id, "text": c.text} for c in ReadModel.open(data).projects.chunks(pid)]
    assert len(made) == 2 * len(chunks) == result["entries_count"]  # datasets_per_chunk per chunk
    assert {e["source_chunk"] for e in made} == {c["id"] for c in chunks}
    for e in made:
        assert e["question"].strip() and e["answer"].strip() and e["metadata"]["mode"] == "answer"
        assert e["quality"]["is_question"] == 1.0
    prompts = [user_prompt(b) for b in simulator.requests() if "reader" in user_prompt(b)]
    assert len(prompts) == len(chunks)  # one call per chunk writes and answers its questions
    assert all("Answer each of these" not in p and "answer each one from the text alone" in p for p in prompts)
    text = {c["id"]: c["text"] for c in chunks}
    assert any(e["answer"] in text[e["source_chunk"]] for e in made)  # answered from the text


def test_answer_mode_with_questions_stays_as_it_was(client: testing.TestClient) -> None:
    pid = project(client, sections=3)
    asked = ["When does the harbour open?", "What was the lighthouse built of?"]
    result = generate(client, project_id=pid, generation_mode="answer", questions=asked)
    assert [e["question"] for e in entries(client, result["dataset_id"])] == asked  # one each, as asked
    # the two templates of answer mode are not interchangeable: the wrong one is refused before anything runs
    for body, word in (({"questions": asked, "prompt_name": "reader_questions"}, "leave out"),
                       ({"prompt_name": "answer"}, "give")):
        resp = client.simulate_post(f"{API}/datasets/generate",
                                    json={"project_id": pid, "generation_mode": "answer", **body})
        assert resp.status_code == 400 and word in resp.json["description"], resp.text


def test_cli_answer_mode_without_questions(tmp_path: Path, simulator: Simulator) -> None:
    data = tmp_path / "data"
    doc = tmp_path / "guide.md"
    doc.write_text(markdown(2), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PYTHONPATH=str(ROOT), DSET_DATA_DIR=str(data))

    def dset(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dsetlog", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    assert dset("ingest", str(doc), "--project", "port", "--strategy", "markdown").returncode == 0
    proc = dset("datasets", "generate", "--project", "port", "--simulate", "--generation-mode", "answer",
                "--datasets-per-chunk", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    dataset_id = proc.stdout.split("dataset ", 1)[1].split()[0]
    rm = ReadModel.open(data)
    made = rm.full(rm.datasets.entries(dataset_id))
    assert len(made) == 2 * 2 and all(e.question and e.answer for e in made)


# --- analyze_quality: false --------------------------------------------------------------------------------


def test_analyze_quality_false_keeps_a_structural_score_and_the_guides_filter_works(
        client: testing.TestClient, simulator: Simulator) -> None:
    pid = project(client, sections=4)
    result = generate(client, project_id=pid, analyze_quality=False, quality_threshold=0.6,
                      judge_model="simulated:judge-model", datasets_per_chunk=2)
    made = entries(client, result["dataset_id"])
    assert made and not [b for b in simulator.requests() if b["model"] == "judge-model"]  # nothing costly
    structural = {"non_empty", "length_ok", "no_refusal", "is_question", "not_copy"}
    for e in made:
        assert isinstance(e["quality_score"], float) and 0.0 <= e["quality_score"] <= 1.0
        assert e["quality_analyzed"] is False and set(e["quality"]) <= structural and e["quality"]
        assert e["below_threshold"] == (e["quality_score"] < 0.6)
    min_quality = 0.7
    low = [e for e in made if e["quality_score"] < min_quality]  # the guide's own line: a TypeError before
    assert len(low) == sum(e["quality_score"] < 0.7 for e in made)
    assert len(downloaded(client, result["dataset_id"])) == sum(not e["below_threshold"] for e in made)
    assert result["quality_summary"]["average_score"] is not None
    schemas = client.simulate_get(f"{API}/openapi.json").json["components"]["schemas"]
    assert schemas["Entry"]["properties"]["quality_analyzed"]["type"] == "boolean"  # declared: the document shows it
    # and the ways to choose between revisions (tests below)
    assert "set_aside" in schemas["Entry"]["properties"] and "SetAsideRevision" in schemas
    assert "revision_seq" in schemas["EntryEdit"]["properties"]
    assert schemas["RegenerationConfig"]["properties"]["accept_lower"]["type"] == "boolean"


def test_a_later_run_with_analysis_analyses_what_was_scored_structurally(env: Env) -> None:
    env.project_md(3)
    first = env.run(datasets_per_chunk=2, analyze_quality=False)
    assert all(not e.quality_analyzed and "groundedness" not in e.quality for e in env.entries(first.dataset_id))
    again = env.run(datasets_per_chunk=2, analyze_quality=True)  # the same dataset: analyze_quality is no content
    assert again.dataset_id == first.dataset_id
    assert all(e.quality_analyzed and "groundedness" in e.quality for e in env.entries(first.dataset_id))


@pytest.fixture
def env(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Iterator[Env]:
    made = Env(tmp_path / "env", make_simulator(request_log=5000))
    yield made
    made.log.close()


# --- classification_model "gemini" under --simulate ---------------------------------------------------------


def test_simulate_keeps_the_profile_asked_for_and_its_price(env: Env) -> None:
    env.project_md(2)
    result = env.run(datasets_per_chunk=2, classification_model="gemini")
    made = env.entries(result.dataset_id)
    assert {e.model for e in made} == {"gemini-2.5-flash"}  # not deepseek-reasoner
    assert {e.provider for e in made} == {"simulated"} and all(e.simulated for e in made)
    assert {e.metadata["profile"] for e in made} == {"gemini"}
    writer = [b for b in env.sim.requests() if "question-answer pairs" in user_prompt(b)]
    assert writer and {b["model"] for b in writer} == {"gemini-2.5-flash"}
    tokens_in = sum(e.prompt_tokens for e in made)
    tokens_out = sum(e.completion_tokens for e in made)
    price_in, price_out = PRICES["gemini-2.5-flash"]
    # the run's cost counts every call (titles too): at gemini's prices, not deepseek's
    assert result.cost >= (tokens_in * price_in + tokens_out * price_out) / 1e6 * 0.99
    deepseek_in, deepseek_out = PRICES["deepseek-reasoner"]
    assert result.cost < (result.prompt_tokens * deepseek_in + result.completion_tokens * deepseek_out) / 1e6


def test_simulate_never_sends_to_the_profiles_url_or_key() -> None:
    env = {"GEMINI_API_KEY": "sk-real-gemini-key-0123456789", "GEMINI_BASE_URL": "https://example.invalid/v1",
           "GEMINI_MODEL": "gemini-2.5-pro"}
    sim = "http://127.0.0.1:9/v1"
    p = resolve("gemini", env=env, simulator_url=sim)
    assert (p.profile, p.base_url, p.model, p.api_key, p.simulated) == ("simulated", sim, "gemini-2.5-pro",
                                                                        "simulated", True)
    assert p.named == "gemini" and p.price() == PRICES["gemini-2.5-pro"] and "simulated" in p.describe()
    assert resolve_spec("openai:gpt-4o", env={}, simulator_url=sim).model == "gpt-4o"
    assert resolve_spec("simulated:judge-model", env={}, simulator_url=sim).named == "simulated"
    # a bare model name goes to its family's profile (the guide's "gemini-2.5-flash"), else to deepseek's
    flash = resolve_spec("gemini-2.5-flash", env={}, simulator_url=sim)
    assert (flash.named, flash.model, flash.price()) == ("gemini", "gemini-2.5-flash", PRICES["gemini-2.5-flash"])
    assert resolve_spec("gpt-4o", env={}, simulator_url=sim).named == "openai"
    assert resolve_spec("my-finetune", env={}, simulator_url=sim).named == "deepseek"
    assert resolve("deepseek", env={}, simulator_url=sim).model == "deepseek-reasoner"  # dset generate's default


# --- a regeneration that scores lower ------------------------------------------------------------------------


def test_a_lower_scoring_regeneration_is_set_aside_and_the_user_can_choose(
        client: testing.TestClient, data: Path) -> None:
    pid = project(client, sections=3)
    dataset_id = generate(client, project_id=pid, datasets_per_chunk=2)["dataset_id"]
    before = entries(client, dataset_id)
    mean_before = client.simulate_get(f"{API}/datasets/{dataset_id}").json["quality_summary"]["average_score"]
    # the guide's improve_low_quality_entries, on every entry: a one-token answer is the worse revision
    result = regenerate(client, dataset_id, [e["id"] for e in before], improve_quality=True, max_tokens=1)
    after = {e["id"]: e for e in entries(client, dataset_id)}
    assert result["set_aside"] and set(result["set_aside"]) == set(result["scored_lower"])
    assert "set aside" in result["message"]
    mean_after = client.simulate_get(f"{API}/datasets/{dataset_id}").json["quality_summary"]["average_score"]
    assert mean_after >= mean_before  # the better revisions stayed current

    target = next(e for e in before if e["id"] in result["set_aside"])
    kept = after[target["id"]]
    assert (kept["answer"], kept["revision"], kept["quality_score"]) == (target["answer"], target["revision"],
                                                                        target["quality_score"])
    aside = kept["set_aside"]
    assert aside["job_id"] == result["job_id"] and aside["quality_score"] < aside["replaced_score"]
    with EventLog.in_dir(data) as log:
        recs = [r for r in log.read() if getattr(r.event, "entry_id", None) == target["id"]]
    regen = next(r for r in recs if isinstance(r.event, EntryRegenerated))
    assert regen.seq == aside["seq"] and regen.event.current is False
    assert not [r for r in recs if isinstance(r.event, EntryScored) and r.seq > regen.seq]  # not scored as current

    # the user chooses the set-aside revision: it becomes current, scored, recorded
    url = f"{API}/datasets/{dataset_id}/entries/{target['id']}"
    chosen = client.simulate_put(url, json={"revision_seq": aside["seq"]})
    assert chosen.status_code == 200, chosen.text
    now = chosen.json["entry"]
    assert now["answer"] == regen.event.answer and now["revision"] == target["revision"] + 1
    assert now["set_aside"] is None and now["quality_score"] == pytest.approx(aside["quality_score"])
    # ... and back to the first revision, named by the seq of its EntryGenerated
    history = client.simulate_get(f"{API}/entries/{dataset_id}/{target['id']}/history").json["events"]
    first = next(h["seq"] for h in history if h["type"] == "EntryGenerated")
    back = client.simulate_put(url, json={"revision_seq": first}).json["entry"]
    assert back["answer"] == target["answer"] and back["quality_score"] == target["quality_score"]
    with EventLog.in_dir(data) as log:
        restored = [r.event for r in log.read() if isinstance(r.event, RevisionRestored)]
    assert [r.seq for r in restored] == [aside["seq"], first]
    scored = next(h for h in history if h["type"] == "EntryScored")["seq"]
    for bad in (scored, 10**6):
        resp = client.simulate_put(url, json={"revision_seq": bad})
        assert resp.status_code == 422 and "not a revision" in resp.json["description"], resp.text
    resp = client.simulate_put(url, json={"revision_seq": first, "answer": "both"})
    assert resp.status_code == 422 and "revision_seq" in resp.json["description"]


def test_a_rebuild_from_the_log_gives_the_same_choice(client: testing.TestClient, data: Path,
                                                      make_client: Callable[..., testing.TestClient],
                                                      simulator: Simulator) -> None:
    pid = project(client, sections=2)
    dataset_id = generate(client, project_id=pid, datasets_per_chunk=2)["dataset_id"]
    ids = [e["id"] for e in entries(client, dataset_id)]
    result = regenerate(client, dataset_id, ids, max_tokens=1)
    assert result["set_aside"]
    live = entries(client, dataset_id)
    client.app.close()  # type: ignore[attr-defined]
    for snapshot in (data / "snapshots").glob("*"):
        snapshot.unlink()
    rebuilt = make_client(simulator_url=simulator.base_url)
    assert entries(rebuilt, dataset_id) == live


def test_accept_lower_makes_the_new_revision_current_and_says_it_scored_lower(client: testing.TestClient) -> None:
    pid = project(client, sections=2)
    dataset_id = generate(client, project_id=pid, datasets_per_chunk=2)["dataset_id"]
    before = {e["id"]: e for e in entries(client, dataset_id)}
    result = regenerate(client, dataset_id, list(before), max_tokens=1, accept_lower=True)
    assert result["scored_lower"] and not result["set_aside"]
    for entry_id in result["scored_lower"]:
        now = client.simulate_get(f"{API}/datasets/{dataset_id}/entries/{entry_id}").json
        assert now["revision"] == before[entry_id]["revision"] + 1 and now["set_aside"] is None
        assert now["quality_score"] < before[entry_id]["quality_score"]


# --- groundedness and the judge ---------------------------------------------------------------------------


def test_a_judge_cannot_lift_an_answer_with_nothing_from_its_chunk() -> None:
    from dsetlog.generation.judging import final_score

    comps = {"non_empty": 1.0, "no_refusal": 1.0, "length_ok": 1.0, "is_question": 1.0, "not_copy": 1.0,
             "groundedness": 0.0}
    alone = final_score(comps, duplicate=False, judge=None)
    assert final_score(comps, duplicate=False, judge=5) == alone < 0.7  # below the default threshold
    assert final_score(comps, duplicate=False, judge=1) < alone  # the judge may still lower it
    grounded = {**comps, "groundedness": 0.5}
    assert final_score(grounded, duplicate=False, judge=5) > final_score(grounded, duplicate=False, judge=None)
