"""What the guide's code needs of the API's surface: big pages, an integer parameter_id, four job states,
plain-string taxonomies at every depth, unknown query parameters refused, integral floats as integers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon
import pytest
from falcon import testing

from api.schemas import MAX_PER_PAGE, Query
from api.spec import operation
from dsetlog.store.events import (
    DatasetCreated,
    EntryGenerated,
    EntryScored,
    Event,
    ParametersSaved,
    SlotQueued,
)
from dsetlog.store.log import EventLog

API = "/api/v1"
DS = "dataset_big"
BIG = 1_200


def _seed(data: Path, n: int) -> None:
    events: list[Event] = [DatasetCreated(dataset_id=DS, name="big", kind="documents")]
    for i in range(n):
        events += [SlotQueued(dataset_id=DS, item_id=f"slot_{i}", chunk_id="chunk_x", slot=i),
                   EntryGenerated(dataset_id=DS, item_id=f"slot_{i}", entry_id=f"entry_{i:05d}",
                                  question=f"Q{i}?", answer=f"A{i}.", source_chunk="chunk_x"),
                   EntryScored(dataset_id=DS, entry_id=f"entry_{i:05d}", quality_score=(i % 10) / 10)]
    with EventLog.in_dir(data) as log:
        log.append_many(events)


@pytest.fixture
def big(data: Path, make_client: Callable[..., testing.TestClient]) -> testing.TestClient:
    _seed(data, BIG)
    return make_client()


def _error(resp: Any, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert set(resp.json) == {"title", "description"}, resp.json
    for word in words:
        assert word in resp.json["description"], (word, resp.json)
    return resp.json


def test_the_guides_per_page_1000_and_up_to_the_cap(big: testing.TestClient) -> None:
    page = big.simulate_get(f"{API}/datasets/{DS}/entries", params={"per_page": 1000}).json
    assert len(page["entries"]) == 1000 and page["total"] == BIG and page["pages"] == 2
    scores = [e["quality_score"] for e in page["entries"]]
    assert scores == sorted(scores, reverse=True)
    whole = big.simulate_get(f"{API}/datasets/{DS}/entries", params={"per_page": MAX_PER_PAGE,
                                                                     "sort_by": "position"}).json
    assert [e["id"] for e in whole["entries"]] == [f"entry_{i:05d}" for i in range(BIG)]
    _error(big.simulate_get(f"{API}/datasets/{DS}/entries", params={"per_page": MAX_PER_PAGE + 1}), 422,
           "per_page")
    assert MAX_PER_PAGE == 10_000


def test_a_big_page_is_streamed_in_pieces_and_says_the_same_as_small_ones(big: testing.TestClient) -> None:
    """Over STREAM_OVER entries the page is sent a piece at a time, with its length known: the same JSON, field
    for field, as the pages of 500 that cover it."""
    url, params = f"{API}/datasets/{DS}/entries", {"sort_by": "position"}
    streamed = big.simulate_get(url, params={**params, "per_page": 1000})
    assert streamed.status_code == 200 and streamed.headers["content-type"] == "application/json"
    assert int(streamed.headers["content-length"]) == len(streamed.content)
    small = [big.simulate_get(url, params={**params, "per_page": 500, "page": n}).json for n in (1, 2)]
    whole = streamed.json
    assert whole["entries"] == small[0]["entries"] + small[1]["entries"]
    assert {k: v for k, v in whole.items() if k not in ("entries", "per_page", "pages")} == \
        {k: v for k, v in small[0].items() if k not in ("entries", "per_page", "pages")}
    assert (whole["per_page"], whole["pages"]) == (1000, 2)
    last = big.simulate_get(url, params={**params, "per_page": 1000, "page": 2})  # 200 entries: one body
    assert [e["id"] for e in last.json["entries"]] == [f"entry_{i:05d}" for i in range(1000, BIG)]


def test_a_query_parameter_a_route_does_not_take_is_a_400_naming_it(big: testing.TestClient) -> None:
    body = _error(big.simulate_get(f"{API}/datasets/{DS}/download", params={"format": "alpaca"}), 400, "format")
    assert "format_type" in body["description"] and "as_of" in body["description"]  # what it takes
    body = _error(big.simulate_get(f"{API}/health", params={"verbose": "1"}), 400, "verbose", "takes none")
    both = _error(big.simulate_get(f"{API}/datasets/{DS}/entries", params={"perpage": "5", "sort": "quality"}),
                  400)["description"]
    assert "perpage" in both and "sort" in both and "per_page" in both and "sort_by" in both


def test_every_operation_refuses_an_unknown_query_parameter(big: testing.TestClient) -> None:
    """Every route of the document, from its own query Struct: the parameters it lists pass, others are 400."""
    doc = big.simulate_get(f"{API}/openapi.json").json
    checked = 0
    for path, methods in doc["paths"].items():
        url = re.sub(r"{\w+}", "x", path)
        for method, op in methods.items():
            takes = [p["name"] for p in op.get("parameters", ()) if p["in"] == "query"]
            resp = big.simulate_request(method.upper(), url, params={"not_a_parameter": "1"}, json={})
            _error(resp, 400, "not_a_parameter")
            for name in takes:
                assert name in resp.json["description"], (method, path, name)
            checked += 1
    assert checked == sum(len(m) for m in doc["paths"].values()) >= 30


class _Narrow(Query):
    page: int = 1


class _Wider(_Narrow):
    reasoning: bool = False  # as a helper adds a field to a route's query Struct


class _Probe:
    def __init__(self, query: type) -> None:
        @operation("probe", query=query)
        def on_get(self: Any, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {"message": repr(req.context.query)}

        self.on_get = on_get.__get__(self)


def test_a_field_added_to_a_query_struct_is_accepted_at_once() -> None:
    """The accepted names come from the Struct, never from a list of their own."""
    app = falcon.App()
    app.add_route("/narrow", _Probe(_Narrow))
    app.add_route("/wider", _Probe(_Wider))
    client = testing.TestClient(app)
    assert client.simulate_get("/wider", params={"reasoning": "true"}).json["message"] == repr(
        _Wider(reasoning=True))
    resp = client.simulate_get("/narrow", params={"reasoning": "true"})
    assert resp.status_code == 400 and "reasoning" in resp.text and "it takes page" in resp.text


def test_parameters_get_an_integer_id_and_are_found_by_it(client: testing.TestClient, data: Path) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    body = {"project_id": project, "purpose": "medical_qa_training", "audience": "medical_students",
            "dataset_format": "jsonl"}
    saved = client.simulate_post(f"{API}/datasets/parameters", json=body).json
    assert isinstance(saved["parameter_id"], int) and saved["parameter_id"] > 0
    assert saved["id"].startswith("params_") and saved["project_id"] == project
    with EventLog.in_dir(data) as log:
        (rec,) = [r for r in log.read() if isinstance(r.event, ParametersSaved)]
    assert rec.seq == saved["parameter_id"] and rec.event.parameter_id == saved["id"]
    second = client.simulate_post(f"{API}/datasets/parameters", json={**body, "domain": "medicine"}).json
    assert second["parameter_id"] > saved["parameter_id"]
    latest = client.simulate_get(f"{API}/datasets/parameters/{project}").json["parameters"]
    assert latest["parameter_id"] == second["parameter_id"] and latest["domain"] == "medicine"
    for key in (saved["parameter_id"], saved["id"]):  # an older save, by either of its ids
        old = client.simulate_get(f"{API}/datasets/parameters/{key}").json["parameters"]
        assert old["id"] == saved["id"] and old["domain"] == "general" and old["parameter_id"] == rec.seq
    _error(client.simulate_get(f"{API}/datasets/parameters/1"), 404, "'1'")  # seq 1 saved a project
    _error(client.simulate_get(f"{API}/datasets/parameters/999"), 404)


@pytest.fixture
def client(make_client: Callable[..., testing.TestClient]) -> testing.TestClient:
    return make_client()


def test_taxonomy_children_may_be_plain_names_at_every_level(client: testing.TestClient) -> None:
    project = client.simulate_post(f"{API}/projects", json={"name": "med"}).json["id"]
    categories = ["Cardiology", {"name": "Endocrinology", "children": [
        "Diabetes", {"name": "Thyroid", "children": ["Hypothyroidism", "Hyperthyroidism"]}]}]
    resp = client.simulate_post(f"{API}/taxonomy/", json={"project_id": project, "name": "med",
                                                          "categories": categories})
    assert resp.status_code == 201, resp.text
    assert resp.json["leaf_categories"] == ["Cardiology", "Endocrinology > Diabetes",
                                            "Endocrinology > Thyroid > Hypothyroidism",
                                            "Endocrinology > Thyroid > Hyperthyroidism"]
    assert resp.json["categories"][1]["children"][0] == {"name": "Diabetes", "description": "", "children": []}
    for bad, word in ((["A", {"name": "B", "children": [3]}], "children"),
                      ([{"name": "B", "children": ["x", "X"]}], "twice"),
                      ([{"name": "B", "children": ["  "]}], "children")):
        _error(client.simulate_post(f"{API}/taxonomy/", json={"project_id": project, "name": "t",
                                                              "categories": bad}), 422, word)


def test_integral_floats_are_integers_as_the_document_says(big: testing.TestClient) -> None:
    """JSON Schema's integer includes 1.0 (schemathesis sends it): the guide's rating 4 may come as 4.0."""
    resp = big.simulate_post(f"{API}/datasets/{DS}/feedback", json={"entry_ids": ["entry_00001"], "rating": 4.0})
    assert resp.status_code == 200, resp.text
    assert resp.json["entries"][0]["average_rating"] == 4.0
    _error(big.simulate_post(f"{API}/datasets/{DS}/feedback", json={"entry_ids": ["entry_00001"], "rating": 4.5}),
           422, "rating")
    _error(big.simulate_post(f"{API}/datasets/{DS}/feedback", json={"entry_ids": ["entry_00001"], "rating": "4"}),
           422, "rating")
    _error(big.simulate_post(f"{API}/datasets/{DS}/feedback", body=b'3 {"x"', headers={
        "Content-Type": "application/json"}), 400, "JSON")
