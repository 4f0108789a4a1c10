"""OpenAI's Batch API on the simulator: ``/v1/files`` (multipart upload, list, retrieve, content, delete) and
``/v1/batches`` (create, list, retrieve, cancel), the objects shaped as OpenAI's so the openai SDK parses them.

A batch's state is a function of the clock, read when it is asked for (no thread, no task): with
``D = SimConfig.batch_delay_s`` it is ``validating`` for the first tenth of D, ``in_progress`` to nine
tenths (``request_counts`` climbing with the time), ``finalizing`` to D, then ``completed``; with D = 0 the
first retrieve finds it done.  ``create`` always answers ``validating``, as OpenAI's does.

* Validation (done at create, told when ``validating`` ends, as OpenAI tells it): an input file over
  ``batch_max_bytes`` (``file_too_large``) or ``batch_max_requests`` lines (``too_many_tasks``), an empty
  one (``empty_file``), and per line (``line`` is 1-based): not a JSON object (``invalid_json_line``), no
  string ``custom_id`` or object ``body`` (``missing_required_parameter``), a method other than POST
  (``invalid_method``), a url other than the batch's endpoint (``url_mismatch``), a model other than the
  first line's (``model_mismatch``), a ``custom_id`` seen before (``duplicate_custom_id``).  Any of these
  makes the batch ``failed`` with OpenAI's ``errors`` list and no files.
* Lines are answered by ``chat.Chat.answer_line`` (the chat endpoint's own answers, without its injected
  faults) in an order shuffled from the seed, so the output file is not in input order (OpenAI's is not
  either).  A 2xx line goes to the output file as ``{"id", "custom_id", "response": {"status_code",
  "request_id", "body"}, "error": null}``; a line answered with an HTTP error goes to the error file in the
  same shape with the error in ``response.body`` and ``"error": null`` (what OpenAI writes, though its
  reference documents ``error`` for non-HTTP failures only); ``batch_error_rate`` draws lines, by
  ``(seed, custom_id)`` and the batches that held the custom_id before, that are answered 500 ``server_error``
  (a custom_id batched ``max_faults_per_prompt`` times before is never drawn: retries get through).  ``request_counts.failed`` counts the
  error file's lines; ``output_file_id`` / ``error_file_id`` stay null while a file would be empty.
* ``batch_expire``: the window closes at D with half the lines done.  The batch is ``expired``: the done
  lines are in the output (or error) file and every unfinished one is in the error file as ``{"response":
  null, "error": {"code": "batch_expired", "message": ...}}``, as OpenAI's batch guide documents;
  ``request_counts.failed`` counts them.
* Cancel (from ``validating``, ``in_progress`` or ``finalizing``): ``cancelling`` for a tenth of D, then
  ``cancelled``; the lines done when it was asked for are in the files, the others in neither (their
  custom_ids are simply absent) and ``request_counts`` stop where they were.  Cancelling a batch that
  has ended is a 400.
* Files and batches live in memory for the simulator's life; ids are drawn from the seed and a counter.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import msgspec

from dsetlog.simulator.chat import Chat
from dsetlog.simulator.config import SimConfig
from dsetlog.simulator.faults import auth_refusal
from dsetlog.simulator.reply import Reply, error_body
from dsetlog.simulator.stats import Stats

ENDPOINT = "/v1/chat/completions"  # the one batch endpoint the simulator answers
WINDOW = "24h"
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
TERMINAL = ("failed", "completed", "expired", "cancelled")
_DAY = 86_400
_FILE_TTL = 30 * _DAY  # batch files expire after 30 days
_MAX_ERRORS = 1000  # validation errors listed on a failed batch
_EXPIRED = "This request could not be executed before the completion window expired."
_SERVER_ERROR = "The server had an error processing your request. Sorry about that! (simulated)"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _digest(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def _unit(seed: int, custom_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}|{custom_id}|batch_error".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _drawn_error(cfg: SimConfig, line: _Line) -> bool:
    """Is the line answered 500? Drawn by (seed, custom_id) in its first batch, and afresh in each later batch
    that holds it again; from its ``max_faults_per_prompt``-th batch on never, as online retries get through."""
    if line.earlier >= cfg.max_faults_per_prompt:
        return False
    key = line.custom_id if not line.earlier else f"{line.custom_id}#{line.earlier}"
    return _unit(cfg.seed, key) < cfg.batch_error_rate


class _Refused(Exception):
    """A batch or file request the simulator refuses; control flow inside this module, turned into its reply."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, *,
                 headers: str = "") -> None:
        super().__init__(message)
        self.reply = Reply(status, error_body(message, "invalid_request_error", code, param), headers=headers)


