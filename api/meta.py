"""GET /api/v1/openapi.json (made from the routes' declarations) and GET /api/v1/health."""

from __future__ import annotations

from typing import Any

import falcon
import msgspec

from api.context import Context
from api.media import encode
from api.schemas import Health
from api.spec import operation
from dsetlog.store.check import LogCheckStatus
from projections.skipped import SkippedRecord


class LogHealth(msgspec.Struct):
    """Whether the log may be written: its check, and the records that passed their checksum but were not folded."""

    check: LogCheckStatus  # "checking" (a start-up from a snapshot checks the log in the background), "ok", "corrupt"
    writable: bool  # False while checking (writes wait for it) and when corrupt (writes are refused: see check.error)
    skipped_records: int  # records the read model could not fold (logged on the server; see projections.readmodel)
    skipped: list[SkippedRecord] = []  # the first of them


class SearchIndexHealth(msgspec.Struct):
    """The search index (projections.search): ``indexed`` bytes of the log's ``log_bytes`` (the rest is searched by
    reading its texts); ``off`` when it cannot be kept here (a read-only or full disk: searches read every text)."""

    indexed: int
    log_bytes: int
    off: bool = False


class HealthStatus(Health):
    """Health, with the log's state. ``status``: "ok"; "checking" while the log is being checked (reads are
    served, writes wait); "corrupt" when it is (reads are served, writes refused until `dset log repair`)."""

    log: LogHealth | None = None
    search_index: SearchIndexHealth | None = None


class OpenAPIResource:
    """Serves the document made from the routes, this one included (set once the routes are known)."""

    def __init__(self) -> None:
        self._body = b"{}"

    def set_document(self, document: dict[str, Any]) -> None:
        self._body = encode(document)

    @operation("This API's OpenAPI 3.1 document", tags=("meta",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class HealthResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation("The server is up: the log's last seq, whether it may be written, whether its job worker runs",
               response=HealthStatus, tags=("meta",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        rm = self.ctx.model()
        worker = self.ctx.worker
        check = rm.verification()
        log = LogHealth(check=check, writable=check.state == "ok", skipped_records=rm.skipped_count,
                        skipped=rm.skipped[:10])
        index = rm.search_index()
        search = SearchIndexHealth(indexed=min(index.known_reach, rm.offset), log_bytes=rm.offset, off=index.off)
        resp.media = HealthStatus(status=check.state, seq=rm.seq, jobs_running=worker.running,
                                  worker=worker.enabled, simulated=self.ctx.simulator_url is not None, log=log,
                                  search_index=search)
