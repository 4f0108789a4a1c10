"""GET /api/v1/openapi.json (made from the routes' declarations) and GET /api/v1/health."""

from __future__ import annotations

from typing import Any

import falcon

from api.context import Context
from api.media import encode
from api.schemas import Health
from api.spec import operation


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

    @operation("The server is up: the log's last seq and whether its job worker runs", response=Health,
               tags=("meta",))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        rm = self.ctx.model()
        worker = self.ctx.worker
        resp.media = Health(status="ok", seq=rm.seq, jobs_running=worker.running, worker=worker.enabled,
                            simulated=self.ctx.simulator_url is not None)