def _not_found(what: str, ident: str) -> _Refused:
    return _Refused(404, f"No such {what} object: {ident}", "id")


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename or None, content)."""
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or found is None:
        raise _Refused(400, "The request must be multipart/form-data with a boundary (fields 'purpose' and 'file').")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + found.group(1).encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise _Refused(400, "A part of the multipart body has no header block.")
        params: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                params = {k.lower(): v.replace('\\"', '"') for k, v in _DISPOSITION.findall(value)}
        if "name" in params:
            fields[params["name"]] = (params.get("filename"), content.removesuffix(b"\r\n"))
    return fields


class _File(msgspec.Struct):
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None, "expires_at": self.created_at + _FILE_TTL}  # fmt: skip


class _Line(msgspec.Struct):
    custom_id: str
    body: bytes  # the request body, encoded as the chat endpoint receives it
    earlier: int = 0  # batches made before this one that held the same custom_id (its retries)


class _Outcome(msgspec.Struct):
    ok: bool  # 2xx: into the output file, else the error file
    line: bytes  # the file's line, newline included
    usage: tuple[int, int, int] = (0, 0, 0)  # prompt, completion, reasoning tokens


class _Batch:
    """One batch: what it was created with, its lines in processing order, and what it has done so far."""

    def __init__(self, ident: str, file_id: str, created: float, metadata: dict[str, str] | None) -> None:
        self.id, self.input_file_id, self.created, self.metadata = ident, file_id, created, metadata
        self.lines: list[_Line] = []
        self.errors: list[dict[str, Any]] = []  # validation errors: the batch fails
        self.model: str | None = None
        self.cancel_at: float | None = None
        self.cancel_done = 0  # lines done when the cancel came
        self.outcomes: list[_Outcome] = []
        self.files: tuple[str | None, str | None] | None = None  # (output, error) once ended


class _State(msgspec.Struct):
    status: str
    done: int  # lines done (answered), a prefix of the processing order
    stamps: dict[str, int]  # the *_at timestamps reached


class Batches:
    """The files and batches routes: ``handle`` answers a request on them, or returns None for other paths."""

    def __init__(self, config: SimConfig, stats: Stats, chat: Chat, clock: Callable[[], float] = time.time) -> None:
        self.config, self.stats, self.chat, self.clock = config, stats, chat, clock
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self._made = 0
        self._held: dict[str, int] = {}  # custom_id -> valid batches that held it

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        path = target.split("?", 1)[0].rstrip("/")
        parts = path.strip("/").split("/")
        if parts[0] == "v1":
            parts = parts[1:] or [""]
        if parts[0] not in ("files", "batches"):
            return None
        try:
            route = _route(method, parts)
            if route is None:
                return None
            denied = auth_refusal(self.config, headers)
            if denied is not None:
                self.stats.fault("401")
                return denied
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(target.partition("?")[2]).items()}
            return getattr(self, route)(parts, query, headers, body)
        except _Refused as refused:
            return refused.reply

    def _new_id(self, prefix: str) -> str:
        self._made += 1
        return prefix + _digest(self.config.seed, prefix, self._made)

    # -- files

    def upload(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        fields = parse_multipart(headers.get("content-type", ""), body)
        if "purpose" not in fields:
            raise _Refused(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
        if "file" not in fields or fields["file"][0] is None:
            raise _Refused(400, "Missing required parameter: 'file' (a file part with a filename).", "file",
                           "missing_required_parameter")
        purpose = fields["purpose"][1].decode("utf-8", "replace").strip()
        if purpose not in FILE_PURPOSES:
            raise _Refused(400, f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", "purpose")
        filename, content = fields["file"]
        if purpose == "batch" and not str(filename).endswith(".jsonl"):
            raise _Refused(400, "Invalid file format for Batch API. Must be .jsonl", "file")
        file = _File(self._new_id("file-"), str(filename), purpose, content, int(self.clock()))
        self.files[file.id] = file
        self.stats.count("file_uploads")
        return _ok(file.obj())

    def list_files(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        files = [f for f in self.files.values() if query.get("purpose") in (None, f.purpose)]
        if query.get("order", "desc") == "desc":
            files.reverse()
        return _page([f.obj() for f in files], query, 10_000)

    def get_file(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        return _ok(self._file(parts[1]).obj())

    def file_content(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        return Reply(200, self._file(parts[1]).content, content_type="application/octet-stream")

    def delete_file(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        file = self._file(parts[1])
        del self.files[file.id]
        return _ok({"id": file.id, "object": "file", "deleted": True})

    def _file(self, ident: str) -> _File:
        file = self.files.get(ident)
        if file is None:
            raise _not_found("File", ident)
        return file

    # -- batches

    def create(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        req = _create_request(body)
        file = self.files.get(req["input_file_id"])
        if file is None:
            raise _Refused(400, f"No such File object: {req['input_file_id']}", "input_file_id")
        if file.purpose != "batch":
            raise _Refused(400, f"The input file {file.id} was uploaded with purpose '{file.purpose}'; a batch's "
                           "input must be uploaded with purpose 'batch'.", "input_file_id")
        batch = _Batch(self._new_id("batch_"), file.id, self.clock(), req.get("metadata"))
        self._validate(batch, file.content)
        self.batches[batch.id] = batch
        self.stats.count("batch_creates")
        return _ok(self._obj(batch, _State("validating", 0, {})))

    def list_batches(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        newest_first = list(self.batches.values())[::-1]
        return _page([self._obj(b, self._state(b)) for b in newest_first], query, 100)

    def get_batch(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        batch = self._batch(parts[1])
        return _ok(self._obj(batch, self._state(batch)))

    def cancel(self, parts: list[str], query: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        batch = self._batch(parts[1])
        state = self._state(batch)
        if state.status in TERMINAL:
            raise _Refused(400, f"Cannot cancel a batch with status '{state.status}'.")
        if batch.cancel_at is None:
            batch.cancel_at, batch.cancel_done = self.clock(), state.done
            self.stats.count("batch_cancels")
        return _ok(self._obj(batch, self._state(batch)))

    def _batch(self, ident: str) -> _Batch:
        batch = self.batches.get(ident)
        if batch is None:
            raise _not_found("Batch", ident)
        return batch

    def _validate(self, batch: _Batch, content: bytes) -> None:
        """Read the input file into the batch's lines (in processing order), or its validation errors."""
        cfg = self.config
        raw = [line for line in content.split(b"\n") if line.strip()]
        if len(content) > cfg.batch_max_bytes:
            batch.errors.append(_issue("file_too_large", f"The input file is {len(content)} bytes; a batch input "
                                       f"file may be at most {cfg.batch_max_bytes} bytes."))
        elif not raw:
            batch.errors.append(_issue("empty_file", "The input file is empty: it holds no request."))
        elif len(raw) > cfg.batch_max_requests:
            batch.errors.append(_issue("too_many_tasks", f"The input file has {len(raw)} requests; a batch may "
                                       f"hold at most {cfg.batch_max_requests}."))
        if batch.errors:
            return
        seen: set[str] = set()
        for number, text in enumerate(raw, 1):
            line, issue = _read_line(text, number, seen, batch)
            if issue is not None and len(batch.errors) < _MAX_ERRORS:
                batch.errors.append(issue)
            elif line is not None:
                batch.lines.append(line)
        if batch.errors:
            batch.lines = []
            return
        for line in batch.lines:
            line.earlier = self._held.get(line.custom_id, 0)
            self._held[line.custom_id] = line.earlier + 1
        order = random.Random(_digest(cfg.seed, "order", hashlib.blake2b(content).hexdigest()))
        order.shuffle(batch.lines)

    # -- the clock

    def _state(self, batch: _Batch) -> _State:
        """Where the batch stands now, from the time since its create (and its cancel)."""
        delay, now, start = self.config.batch_delay_s, self.clock(), batch.created
        checked, ended = start + 0.1 * delay, start + delay
        if batch.errors and batch.cancel_at is None:
            if now < checked:
                return _State("validating", 0, {})
            return _State("failed", 0, {"failed_at": int(checked)})
        if batch.cancel_at is not None:
            stamps = {"cancelling_at": int(batch.cancel_at)}
            if batch.cancel_at >= checked:
                stamps["in_progress_at"] = int(checked)
            if now < batch.cancel_at + 0.1 * delay:
                return _State("cancelling", batch.cancel_done, stamps)
            stamps["cancelled_at"] = int(batch.cancel_at + 0.1 * delay)
            return self._ended(batch, _State("cancelled", batch.cancel_done, stamps))
        if now < checked:
            return _State("validating", 0, {})
        stamps = {"in_progress_at": int(checked)}
        if self.config.batch_expire:
            reach = len(batch.lines) // 2
            if now >= ended:
                stamps["expired_at"] = int(ended)
                return self._ended(batch, _State("expired", reach, stamps))
            return _State("in_progress", _share(reach, now - checked, ended - checked), stamps)
        total, busy_until = len(batch.lines), start + 0.9 * delay
        if now < busy_until:
            return _State("in_progress", _share(total, now - checked, busy_until - checked), stamps)
        stamps["finalizing_at"] = int(busy_until)
        if now < ended:
            return _State("finalizing", total, stamps)
        stamps["completed_at"] = int(ended)
        return self._ended(batch, _State("completed", total, stamps))

    def _ended(self, batch: _Batch, state: _State) -> _State:
        """Write the batch's files the first time it is seen ended."""
        if batch.files is None:
            self._answer(batch, state.done)
            output = b"".join(o.line for o in batch.outcomes[: state.done] if o.ok)
            failed = b"".join(o.line for o in batch.outcomes[: state.done] if not o.ok)
            if state.status == "expired":
                failed += b"".join(_expired_line(batch.id, line.custom_id) for line in batch.lines[state.done :])
            at = max(state.stamps.values())
            batch.files = (self._output(batch.id, "output", output, at), self._output(batch.id, "error", failed, at))
        return state

    def _output(self, batch_id: str, kind: str, content: bytes, at: int) -> str | None:
        if not content:
            return None
        file = _File(self._new_id("file-"), f"{batch_id}_{kind}.jsonl", "batch_output", content, at)
        self.files[file.id] = file
        return file.id

    def _answer(self, batch: _Batch, upto: int) -> None:
        """Answer the lines up to ``upto`` (in processing order) that are not answered yet."""
        cfg = self.config
        while len(batch.outcomes) < upto:
            line = batch.lines[len(batch.outcomes)]
            self.stats.count("batch_lines")
            rid = _digest(batch.id, line.custom_id)[:24]
            if cfg.batch_error_rate and _drawn_error(cfg, line):
                status, body = 500, msgspec.json.decode(error_body(_SERVER_ERROR, "server_error"))
            else:
                reply = self.chat.answer_line(line.body)
                status, body = reply.status, _decoded(reply)
            response = {"status_code": status, "request_id": f"req_{rid}", "body": body}
            out = {"id": f"batch_req_{rid}", "custom_id": line.custom_id, "response": response, "error": None}
            batch.outcomes.append(_Outcome(200 <= status < 300, msgspec.json.encode(out) + b"\n", _usage(body)))

    def _obj(self, batch: _Batch, state: _State) -> dict[str, Any]:
        """The batch as OpenAI's Batch object, as of ``state``."""
        self._answer(batch, state.done)
        done = batch.outcomes[: state.done]
        total = 0 if state.status in ("validating", "failed") else len(batch.lines)
        completed = sum(o.ok for o in done)
        failed = state.done - completed + (total - state.done if state.status == "expired" else 0)
        output_id, error_id = batch.files or (None, None)
        created = int(batch.created)
        expires = created + (math.ceil(self.config.batch_delay_s) if self.config.batch_expire else _DAY)
        obj: dict[str, Any] = {
            "id": batch.id, "object": "batch", "endpoint": ENDPOINT, "model": batch.model,
            "errors": {"object": "list", "data": batch.errors} if state.status == "failed" else None,
            "input_file_id": batch.input_file_id, "completion_window": WINDOW, "status": state.status,
            "output_file_id": output_id, "error_file_id": error_id, "created_at": created,
            "expires_at": expires,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": _batch_usage(done), "metadata": batch.metadata,
        }  # fmt: skip
        for stamp in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                      "cancelling_at", "cancelled_at"):  # fmt: skip
            obj[stamp] = state.stamps.get(stamp)
        return obj


