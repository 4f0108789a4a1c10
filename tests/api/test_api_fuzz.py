"""Schemathesis against the API's own OpenAPI document: every operation, schemathesis's full default check set
(not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
response_headers_conformance, positive_data_acceptance, negative_data_rejection, missing_required_header,
use_after_free, ensure_resource_availability, ignored_auth, unsupported_method, ...), on data that fits the
document and data that does not: what the document says is what the server does.

The app serves a data dir holding a project with a document, a dataset with entries and splits, a
prompt and a job, and path parameters are drawn either freely or from those ids, so the generated
requests reach real objects as well as 404s. The worker is off: generation requests are accepted and
left pending. The number of examples per operation is bounded so the whole run takes seconds.

Rules that JSON Schema cannot state (one field against another: split_ratios summing to 1, a benchmark suite
that exists when benchmarks run, versioning with a name, questions in answer mode only, an edit giving at least one
field and a restored revision none, a restored revision_seq that is one of the entry's revisions, export
options the format can carry, a document as
content or content_base64 and chunking that fits, sibling categories with different names, an output_dir
inside the data dir, a batch_fallback only with batch) are in the operations' descriptions; a body breaking one, refused, is
no mismatch (``filter_failure``). A body over the
server's size limit is refused with 413, which the document declares for every body.
"""

from __future__ import annotations

import base64
import binascii
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
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi.checks import RejectedPositiveData

from api import create_app
from dsetlog.catalog.documents import resolve_chunking
from dsetlog.catalog.errors import IngestError
from dsetlog.catalog.extract import MEDIA_TYPES
from dsetlog.errors import DsetError
from dsetlog.evaluation.scoring import check_suite
from dsetlog.export.options import DEFAULT_CONTEXT, DEFAULT_REASONING, ExportError, ExportOptions
from dsetlog.generation.batching import check_batch_fields
from dsetlog.generation.requests import GenerateRequest
from dsetlog.paths import OutputDirError, export_dir
from dsetlog.store.events import (
    DatasetCreated,
    EntryGenerated,
    EntryRegenerated,
    EntryScored,
    EvaluationSetsCreated,
    SlotQueued,
)
from dsetlog.store.log import EventLog, records_at

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
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "404", "405", "409", "413", "415", "422"]}}})
schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", APP, config=CONFIG)


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


def _sibling_names_clash(categories: Any) -> bool:
    if not isinstance(categories, list):
        return False
    seen: set[str] = set()
    for c in categories:
        name = c if isinstance(c, str) else c.get("name") if isinstance(c, dict) else None
        if not isinstance(name, str):
            continue
        key = name.strip().casefold()
        if not key or key in seen or " > " in name:
            return True
        seen.add(key)
        if isinstance(c, dict) and _sibling_names_clash(c.get("children")):
            return True
    return False


def _is_base64(text: Any) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    return True


def _chunking_refused(body: dict[str, Any]) -> bool:
    try:
        resolve_chunking(body.get("strategy") or "paragraphs", body.get("chunk_size"), body.get("overlap"))
    except IngestError:
        return True
    return False


def _document_refused(body: dict[str, Any]) -> bool:
    """Exactly one of content and content_base64; an extension with an extractor, and bytes it can read (only
    text is drawn: a random PDF or DOCX is refused as what it is); chunking settings that fit."""
    given = [body.get(k) is not None for k in ("content", "content_base64")]
    if given.count(True) != 1 or _chunking_refused(body):
        return True
    suffix = Path(str(body.get("filename", ""))).suffix.lower()
    if suffix not in MEDIA_TYPES or suffix in (".pdf", ".docx"):
        return True
    return body.get("content_base64") is not None and not _is_base64(body["content_base64"])


