"""Helpers several test modules share (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import EncryptionMethod

from dsetlog.store.events import Event
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel


def make_pdf(path: Path, pages: list[str], **encryption: object) -> Path:
    """A PDF with one page of text per item of pages; encryption: fpdf2's set_encryption arguments (RC4)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if encryption:
        pdf.set_encryption(encryption_method=EncryptionMethod.RC4, **encryption)
    pdf.output(str(path))
    return path


def make_image_pdf(path: Path) -> Path:
    """A PDF with a filled rectangle and no text layer, like a scan."""
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 60, style="F")
    pdf.output(str(path))
    return path


def append(data: Path, *events: Event) -> range:
    """Append events to the log in data as one batch; their seqs."""
    with EventLog.in_dir(data) as log:
        return log.append_many(events)


def catch_up_in_pieces(data: Path, events: list[Event], cuts: list[int], snap_at: int) -> ReadModel:
    """A read model of data caught up after each piece of events is appended, the pieces ending at the
    cuts (those within events) and at snap_at (at most len(events)), where a snapshot is saved."""
    live = ReadModel.open(data)
    bounds = sorted({0, snap_at, len(events), *(c for c in cuts if c < len(events))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        append(data, *events[lo:hi])
        live.catch_up()
        if hi == snap_at:
            live.save_snapshot()
    return live


def three_ways(data: Path, events: list[Event], cuts: list[int], snap_at: int) -> tuple[ReadModel, ...]:
    """The same events folded three ways, which every projection must agree on: (rebuilt from scratch,
    caught up in pieces with a snapshot saved at snap_at, opened from that snapshot plus the tail)."""
    live = catch_up_in_pieces(data, events, cuts, snap_at)
    scratch = ReadModel.open(data, use_snapshot=False)
    from_snapshot = ReadModel.open(data)
    assert from_snapshot.snapshot_used == (snap_at > 0)
    return scratch, live, from_snapshot


def wait_status(client: Any, job_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """A job's status once ``ok`` holds of it, polled through a falcon TestClient."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.simulate_get(f"/api/v1/datasets/generate/{job_id}/status").json
        if ok(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {status}")


def wait_job(client: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """A job's status once it has ended (completed or failed)."""
    return wait_status(client, job_id, lambda s: s["status"] in ("completed", "failed"), timeout)


def cancel_batch_job(client: Any, job_id: str) -> dict[str, Any]:
    """Cancel a batch job (POST /jobs/{job_id}/cancel) and wait for its batch to end cancelled; its status."""
    resp = client.simulate_post(f"/api/v1/jobs/{job_id}/cancel", json={"reason": "enough"})
    assert resp.status_code == 200 and resp.json["cancelled"], resp.json
    status = wait_status(client, job_id, lambda s: all(b["ended"] for b in s["batches"]))
    assert status["status"] == "failed" and status["error"] == "cancelled: enough"
    [batch] = status["batches"]
    assert batch["status"] == "cancelled" and status["estimated_completion"] is None
    return status


def dataset_of(client: Any, markdown: str, **fields: Any) -> tuple[str, list[str]]:
    """A dataset generated online through a falcon TestClient from one markdown document (``fields``: more of
    POST /datasets/generate's): its id and its entries' ids in position order."""
    api = "/api/v1"
    project = client.simulate_post(f"{api}/projects", json={"name": "med"}).json
    resp = client.simulate_post(f"{api}/projects/{project['id']}/documents",
                                json={"filename": "notes.md", "content": markdown, "strategy": "markdown"})
    assert resp.status_code == 201, resp.text
    resp = client.simulate_post(f"{api}/datasets/generate", json={"project_id": project["id"], **fields})
    status = wait_job(client, resp.json["job_id"])
    assert status["status"] == "completed", status
    dataset_id = status["result"]["dataset_id"]
    page = client.simulate_get(f"{api}/datasets/{dataset_id}/entries",
                               params={"sort_by": "position", "per_page": 1000}).json
    return dataset_id, [e["id"] for e in page["entries"]]


def regenerate(client: Any, dataset_id: str, entry_ids: list[str], **fields: Any) -> str:
    """POST /datasets/{dataset_id}/regenerate of these entries (a new revision made current whatever it scores;
    ``fields``: more of the request's); the job's id."""
    resp = client.simulate_post(f"/api/v1/datasets/{dataset_id}/regenerate", json={
        "entry_ids": entry_ids, "regeneration_config": {"temperature": 0.4, "max_tokens": 300, "accept_lower": True},
        **fields})
    assert resp.status_code == 200, resp.text
    return resp.json["job_id"]