# Route name by (method, path shape); the path's ids are read by the route itself.
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "files"): "upload", ("GET", "files"): "list_files", ("GET", "files/*"): "get_file",
    ("DELETE", "files/*"): "delete_file", ("GET", "files/*/content"): "file_content",
    ("POST", "batches"): "create", ("GET", "batches"): "list_batches", ("GET", "batches/*"): "get_batch",
    ("POST", "batches/*/cancel"): "cancel",
}  # fmt: skip


def _route(method: str, parts: list[str]) -> str | None:
    """The route a request goes to; None for a path that is not one of them; a 405 for a wrong method."""
    shape = "/".join("*" if i == 1 else p for i, p in enumerate(parts))
    found = _ROUTES.get((method, shape))
    if found is None and any(s == shape for _, s in _ROUTES):
        allowed = ", ".join(m for m, s in _ROUTES if s == shape)
        raise _Refused(405, "Method not allowed", headers=f"Allow: {allowed}\r\n")
    return found


def _ok(obj: Any) -> Reply:
    return Reply(200, msgspec.json.encode(obj))


def _page(items: list[dict[str, Any]], query: dict[str, str], most: int) -> Reply:
    """A cursor page of a newest-first list: ``limit`` items after the item ``after``."""
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise _Refused(400, "limit must be a whole number", "limit") from None
    if not 1 <= limit <= most:
        raise _Refused(400, f"limit must be between 1 and {most}", "limit")
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise _Refused(400, f"after names no object in this list: {after}", "after")
        items = items[ids.index(after) + 1 :]
    data = items[:limit]
    return _ok({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit})  # fmt: skip


