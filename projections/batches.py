"""Batches: the provider batches each dataset sent its items through (``--batch``; ``batch: true``).

Folded in log order:

* an **upload** (BatchInputUploaded) is open until a BatchSubmitted names its input file (or a BatchFailed
  with no batch id does: none could be made of it): a run that died between the upload and the create finds
  it here, and looks its batch up on the provider;
* a **batch** (BatchSubmitted; a repeat for a known batch id changes nothing) is open until a
  BatchCompleted, BatchFailed, BatchExpired or BatchCancelled ends it; BatchProgress keeps its last status
  and counts. Ends are final: a later progress or end changes nothing.

An item held by an open upload or batch is not submitted again (:meth:`Batches.held`). Views are live objects
of the state: read them under ``ReadModel.lock`` and treat them as read-only.

**Owners.** A dataset's generation batches are the dataset's: any later run of it polls them and reads them back
(a command run again has a new run id). A regeneration's (the job a RegenerationRequested names) are that job's
alone (``owner`` its id): its custom ids are entries the dataset has already, which a generation run would read
back as answered and drop, and a generation's pending slots are no regeneration's to answer. Every reader takes
an ``owner``: "" (the default) for the dataset's own batches, a regeneration's job id for that job's.
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
    RegenerationRequested,
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
    owner: str = ""  # "" the dataset's; else the regeneration job whose alone it is (see the module's owners)


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
    owner: str = ""  # as UploadView's


class BatchesState(msgspec.Struct, array_like=True):
    uploads: list[UploadView]
    batches: list[BatchView]
    regenerations: list[str] = []  # job ids of the regenerations: the runs that own their batches


class Batches(Projection):
    """Uploads and batches by dataset, in the order they were recorded (see the module's rules)."""

    name = "batches"
    version = 2
    state_type = BatchesState

    def __init__(self) -> None:
        super().__init__()
        self._uploads: dict[str, UploadView] = {}  # by input file id
        self._batches: dict[str, BatchView] = {}  # by batch id
        self._regenerations: set[str] = set()

    @handles(RegenerationRequested)
    def _regeneration(self, rec: Recorded, ev: RegenerationRequested) -> None:
        self._regenerations.add(ev.job_id)  # recorded with the job's submission, before any batch of it

    @handles(BatchInputUploaded)
    def _uploaded(self, rec: Recorded, ev: BatchInputUploaded) -> None:
        if ev.input_file_id not in self._uploads:
            self._uploads[ev.input_file_id] = UploadView(ev.dataset_id, ev.input_file_id, list(ev.item_ids), ev.model,
                                                         ev.requests, ev.estimated_tokens, rec.ts,
                                                         owner=self.owner_of(ev.run_id))

    @handles(BatchSubmitted)
    def _submitted(self, rec: Recorded, ev: BatchSubmitted) -> None:
        upload = self._uploads.get(ev.input_file_id)
        if upload is not None:
            upload.submitted = True
        if ev.batch_id not in self._batches:
            self._batches[ev.batch_id] = BatchView(ev.dataset_id, ev.batch_id, ev.input_file_id, list(ev.item_ids),
                                                   ev.model, ev.requests, ev.status or "validating", rec.ts,
                                                   total=ev.requests, run_id=ev.run_id,
                                                   estimated_tokens=upload.estimated_tokens if upload else 0,
                                                   owner=self.owner_of(ev.run_id))

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

    def owner_of(self, run_id: str) -> str:
        """The owner of the batches this run submits: its own id for a regeneration, else "" (the dataset's)."""
        return run_id if run_id and run_id in self._regenerations else ""

    def batches(self, dataset_id: str, owner: str = "") -> list[BatchView]:
        """The dataset's batches of this owner, oldest first."""
        return [b for b in self._batches.values() if b.dataset_id == dataset_id and b.owner == owner]

    def open_batches(self, dataset_id: str, owner: str = "") -> list[BatchView]:
        """The dataset's batches of this owner that have not ended, oldest first: a resumed run polls these."""
        return [b for b in self.batches(dataset_id, owner) if not b.ended]

    def open_uploads(self, dataset_id: str, owner: str = "") -> list[UploadView]:
        """The dataset's uploaded input files of this owner that no recorded batch was made of, oldest first."""
        return [u for u in self._uploads.values()
                if u.dataset_id == dataset_id and u.owner == owner and not u.submitted]

    def held(self, dataset_id: str, owner: str = "") -> set[str]:
        """The items an open upload or batch of the dataset (of this owner) holds: not to be submitted again
        meanwhile."""
        held = {i for b in self.open_batches(dataset_id, owner) for i in b.item_ids}
        held.update(i for u in self.open_uploads(dataset_id, owner) for i in u.item_ids)
        return held

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_state(self) -> BatchesState:
        return BatchesState(list(self._uploads.values()), list(self._batches.values()), sorted(self._regenerations))

    def load_snapshot_state(self, state: BatchesState) -> None:
        self._uploads = {u.input_file_id: u for u in state.uploads}
        self._batches = {b.batch_id: b for b in state.batches}
        self._regenerations = set(state.regenerations)
