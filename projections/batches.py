"""Batches: the provider batches each dataset sent its items through (``dset generate --batch``).

Folded in log order:

* an **upload** (BatchInputUploaded) is open until a BatchSubmitted names its input file (or a BatchFailed
  with no batch id does: none could be made of it): a run that died between the upload and the create finds
  it here, and looks its batch up on the provider;
* a **batch** (BatchSubmitted; a repeat for a known batch id changes nothing) is open until a
  BatchCompleted, BatchFailed, BatchExpired or BatchCancelled ends it; BatchProgress keeps its last status
  and counts. Ends are final: a later progress or end changes nothing.

An item held by an open upload or batch is not submitted again (:meth:`Batches.held`). Views are live objects
of the state: read them under ``ReadModel.lock`` and treat them as read-only.
"""

from __future__ import annotations

import msgspec

from dsetlog.store.events import (
    BatchCancelled,
    BatchCompleted,
    BatchExpired,
    BatchFailed,
    BatchInputUploaded,
    BatchProgress,
    BatchSubmitted,
)
from dsetlog.store.layout import Recorded
from projections.base import Projection, handles

ENDED_BY = {BatchCompleted: "completed", BatchFailed: "failed", BatchExpired: "expired", BatchCancelled: "cancelled"}


class UploadView(msgspec.Struct, gc=False, array_like=True):
    dataset_id: str
    input_file_id: str
    item_ids: list[str]
    model: str
    requests: int
    estimated_tokens: int
    uploaded_at: str
    submitted: bool = False


class BatchView(msgspec.Struct, gc=False, array_like=True):
    dataset_id: str
    batch_id: str
    input_file_id: str
    item_ids: list[str]
    model: str
    requests: int
    status: str  # the provider's last known status; completed | failed | expired | cancelled once ended
    submitted_at: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    ended: bool = False
    answered: int = 0  # entries read back from it
    run_id: str = ""
    estimated_tokens: int = 0  # its upload's estimate (for a budget, until its usage is read back)


class BatchesState(msgspec.Struct, array_like=True):
    uploads: list[UploadView]
    batches: list[BatchView]


class Batches(Projection):
    """Uploads and batches by dataset, in the order they were recorded (see the module's rules)."""

    name = "batches"
    version = 1
    state_type = BatchesState

    def __init__(self) -> None:
        super().__init__()
        self._uploads: dict[str, UploadView] = {}  # by input file id
        self._batches: dict[str, BatchView] = {}  # by batch id

    @handles(BatchInputUploaded)
    def _uploaded(self, rec: Recorded, ev: BatchInputUploaded) -> None:
        if ev.input_file_id not in self._uploads:
            self._uploads[ev.input_file_id] = UploadView(ev.dataset_id, ev.input_file_id, list(ev.item_ids), ev.model,
                                                         ev.requests, ev.estimated_tokens, rec.ts)

    @handles(BatchSubmitted)
    def _submitted(self, rec: Recorded, ev: BatchSubmitted) -> None:
        upload = self._uploads.get(ev.input_file_id)
        if upload is not None:
            upload.submitted = True
        if ev.batch_id not in self._batches:
            self._batches[ev.batch_id] = BatchView(ev.dataset_id, ev.batch_id, ev.input_file_id, list(ev.item_ids),
                                                   ev.model, ev.requests, ev.status or "validating", rec.ts,
                                                   total=ev.requests, run_id=ev.run_id,
                                                   estimated_tokens=upload.estimated_tokens if upload else 0)

    @handles(BatchProgress)
    def _progress(self, rec: Recorded, ev: BatchProgress) -> None:
        batch = self._batches.get(ev.batch_id)
        if batch is not None and not batch.ended:
            batch.status, batch.total, batch.completed, batch.failed = ev.status, ev.total, ev.completed, ev.failed

    @handles(BatchCompleted, BatchFailed, BatchExpired, BatchCancelled)
    def _ended(self, rec: Recorded, ev: BatchCompleted | BatchFailed | BatchExpired | BatchCancelled) -> None:
        if isinstance(ev, BatchFailed) and not ev.batch_id:  # no batch could be made of the upload
            upload = self._uploads.get(ev.input_file_id)
            if upload is not None:
                upload.submitted = True
            return
        batch = self._batches.get(ev.batch_id)
        if batch is None or batch.ended:
            return
        batch.status, batch.ended, batch.answered = ENDED_BY[type(ev)], True, ev.answered
        batch.total, batch.completed, batch.failed = ev.total or batch.total, ev.completed, ev.failed

    # -- reading -------------------------------------------------------------------------

    def batch(self, batch_id: str) -> BatchView | None:
        return self._batches.get(batch_id)

    def batches(self, dataset_id: str) -> list[BatchView]:
        """The dataset's batches, oldest first."""
        return [b for b in self._batches.values() if b.dataset_id == dataset_id]

    def open_batches(self, dataset_id: str) -> list[BatchView]:
        """The dataset's batches that have not ended, oldest first: a resumed run polls these."""
        return [b for b in self.batches(dataset_id) if not b.ended]

    def open_uploads(self, dataset_id: str) -> list[UploadView]:
        """The dataset's uploaded input files that no recorded batch was made of, oldest first."""
        return [u for u in self._uploads.values() if u.dataset_id == dataset_id and not u.submitted]

    def held(self, dataset_id: str) -> set[str]:
        """The items an open upload or batch of the dataset holds: not to be submitted again meanwhile."""
        held = {i for b in self.open_batches(dataset_id) for i in b.item_ids}
        held.update(i for u in self.open_uploads(dataset_id) for i in u.item_ids)
        return held

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_state(self) -> BatchesState:
        return BatchesState(list(self._uploads.values()), list(self._batches.values()))

    def load_snapshot_state(self, state: BatchesState) -> None:
        self._uploads = {u.input_file_id: u for u in state.uploads}
        self._batches = {b.batch_id: b for b in state.batches}
