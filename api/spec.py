"""Operations: one decorator declares what a responder takes and answers, and enforces it.

    class EntriesResource:
        @operation("List a dataset's entries", query=EntriesQuery, response=EntriesPage, errors=(404,))
        def on_get(self, req, resp, dataset_id): ...

``query`` and ``body`` become Falcon ``before`` hooks that decode the query string / the JSON body into
those Structs (``req.context.query`` / ``req.context.body``), answering 422 with msgspec's message (which
names the field) when they do not fit, 400 for a body that is not JSON. The same declarations make the
OpenAPI document (:func:`openapi_document`): schemas come from ``msgspec.json.schema_components``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import falcon
import msgspec

from api.errors import bad_request, unprocessable
from api.schemas import Error
from dsetlog.errors import DsetError

REF = "#/components/schemas/{name}"
METHODS = ("get", "post", "put", "patch", "delete")
ERROR_TEXT = {
    400: "Bad request (see the description)",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body larger than the server accepts",
    405: "Method not allowed (an id that is also the name of a route, such as `parameters`, meets that route)",
    415: "Unsupported content type",
    422: "A field is missing, unknown or of the wrong type (the description names it)",
    503: "Writes wait while the log's checksums are checked after a start from a snapshot, and are refused when "
         "it is corrupt (the description says which, and what to run)",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str = ""
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    also: dict[int, type] = field(default_factory=dict)  # other success statuses
    errors: tuple[int, ...] = ()
    binary: tuple[str, ...] = ()  # media types of a file response
    multipart: type | None = None  # form fields besides "file", for a multipart upload
    tags: tuple[str, ...] = ()


def max_body(req: falcon.Request) -> int:
    return getattr(req.context, "max_body", 10 * 2**20)


def read_body(req: falcon.Request) -> bytes:
    """The whole body, at most the server's limit (413 past it)."""
    from api.errors import too_large

    limit = max_body(req)
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise too_large(f"the body is over the server's limit of {limit} bytes")
    return data


