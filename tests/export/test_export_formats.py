"""The one list of export formats (dsetlog.export.formats.EXPORT_FORMATS) is what GET /export-formats
answers, what the review page offers and what export_dataset writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.download import ExportFormats, ExportFormatsResource
from api.spec import Route, openapi_document
from dsetlog.export.formats import EXPORT_FORMATS, EXPORT_SUFFIX, FORMATS

ROOT = Path(__file__).resolve().parents[2]
PATH = "/api/v1/export-formats"


def test_the_formats_endpoint_answers_the_one_list(make_client: Callable[..., Any]) -> None:
    client = make_client()
    if not any(r.path == PATH for r in client.app.routes):  # until api/app.py routes it
        client.app.add_route(PATH, ExportFormatsResource())
    resp = client.simulate_get(PATH)
    assert resp.status_code == 200
    assert resp.json == {"formats": [{"name": name, "media_type": FORMATS[name].media_type,
                                      "suffix": EXPORT_SUFFIX[name]} for name in EXPORT_FORMATS]}
    assert [f["name"] for f in resp.json["formats"]] == ["jsonl", "parquet", "csv", "alpaca", "sharegpt",
                                                         "openai-chat"]


def test_the_formats_endpoint_is_documented() -> None:
    doc = openapi_document([Route(PATH, ExportFormatsResource())], title="t", version="0")
    op = doc["paths"][PATH]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(ExportFormats.__name__)


def test_the_review_page_lists_no_format_itself() -> None:
    script = (ROOT / "api" / "static" / "app.js").read_text()
    assert "/export-formats" in script
    assert not any(f'"{name}"' in script for name in ("parquet", "sharegpt", "openai-chat", "alpaca"))
