"""Errors as JSON ``{"title", "description"}``, whatever went wrong, and never a traceback.

Falcon's HTTPError subclasses carry the status; :func:`serialize_error` writes them as JSON regardless
of the Accept header. Anything else raised in a responder is logged here with its traceback, on the
server side only, and answered 500 with a generic description.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from api.media import encode
from dsetlog.errors import DsetError, Kind

_log = logging.getLogger("api")


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    title = exc.title or str(exc.status)
    description = exc.description
    if not description:
        if isinstance(exc, falcon.HTTPRouteNotFound):
            description = f"no route {req.path}; GET /api/v1/openapi.json lists them"
        elif isinstance(exc, falcon.HTTPMethodNotAllowed):
            description = f"{req.method} is not allowed on {req.path}; GET /api/v1/openapi.json lists the methods"
        else:
            description = title
    resp.data = encode({"title": title, "description": description})


# An error's kind decides the HTTP status, here and nowhere else.
STATUSES = {
    Kind.INVALID: falcon.HTTP_422,
    Kind.NOT_FOUND: falcon.HTTP_404,
    Kind.CONFLICT: falcon.HTTP_409,
    Kind.TOO_LARGE: falcon.HTTP_413,
    Kind.UNAVAILABLE: falcon.HTTP_503,  # the log cannot be written now: the same request works later
    Kind.FATAL: falcon.HTTP_503,  # a damaged log: nothing is written until it is repaired (the message says how)
}
RETRY_AFTER_UNAVAILABLE = 5  # seconds


def handle_dset_error(req: falcon.Request, resp: falcon.Response, exc: DsetError, params: dict[str, Any]) -> None:
    """Any engine error a responder lets through: its kind's status, its message as the description."""
    status = STATUSES[exc.kind]
    raise falcon.HTTPError(status, title=falcon.code_to_http_status(status)[4:], description=str(exc),
                           headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
                           if exc.kind is Kind.UNAVAILABLE else None)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    if isinstance(exc, falcon.HTTPError):  # never reached (falcon's own handler is more specific); kept safe
        raise exc
    _log.error("unhandled error answering %s %s", req.method, req.path, exc_info=exc)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.data = encode({"title": "Internal Server Error",
                        "description": "the server met an unexpected error; it is logged in the server's output"})


def not_found(what: str) -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Not Found", description=what)


def bad_request(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Bad Request", description=description)


def unprocessable(description: str) -> falcon.HTTPUnprocessableEntity:
    return falcon.HTTPUnprocessableEntity(title="Unprocessable Entity", description=description)


def conflict(description: str) -> falcon.HTTPConflict:
    return falcon.HTTPConflict(title="Conflict", description=description)


def too_large(description: str) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(title="Content Too Large", description=description)
