"""Schemathesis against the API's own OpenAPI document: no 5xx, and every response matches its declared
status codes, content type and schema.

The app serves a data dir holding a project with a document, a dataset with entries and splits, a
prompt and a job, and path parameters are drawn either freely or from those ids, so the generated
requests reach real objects as well as 404s. The worker is off: generation requests are accepted and
left pending. The number of examples per operation is bounded so the whole run takes seconds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from falcon import testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from dsetlog.store.events import (
    DatasetCreated,
    EntryGenerated,
    EntryScored,
    EvaluationSetsCreated,
    SlotQueued,
)
from dsetlog.store.log import EventLog

API = "/api/v1"
KNOWN: dict[str, list[str]] = {}


def _seed(data: Path) -> None:
    ds = "dataset_fuzz"
    events: list[Any] = [DatasetCreated(dataset_id=ds, name="fuzz", kind="documents")]
    for i in range(12):
        events += [SlotQueued(dataset_id=ds, item_id=f"slot_{i}", chunk_id="chunk_x", slot=i),
                   EntryGenerated(dataset_id=ds, item_id=f"slot_{i}", entry_id=f"entry_{i}", question=f"Q{i}?",
                                  answer=f"A{i}.", category="Cat" if i % 2 else "", source_chunk="chunk_x"),
                   EntryScored(dataset_id=ds, entry_id=f"entry_{i}", quality_score=i / 12, difficulty="beginner")]
    events.append(EvaluationSetsCreated(dataset_id=ds, seed=0, ratios=[0.8, 0.1, 0.1],
                                        splits={f"entry_{i}": ("train", "test")[i % 2] for i in range(12)}))
    with EventLog.in_dir(data) as log:
        log.append_many(events)
    KNOWN["dataset_id"] = [ds]
    KNOWN["entry_id"] = ["entry_0", "entry_5"]


def _app() -> Any:
    data = Path(tempfile.mkdtemp(prefix="dset-fuzz-")) / "data"
    _seed(data)
    app = create_app(data, start_worker=False, max_body=1 << 20)
    client = testing.TestClient(app)
    project = client.simulate_post(f"{API}/projects", json={"name": "fuzz"}).json["id"]
    doc = client.simulate_post(f"{API}/projects/{project}/documents",
                               json={"filename": "a.md", "content": "# A\n\nSome text.\n\n# B\n\nMore text."}).json
    prompt = client.simulate_post(f"{API}/prompts", json={"name": "p", "content": "{chunk}"}).json
    job = client.simulate_post(f"{API}/datasets/generate", json={"project_id": project, "classification_model":
                                                                "ollama", "parsing_model": "ollama",
                                                                "chunking_model": "ollama"}).json
    chunks = client.simulate_get(f"{API}/projects/{project}/documents/{doc['id']}/chunks").json["chunks"]
    KNOWN.update(project_id=[project, "fuzz"], document_id=[doc["id"]], prompt_id=[prompt["id"], "p"],
                 job_id=[job["job_id"]], chunk_id=[c["id"] for c in chunks])
    return app


# Loaded when the module is collected (schemathesis makes one test per operation from the document).
APP = _app()
schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _close_app() -> Iterator[None]:
    yield
    APP.close()
    shutil.rmtree(APP.ctx.data_dir.parent, ignore_errors=True)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, known ids instead of the generated ones."""
    known = {name: st.sampled_from(KNOWN[name]) for name in path_parameters or () if name in KNOWN}
    if not known:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.fixed_dictionaries({**{k: st.just(v) for k, v in
                                                                          path_parameters.items()}, **known}))


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
