"""Middleware: the bearer token and the body size limit, checked before any resource runs."""

from __future__ import annotations

import hmac
from typing import Any

import falcon

from api.errors import too_large


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