def _create_request(body: bytes) -> dict[str, Any]:
    try:
        req = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _Refused(400, f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(req, dict):
        raise _Refused(400, "The request body must be a JSON object.")
    for field in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(req.get(field), str):
            raise _Refused(400, f"Missing required parameter: '{field}'.", field, "missing_required_parameter")
    if req["endpoint"] != ENDPOINT:
        raise _Refused(400, f"The simulator's batches answer {ENDPOINT} only, not {req['endpoint']}.", "endpoint")
    if req["completion_window"] != WINDOW:
        raise _Refused(400, f"Invalid value: '{req['completion_window']}'. Supported values are: '24h'.",
                       "completion_window", "invalid_value")
    metadata = req.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and len(metadata) <= 16
        and all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):  # fmt: skip
        raise _Refused(400, "metadata must be at most 16 string pairs, keys up to 64 characters and values up "
                       "to 512.", "metadata")
    return req


def _issue(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _read_line(text: bytes, number: int, seen: set[str], batch: _Batch) -> tuple[_Line | None, dict[str, Any] | None]:
    """One input line as a batch line, or the validation error it makes."""
    try:
        item = msgspec.json.decode(text)
    except msgspec.DecodeError:
        item = None
    if not isinstance(item, dict):
        return None, _issue("invalid_json_line", "This line is not parseable as valid JSON.", number)
    custom_id, body = item.get("custom_id"), item.get("body")
    for name, value, kind in (("custom_id", custom_id, str), ("body", body, dict)):
        if not isinstance(value, kind):
            return None, _issue("missing_required_parameter", f"Missing required parameter: '{name}'.", number, name)
    if item.get("method") != "POST":
        return None, _issue("invalid_method", "The method of a batch request must be POST.", number, "method")
    if item.get("url") != ENDPOINT:
        return None, _issue("url_mismatch", f"The URL of this request ({item.get('url')!r}) does not match the "
                            f"batch's endpoint ({ENDPOINT}).", number, "url")
    model = body.get("model")
    if batch.model is None and isinstance(model, str):
        batch.model = model
    if model != batch.model:
        return None, _issue("model_mismatch", f"The model of this request ({model!r}) is not the batch's "
                            f"({batch.model!r}): a batch holds requests to one model.", number, "body.model")
    if custom_id in seen:
        return None, _issue("duplicate_custom_id", "The custom_id for this request is a duplicate of another "
                            "request. The custom_id parameter must be unique for each request in a batch.",
                            number, "custom_id")
    seen.add(custom_id)
    return _Line(custom_id, msgspec.json.encode(body)), None


def _share(total: int, elapsed: float, span: float) -> int:
    return min(total, int(total * elapsed / span)) if span > 0 else total


def _decoded(reply: Reply) -> Any:
    try:
        return msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        return {"error": {"message": "the model's reply was not JSON", "type": "server_error",
                          "param": None, "code": None}}  # fmt: skip


def _usage(body: Any) -> tuple[int, int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return (0, 0, 0)
    details = usage.get("completion_tokens_details") or {}
    return (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
            int(details.get("reasoning_tokens") or 0))  # fmt: skip


def _batch_usage(done: list[_Outcome]) -> dict[str, Any]:
    prompt, completion, reasoning = (sum(o.usage[i] for o in done) for i in range(3))
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + completion}


def _expired_line(batch_id: str, custom_id: str) -> bytes:
    rid = _digest(batch_id, custom_id)[:24]
    out = {"id": f"batch_req_{rid}", "custom_id": custom_id, "response": None,
           "error": {"code": "batch_expired", "message": _EXPIRED}}  # fmt: skip
    return msgspec.json.encode(out) + b"\n"