def _body_hook(body_type: type, *, multipart: bool) -> Callable[..., None]:
    decoder = msgspec.json.Decoder(body_type)
    refused_fields: Mapping[str, Callable[[str], object]] = getattr(body_type, "refused_fields", {})

    def hook(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
        ctype = (req.content_type or "").split(";")[0].strip().lower()
        if multipart and ctype == "multipart/form-data":
            req.context.body = None  # the responder reads the form
            return
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise falcon.HTTPUnsupportedMediaType(
                title="Unsupported Media Type",
                description=f"send the body as application/json{' or multipart/form-data' if multipart else ''}, "
                            f"not {ctype}")
        raw = read_body(req)
        if not raw.strip():
            raw = b"{}"  # no body: the fields' defaults (a required field is then named as missing)
        try:
            req.context.body = decoder.decode(raw)
        except msgspec.ValidationError as exc:
            _check_refused_fields(raw, refused_fields)
            try:
                body = _with_integral_floats(raw, body_type)
            except msgspec.ValidationError as again:
                raise unprocessable(str(again)) from None
            if body is None:
                raise unprocessable(str(exc)) from None
            req.context.body = body
        except msgspec.DecodeError as exc:
            raise bad_request(f"the body is not valid JSON: {exc}") from None

    return hook


def _with_integral_floats(raw: bytes, body_type: type) -> Any | None:
    """The body decoded again with every integral number written as a float (``"rating": 1.0``) read as an int:
    the document's ``integer`` is JSON Schema's, which 1.0 is, while msgspec's int refuses floats. None when
    the body has no such number (its first error stands); a ValidationError when it still does not fit, a 400
    when it is not JSON at all."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # the typed decoder met a wrong type before the bad JSON after it
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    changed = False

    def ints(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, float) and value.is_integer():
            changed = True
            return int(value)
        if isinstance(value, list):
            return [ints(v) for v in value]
        if isinstance(value, dict):
            return {k: ints(v) for k, v in value.items()}
        return value

    doc = ints(doc)
    return msgspec.convert(doc, body_type) if changed else None


def _check_refused_fields(raw: bytes, checks: Mapping[str, Callable[[str], object]]) -> None:
    """A body Struct's ``refused_fields`` (name -> check) come before its other fields: a value its check
    refuses is a 400 of its own, whatever else is wrong with the body."""
    if not checks:
        return
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return
    for name, check in checks.items():
        value = doc.get(name) if isinstance(doc, dict) else None
        if isinstance(value, str):
            try:
                check(value)
            except DsetError as exc:
                raise bad_request(str(exc)) from None


def _query_hook(query_type: type | None) -> Callable[..., None]:
    """Decodes the query string into ``query_type`` (``req.context.query``); every responder has one, so a
    parameter the route does not take is a 400 naming it (and those it takes), whatever the route: the names
    come from the Struct, so a field added to it is accepted at once. An empty value is a value: ``?page=`` is
    refused as the document says, not read as absent."""
    accepted: tuple[str, ...] = query_type.__struct_encode_fields__ if query_type is not None else ()  # type: ignore[attr-defined]
    takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"

    def hook(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
        unknown = [name for name in req.params if name not in accepted]
        if unknown:
            raise bad_request(f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)} for {req.method} {req.path}; {takes}")
        if query_type is None:
            return
        try:
            req.context.query = msgspec.convert(req.params, query_type, strict=False)
        except msgspec.ValidationError as exc:
            raise unprocessable(f"invalid query parameter: {exc}") from None

    return hook


def operation(summary: str, *, description: str = "", body: type | None = None, query: type | None = None,
              response: type | None = None, status: int = 200, also: dict[int, type] | None = None,
              errors: Sequence[int] = (), binary: Sequence[str] = (), multipart: type | None = None,
              tags: Sequence[str] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    op = Operation(summary, description, body, query, response, status, dict(also or {}), tuple(errors),
                   tuple(binary), multipart, tuple(tags))

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        if body is not None:
            fn = falcon.before(_body_hook(body, multipart=multipart is not None))(fn)
        fn = falcon.before(_query_hook(query))(fn)
        fn.__openapi__ = op  # type: ignore[attr-defined]
        return fn

    return wrap


# --- the OpenAPI document ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    path: str  # as given to add_route
    resource: Any
    suffix: str | None = None
    doc_path: str | None = None  # the path the document shows (e.g. with a trailing slash)


def _responders(route: Route) -> Iterable[tuple[str, Any]]:
    for method in METHODS:
        name = f"on_{method}" + (f"_{route.suffix}" if route.suffix else "")
        fn = getattr(route.resource, name, None)
        if fn is not None:
            yield method, fn


def operations(routes: Iterable[Route]) -> list[tuple[str, str, Operation, Any]]:
    """(method, path, operation, responder) of every declared responder."""
    out = []
    for route in routes:
        for method, fn in _responders(route):
            op = getattr(fn, "__openapi__", None)
            if op is None:
                raise TypeError(f"{type(route.resource).__name__}.{fn.__name__} has no @operation: every "
                                "responder must declare what it takes and answers")
            out.append((method, route.doc_path or route.path, op, fn))
    return out


def openapi_document(routes: Iterable[Route], *, title: str, version: str, description: str = "",
                     bearer: bool = False) -> dict[str, Any]:
    ops = operations(routes)
    types: list[type] = [Error]
    for _, _, op, _ in ops:
        for t in (op.body, op.query, op.response, op.multipart, *op.also.values()):
            if t is not None and t not in types:
                types.append(t)
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for method, path, op, _ in ops:
        op_id = re.sub(r"\W+", "_", f"{method}_{path.strip('/')}").strip("_")
        assert op_id not in used_ids, op_id
        used_ids.add(op_id)
        paths.setdefault(path, {})[method] = _operation_doc(op_id, method, path, op, components)
    _drop_inline_components(ops, components)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components},
    }
    if bearer:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _operation_doc(op_id: str, method: str, path: str, op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op_id, "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    if op.tags:
        doc["tags"] = list(op.tags)
    parameters = _parameters(path, op, components)
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = _request_body(op, components)
    doc["responses"] = _responses(method, path, op)
    return doc


def _parameters(path: str, op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    """The path's {names}, then the query Struct's fields."""
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in re.findall(r"{(\w+)}", path)]
    if op.query is not None:
        schema = components[op.query.__name__]
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)
    return parameters


def _request_body(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    assert op.body is not None
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF.format(name=op.body.__name__)}}}
    if op.multipart is not None:
        form = components[op.multipart.__name__]
        content["multipart/form-data"] = {"schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}, **form.get("properties", {})},
            "required": ["file"],
        }}
    return {"required": _body_required(components[op.body.__name__]), "content": content}


def _responses(method: str, path: str, op: Operation) -> dict[str, Any]:
    """The success response, and every error status the operation can answer (each an Error)."""
    responses: dict[str, Any] = {}
    if op.binary:
        responses[str(op.status)] = {"description": "the file", "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in op.binary}}
    else:
        responses[str(op.status)] = _json_response(op.response, "OK")
    for status, t in op.also.items():
        responses[str(status)] = _json_response(t, "OK")
    errors = set(op.errors) | {400, 401}  # 400: a query parameter the route does not take
    if op.body is not None:
        errors |= {400, 413, 415, 422}
    if op.query is not None:
        errors.add(422)
    if "{" in path:
        errors |= {404, 405}
    if method != "get":
        errors.add(503)
    for status in sorted(errors):
        responses[str(status)] = {"description": ERROR_TEXT.get(status, "Error"),
                                  "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
    return responses


def _drop_inline_components(ops: list[tuple[str, str, Operation, Any]], components: dict[str, Any]) -> None:
    """Query and multipart Structs are inlined as parameters and form fields: no component of their own
    unless an operation also takes or answers them as a body."""
    inlined = {op.query.__name__ for _, _, op, _ in ops if op.query is not None} | {
        op.multipart.__name__ for _, _, op, _ in ops if op.multipart is not None}
    for name in inlined:
        if not any(name == (op.body.__name__ if op.body else None) or
                   name == (op.response.__name__ if op.response else None) for _, _, op, _ in ops):
            components.pop(name, None)


def _body_required(schema: dict[str, Any]) -> bool:
    return bool(schema.get("required"))


def _json_response(t: type | None, description: str) -> dict[str, Any]:
    if t is None:
        return {"description": description}
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(name=t.__name__)}}}}
