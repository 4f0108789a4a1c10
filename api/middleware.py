"""Middleware: the bearer token, the body's size and depth, and whether the log may be written, checked before
any resource runs."""

from __future__ import annotations

import hmac
import io
from typing import TYPE_CHECKING, Any

import falcon

from api.errors import too_large, unprocessable
from dsetlog.store.errors import LogError
from dsetlog.store.limits import MAX_BODY_DEPTH, deeper_than

if TYPE_CHECKING:
    from api.context import Context

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthMiddleware:
    """With a token configured, every request needs ``Authorization: Bearer <token>`` (constant-time check).

    ``public``: paths any GET or HEAD may read without it: the review page's own files (``/`` and
    ``/static/...``), which hold no data and are what lets a browser ask its user for the token. Every API
    route, the OpenAPI document included, needs the token.
    """

    def __init__(self, token: str, *, public: tuple[str, ...] = ("/", "/static/")) -> None:
        self._expected = ("Bearer " + token).encode()
        self._public_exact = {p for p in public if not p.endswith("/") or p == "/"}
        self._public_prefixes = tuple(p for p in public if p.endswith("/") and p != "/")

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.path
        if req.method in ("GET", "HEAD") and ".." not in path and (
                path in self._public_exact or path.startswith(self._public_prefixes)):
            return
        given = (req.get_header("Authorization") or "").strip().encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._expected):
            raise falcon.HTTPUnauthorized(
                title="Unauthorized",
                description="send the server's API token as `Authorization: Bearer <token>` (DSET_API_TOKEN)",
                challenges=['Bearer realm="dset"'],
            )


class BodyLimitMiddleware:
    """A body over ``max_body`` bytes is refused with 413 before it is read."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.max_body = self.max_body
        length = req.content_length
        if length is not None and length > self.max_body:
            raise too_large(f"the body ({length} bytes) is over the server's limit of {self.max_body} bytes")

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        resp.set_header("Cache-Control", "no-store")


def _is_json(req: falcon.Request) -> bool:
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    return not ctype or ctype == "application/json" or ctype.endswith("+json")  # no type: read as JSON too


class JSONDepthMiddleware:
    """A JSON body nested more than ``max_depth`` levels (objects and arrays) is refused with 422 before any
    resource or hook reads it, for every route: nothing it would make can reach the log (see dsetlog.store.limits).

    The body is read here (within the size limit, which :class:`BodyLimitMiddleware` checked first) and put
    back as the request's input, so the resource reads the same bytes.
    """

    def __init__(self, max_depth: int = MAX_BODY_DEPTH) -> None:
        self.max_depth = max_depth

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if not length or not _is_json(req):
            return  # falcon reads no body without a Content-Length; forms and files are not JSON
        data = req.stream.read(length)
        req.env["wsgi.input"] = req.stream = io.BytesIO(data)
        depth = deeper_than(data, self.max_depth)
        if depth is not None:
            raise unprocessable(f"the JSON body is nested {depth} levels deep; the API accepts at most "
                                f"{self.max_depth} levels of objects and arrays: flatten it")


class WriteGateMiddleware:
    """Every POST, PUT, PATCH and DELETE waits until the log is known sound (the start-up check of what the
    snapshot stands for; see api.context), then goes on; 503 while it is still being checked after the
    server's ``write_wait``, and 503 with the corruption's message (the line, what to run) when it is corrupt.
    Reads are never held."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if resource is None or req.method not in WRITE_METHODS:
            return
        try:
            self.ctx.wait_writable()
        except TimeoutError as exc:
            raise falcon.HTTPServiceUnavailable(title="Service Unavailable", description=str(exc),
                                                retry_after=5) from None
        except LogError as exc:
            raise falcon.HTTPServiceUnavailable(
                title="Service Unavailable", description=f"the log is not written to until it is repaired: {exc}",
            ) from None