def _export_refused(fields: dict[str, Any]) -> bool:
    """Export options the format asked for cannot carry (reasoning or context for a full format, a BOM but no
    csv): ExportOptions.check, the server's own rule."""
    bom = fields.get("csv_bom", False)
    try:
        ExportOptions(reasoning=str(fields.get("reasoning") or DEFAULT_REASONING),
                      context=str(fields.get("context") or DEFAULT_CONTEXT),
                      csv_bom=bom is True or str(bom).lower() == "true",
                      ).check([str(fields.get("format_type") or "jsonl")])
    except ExportError:
        return True
    return False


def _batch_refused(body: dict[str, Any]) -> bool:
    """A batch_fallback without batch: check_batch_fields, the server's own rule (batch_poll's is in the schema)."""
    try:
        check_batch_fields(body.get("batch") is True, str(body.get("batch_fallback", "none")), 5.0)
    except ValueError:
        return True
    return False


def breaks_a_rule(path: str, method: str, body: Any, query: Any = None) -> bool:
    """Does this body (or query) break a rule between fields (see the module's docstring)?"""
    if not isinstance(body, dict):
        body = {}  # no body (NOT_SET): the fields' defaults; valid data is never another JSON type here
    if path.endswith(("/generate", "/generate-evaluation", "/regenerate")) and _batch_refused(body):
        return True
    if path.endswith("/download"):
        return _export_refused(query if isinstance(query, dict) else {})
    if path.endswith(("/generate", "/generate-evaluation")):
        if _export_refused(body):
            return True
        for name, check in GenerateRequest.refused_fields.items():  # output_dir: inside the data dir
            try:
                check(body[name]) if isinstance(body.get(name), str) else None
            except (DsetError, ValueError):
                return True
        if isinstance(body.get("output_dir"), str):  # and a folder the server may write (dsetlog.paths)
            try:
                export_dir(APP.ctx.data_dir, body["output_dir"])
            except OutputDirError:
                return True
        if body.get("run_benchmarks") is True:  # the suite is checked when it is run
            try:
                check_suite(str(body.get("benchmark_suite", "glue")))
            except ValueError:
                return True
        if (body.get("enable_versioning") is True and not body.get("dataset_name")) or (
                body.get("taxonomy_project") is not None and body.get("taxonomy_name") is None):
            return True
        if body.get("questions") and body.get("generation_mode", "default") != "answer":
            return True  # questions are what answer mode answers
        ratios = body.get("split_ratios")
        return isinstance(ratios, list) and (
            len(ratios) != 3 or not all(isinstance(r, (int, float)) and r >= 0 for r in ratios)
            or abs(sum(ratios) - 1) > 1e-6)
    if method == "put" and path.endswith("/entries/{entry_id}"):
        if body.get("revision_seq") is not None:  # a whole revision made current, or an edit: not both
            return any(body.get(k) is not None for k in ("question", "answer", "category"))
        return all(body.get(k) is None for k in ("question", "answer", "category", "feedback"))
    if path.endswith("/documents"):
        return _document_refused(body)
    if path.endswith("/chunk"):
        return _chunking_refused(body)
    if path.endswith("/taxonomy/"):
        return _sibling_names_clash(body.get("categories"))
    return False


def names_no_revision(case: Any) -> bool:
    """A restored revision_seq must be the seq of one of the entry's EntryGenerated or EntryRegenerated events:
    a reference into the log, which a schema cannot state."""
    seq = case.body.get("revision_seq") if isinstance(case.body, dict) else None
    if seq is None or not case.operation.path.endswith("/entries/{entry_id}"):
        return False
    params = case.path_parameters or {}
    entry = APP.ctx.rm.datasets.entry(str(params.get("dataset_id")), str(params.get("entry_id")))
    if entry is None or seq not in entry.history:
        return True
    (rec,) = records_at(APP.ctx.data_dir, [seq])
    return not isinstance(rec.event, (EntryGenerated, EntryRegenerated))


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """A valid-looking body refused for breaking a rule between fields is no mismatch: the rule is documented."""
    return not (isinstance(failure, RejectedPositiveData)
                and (breaks_a_rule(case.operation.path, case.method.lower(), case.body, case.query)
                     or names_no_revision(case)))


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate()
