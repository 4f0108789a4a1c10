"""OpenAI's Batch API (``/v1/files`` + ``/v1/batches``) from the client's side, over the openai SDK (sync).

The pieces, each one call, so that whoever drives them (the engine) records every step as it goes and a
resumed run polls a batch it submitted instead of submitting it again:

* :func:`write_inputs` turns ``(custom_id, chat-completions body)`` pairs into :class:`InputFile` s of JSONL,
  split so that none holds more than ``max_requests`` lines or ``max_bytes`` bytes (OpenAI's 50,000 and
  200 MB by default) or more than one model (a batch takes requests to one model).
* :class:`BatchClient`: :meth:`~BatchClient.upload` an input file, :meth:`~BatchClient.create` a batch on it
  (``completion_window`` 24h; :meth:`~BatchClient.submit` does both), :meth:`~BatchClient.retrieve` one
  :class:`BatchState`, :meth:`~BatchClient.cancel`, :meth:`~BatchClient.list` a page, and read an ended
  batch's output and error files back with :meth:`~BatchClient.results`: one :class:`Result` per custom_id.
  The caller owns the polling loop; :func:`poll_delay` is its capped exponential backoff.
* :func:`unanswered`: the custom_ids a batch gave no line for (a cancelled batch's unfinished requests);
  :attr:`Result.retryable` says which answered ones are worth sending again (expired, 429, 5xx).

A typical drive::

    files = write_inputs(pairs)
    with BatchClient.for_provider(provider) as client:
        state = client.submit(files[0], metadata={"run": run_id})   # record state.id before anything else
        attempt = 0
        while not (state := client.retrieve(state.id)).ended:
            time.sleep(poll_delay(attempt))
            attempt += 1
        results = client.results(state)
        again = unanswered(files[0].custom_ids, results) + [r.custom_id for r in results.values() if r.retryable]

Every failure is a :class:`BatchError` (a :class:`~dsetlog.errors.DsetError`) whose message says what to do
and never holds a key (:mod:`dsetlog.redaction`): :class:`BatchUnsupported` for a server without the Batch
API (a 404 or 405 on ``/files`` or ``/batches``, or no OpenAI API at all: llama.cpp's, vLLM's and ollama's
servers), :class:`BatchNotFound` for an id the server does not know, :class:`BatchUnavailable` for what may
work when called again (429, 5xx, timeouts, a dropped connection), :class:`BatchRejected` for a request the
server refused as invalid, :class:`BatchInputError` for requests that cannot be written, and a plain
:class:`BatchError` for what stops the run (a refused key, no quota). The SDK's own retries are off: a
retried create could make a second batch, so only the caller decides to call again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msgspec
import openai

from dsetlog import redaction
from dsetlog.errors import DsetError, Kind
from dsetlog.llm.client import classify
from dsetlog.llm.providers import Provider
from dsetlog.llm.sender import ssl_context

MAX_REQUESTS = 50_000  # OpenAI's limit of requests per batch input file
# OpenAI's "200 MB", read as the smaller of 200 * 10**6 and 200 * 2**20, so a file fits either way.
MAX_BYTES = 200_000_000
CHAT_URL = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
TERMINAL = ("completed", "failed", "expired", "cancelled")
# Lines that never ran, or answers that say "later": sending the request again may well succeed.
_RETRY_CODES = {"batch_expired", "batch_cancelled", "batch_failed", "timeout", "server_error", "rate_limit_exceeded"}
# A 404 whose text says the path itself is unknown (not the object named in it).
_NO_ROUTE = re.compile(r"unknown (path|url|route)|invalid url|no route|page not found|^not found$", re.IGNORECASE)
_line_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class BatchError(DsetError):
    """A Batch API call failed; the message says what to do. ``reason`` names the failure ("auth",
    "quota", "unsupported", ...); ``status_code`` is the HTTP status when there was one."""

    kind = Kind.FATAL
    retryable = False  # the same call may succeed later

    def __init__(self, reason: str, message: str, *, status_code: int | None = None) -> None:
        message = redaction.redact(message)
        super().__init__(message)
        self.reason, self.message, self.status_code = reason, message, status_code


class BatchUnsupported(BatchError):
    """The server has no Batch API (``/files`` or ``/batches`` is not there): send the calls one by one."""


class BatchNotFound(BatchError):
    """The server knows no batch or file by that id (deleted, expired, or another account's)."""

    kind = Kind.NOT_FOUND


class BatchUnavailable(BatchError):
    """A failure that may pass (429, 5xx, a timeout, a dropped connection): call again after a pause."""

    kind = Kind.UNAVAILABLE
    retryable = True


class BatchRejected(BatchError):
    """The server refused the request as invalid (a 400/413/422): sending it again changes nothing."""

    kind = Kind.INVALID


class BatchInputError(BatchError):
    """The requests cannot be written as batch input (a duplicate or empty custom_id, a line too large)."""

    kind = Kind.INVALID


@dataclass(frozen=True)
class InputFile:
    """One batch input file: its JSONL bytes, the custom_ids it holds (in order) and their one model."""

    content: bytes
    custom_ids: tuple[str, ...]
    model: str | None = None

    @property
    def size(self) -> int:
        return len(self.content)

    def __len__(self) -> int:
        return len(self.custom_ids)


def input_line(custom_id: str, body: Mapping[str, Any], *, url: str = CHAT_URL) -> bytes:
    """One request of a batch input file, its newline included."""
    return _encoder.encode({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + b"\n"


class _Pending:
    """The input file being filled for one model."""

    def __init__(self, model: str | None, first: int) -> None:
        self.model, self.first, self.size = model, first, 0  # first: the request it starts with
        self.lines: list[bytes] = []
        self.ids: list[str] = []

    def file(self) -> InputFile:
        return InputFile(b"".join(self.lines), tuple(self.ids), self.model)


def write_inputs(requests: Iterable[tuple[str, Mapping[str, Any]]], *, max_requests: int = MAX_REQUESTS,
                 max_bytes: int = MAX_BYTES, url: str = CHAT_URL) -> list[InputFile]:
    """Batch input files for ``(custom_id, body)`` pairs: each holds at most ``max_requests`` lines and
    ``max_bytes`` bytes, and the requests of one model (``body["model"]``), in the order given; files come in
    the order of their first request. Raises :class:`BatchInputError` for an empty or repeated custom_id (a batch's
    results are matched by it) or a request larger than ``max_bytes`` on its own."""
    if max_requests < 1 or max_bytes < 1:
        raise BatchInputError("invalid", "max_requests and max_bytes must be at least 1")
    seen: set[str] = set()
    pending: dict[str | None, _Pending] = {}
    filled: list[tuple[int, InputFile]] = []
    for number, (custom_id, body) in enumerate(requests):
        if not isinstance(custom_id, str) or not custom_id:
            raise BatchInputError("invalid", f"a batch request needs a non-empty string custom_id, got {custom_id!r}")
        if custom_id in seen:
            raise BatchInputError("invalid", f"custom_id {custom_id!r} is given twice: a batch's answers are matched "
                                  "to their requests by custom_id, so each must be unique")
        seen.add(custom_id)
        line = input_line(custom_id, body, url=url)
        if len(line) > max_bytes:
            raise BatchInputError("too_large", f"the request {custom_id!r} is {len(line)} bytes, more than a whole "
                                  f"batch input file may be ({max_bytes} bytes); send it without the batch")
        model = body.get("model") if isinstance(body.get("model"), str) else None
        current = pending.get(model)
        if current is not None and (len(current.ids) >= max_requests or current.size + len(line) > max_bytes):
            filled.append((current.first, current.file()))
            current = None
        if current is None:
            current = pending[model] = _Pending(model, number)
        current.lines.append(line)
        current.ids.append(custom_id)
        current.size += len(line)
    filled.extend((p.first, p.file()) for p in pending.values())
    return [file for _, file in sorted(filled, key=lambda pair: pair[0])]


@dataclass(frozen=True)
class BatchIssue:
    """One reason a batch failed validation, as the server gave it (``line`` is 1-based, when it names one)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class BatchState:
    """What one retrieve said of a batch. ``total``/``completed``/``failed`` are its request counts;
    ``issues`` the validation errors of a ``failed`` one; the file ids are None until there is such a file."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: int = 0
    expires_at: int | None = None
    model: str | None = None
    issues: tuple[BatchIssue, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """It will not change any more (completed, failed, expired or cancelled): time to read the results."""
        return self.status in TERMINAL

    @classmethod
    def of(cls, batch: Any) -> BatchState:
        """The state of the SDK's ``Batch`` object."""
        counts = batch.request_counts
        issues = tuple(BatchIssue(str(e.code or ""), str(e.message or ""), e.line, e.param)
                       for e in ((batch.errors.data or []) if batch.errors else []))  # fmt: skip
        return cls(id=batch.id, status=batch.status, input_file_id=batch.input_file_id,
                   output_file_id=batch.output_file_id or None, error_file_id=batch.error_file_id or None,
                   total=counts.total if counts else 0, completed=counts.completed if counts else 0,
                   failed=counts.failed if counts else 0, created_at=batch.created_at, expires_at=batch.expires_at,
                   model=getattr(batch, "model", None), issues=issues, metadata=dict(batch.metadata or {}))


@dataclass(frozen=True)
class Result:
    """The answer to one request of a batch.

    ``status_code``: the HTTP status of its answer, None when it never ran (``error_code`` says why:
    ``batch_expired``, ...). ``body``: the answer's JSON (a ``chat.completion``, or ``{"error": ...}``).
    ``error_code`` / ``error_message``: None for a 2xx answer; else the line's error, or the error in the body
    (its ``code``, else its ``type``, else ``http_<status>``)."""

    custom_id: str
    status_code: int | None
    body: dict[str, Any] | None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and self.error_code is None

    @property
    def retryable(self) -> bool:
        """Not answered, but sending the request again may succeed (it expired or was cancelled before it
        ran, or met a 408/409/429/5xx); a 4xx answer is the request's own fault."""
        if self.ok:
            return False
        if self.error_code in _RETRY_CODES or self.status_code is None:
            return True
        return self.status_code in (408, 409, 429) or self.status_code >= 500


def parse_results(content: bytes) -> list[Result]:
    """The results in one output or error file's JSONL (either shape: an answer in ``response``, or a
    non-HTTP ``error``). Raises :class:`BatchError` for a line that is not a JSON object with a custom_id."""
    out = []
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = _line_decoder.decode(raw)
        except msgspec.DecodeError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise BatchError("malformed", f"line {number} of a batch result file is not a result line "
                             f"({raw[:120]!r}): the server's batch output is not OpenAI's format")
        out.append(_result(line))
    return out


def _result(line: dict[str, Any]) -> Result:
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    status = response.get("status_code") if isinstance(response.get("status_code"), int) else None
    body = response.get("body") if isinstance(response.get("body"), dict) else None
    error = line.get("error")
    if isinstance(error, dict):
        return Result(line["custom_id"], status, body, str(error.get("code") or "error"), str(error.get("message") or ""))
    if status is not None and 200 <= status < 300:
        return Result(line["custom_id"], status, body)
    err = body.get("error") if body is not None else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code") or err.get("type") or (f"http_{status}" if status is not None else "no_response")
    return Result(line["custom_id"], status, body, str(code), str(err.get("message") or ""))


def unanswered(custom_ids: Iterable[str], results: Mapping[str, Result]) -> list[str]:
    """The custom_ids (in their order) that no result line answers: a cancelled batch drops its unfinished ones."""
    return [c for c in custom_ids if c not in results]


def poll_delay(attempt: int, *, first: float = 5.0, cap: float = 300.0) -> float:
    """Seconds to wait before poll number ``attempt + 1`` (``attempt`` counts from 0): ``first``, doubling
    with each attempt, never more than ``cap``. Batches take minutes to hours; polling faster buys nothing."""
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    return min(cap, first * 2.0 ** min(attempt, 64))


class BatchNotEnded(BatchError):
    """The batch has not ended yet, so its results cannot be read: poll until :attr:`BatchState.ended`."""

    kind = Kind.CONFLICT


class BatchClient:
    """The Batch API of one OpenAI-compatible endpoint, each method one call (the SDK's retries off).

    ``base_url`` ends where the SDK's does (``.../v1``); ``api_key`` is registered for redaction at once, so no
    message of this client can show it (unless ``secret`` is False: the simulator's placeholder key)."""

    def __init__(self, base_url: str, api_key: str = "none", *, timeout: float = 120.0, secret: bool = True) -> None:
        if secret:  # (not the simulator's placeholder "simulated": that word would vanish from every answer)
            redaction.register(api_key)
        self.base_url = base_url.rstrip("/")
        self.endpoint = redaction.redact(self.base_url)  # as it may be shown
        self._reached = False  # has the endpoint ever answered? (a refused connection then is not a wrong URL)
        self._sdk = openai.OpenAI(api_key=api_key or "none", base_url=self.base_url, max_retries=0, timeout=timeout,
                                  http_client=httpx2.Client(verify=ssl_context()))

    @classmethod
    def for_provider(cls, provider: Provider, *, timeout: float = 120.0) -> BatchClient:
        return cls(provider.base_url, provider.api_key, timeout=timeout, secret=not provider.simulated)

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sdk.close()

    # -- the calls

    def upload(self, batch_input: InputFile | bytes, *, filename: str = "batch_input.jsonl") -> str:
        """Upload an input file (purpose ``batch``); its file id."""
        if not filename.endswith(".jsonl"):
            raise BatchInputError("invalid", f"a batch input file's name must end in .jsonl, not {filename!r}")
        content = batch_input.content if isinstance(batch_input, InputFile) else batch_input
        file = self._call("uploading the batch input file", "/files", None, self._sdk.files.create,
                          file=(filename, content, "application/jsonl"), purpose="batch")
        if not isinstance(getattr(file, "id", None), str) or not file.id:
            raise self._unsupported("uploading the batch input file", "/files", "an answer without a file id")
        return str(file.id)

    def create(self, input_file_id: str, *, metadata: Mapping[str, str] | None = None) -> BatchState:
        """Create a batch of the uploaded file's chat-completions requests (completion_window 24h)."""
        _need(input_file_id, "input_file_id")
        extra: dict[str, Any] = {"metadata": dict(metadata)} if metadata else {}
        batch = self._call("creating the batch", "/batches", None, self._sdk.batches.create,
                           input_file_id=input_file_id, endpoint=CHAT_URL, completion_window=COMPLETION_WINDOW, **extra)
        return self._state(batch, "creating the batch", "/batches")

    def submit(self, batch_input: InputFile, *, metadata: Mapping[str, str] | None = None,
               filename: str = "batch_input.jsonl") -> BatchState:
        """:meth:`upload` then :meth:`create`: two calls, so a crash between them leaves an unused file only."""
        return self.create(self.upload(batch_input, filename=filename), metadata=metadata)

    def retrieve(self, batch_id: str) -> BatchState:
        """The batch's state now (one call: poll with :func:`poll_delay` between calls)."""
        _need(batch_id, "batch_id")
        path = f"/batches/{batch_id}"
        batch = self._call("retrieving the batch", path, batch_id, self._sdk.batches.retrieve, batch_id)
        return self._state(batch, "retrieving the batch", path)

    def cancel(self, batch_id: str) -> BatchState:
        """Ask the server to cancel the batch; it is ``cancelling`` until the requests in flight are done."""
        _need(batch_id, "batch_id")
        path = f"/batches/{batch_id}/cancel"
        batch = self._call("cancelling the batch", path, batch_id, self._sdk.batches.cancel, batch_id)
        return self._state(batch, "cancelling the batch", path)

    def list_batches(self, *, limit: int = 20, after: str | None = None) -> list[BatchState]:
        """One page of the account's batches, newest first: ``limit`` of them after the batch ``after``."""
        extra: dict[str, Any] = {"after": after} if after else {}
        page = self._call("listing batches", "/batches", None, self._sdk.batches.list, limit=limit, **extra)
        return [self._state(b, "listing batches", "/batches") for b in (getattr(page, "data", None) or [])]

    def content(self, file_id: str) -> bytes:
        """The bytes of a file (an output or error file, or an uploaded one)."""
        _need(file_id, "file_id")
        path = f"/files/{file_id}/content"
        got = self._call("reading the file", path, file_id, self._sdk.files.content, file_id)
        if "html" in str(got.response.headers.get("content-type", "")):
            raise self._unsupported("reading the file", path, "an HTML page")
        return bytes(got.content)

    def delete_file(self, file_id: str) -> None:
        _need(file_id, "file_id")
        self._call("deleting the file", f"/files/{file_id}", file_id, self._sdk.files.delete, file_id)

    def results(self, state: BatchState) -> dict[str, Result]:
        """The results of an ended batch by custom_id, read from its output and error files (an answer in
        the output file wins over the error file's line for the same custom_id). The requests it has no
        line for are :func:`unanswered`."""
        if not state.ended:
            raise BatchNotEnded("not_ended", f"batch {state.id} is {state.status}: its results can be read once it "
                                "has ended (poll until BatchState.ended)")
        results: dict[str, Result] = {}
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                for result in parse_results(self.content(file_id)):
                    results.setdefault(result.custom_id, result)
        return results

    # -- failures

    def _call(self, action: str, path: str, ident: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            # from None: the SDK's exception holds the server's text, which may echo the key unredacted
            raise self._failed(exc, action, path, ident) from None
        self._reached = True
        return out

    def _state(self, batch: Any, action: str, path: str) -> BatchState:
        if not isinstance(batch, openai.types.Batch) or not isinstance(batch.id, str):
            raise self._unsupported(action, path, "an answer that is not a Batch object")
        return BatchState.of(batch)

    def _unsupported(self, action: str, path: str, what: str, status: int | None = None) -> BatchUnsupported:
        return BatchUnsupported("unsupported", f"{self.endpoint} does not support OpenAI's Batch API: {action} "
                                f"({path}) got {what}. Send the requests one at a time (without --batch) to "
                                "this provider", status_code=status)

    def _failed(self, exc: Exception, action: str, path: str, ident: str | None) -> BatchError:
        if isinstance(exc, openai.APIStatusError):
            self._reached = True
            status, text = exc.status_code, _status_text(exc)
            html = "html" in str(exc.response.headers.get("content-type", ""))
            if html or (status in (404, 405, 501) and (ident is None or not _names(text, ident))):
                what = "an HTML page" if html else f"HTTP {status}" + (f" ({text})" if text else "")
                return self._unsupported(action, path, what, status)
            if status == 404:
                return BatchNotFound("not_found", f"{action} failed: {self.endpoint} knows no {ident} ({text}); "
                                     "it may have been deleted or have expired", status_code=404)
        if isinstance(exc, (AttributeError, KeyError, TypeError)):
            # the SDK tripped over a 200 whose body is no OpenAI object (a web page, plain text)
            return self._unsupported(action, path, f"an answer the SDK could not read ({type(exc).__name__})")
        failure = classify(exc, url=self.endpoint, reached=self._reached)
        message = f"{action} ({self.endpoint}{path}) failed: {failure.message}"
        if failure.reason == "malformed":
            return self._unsupported(action, path, f"an answer the SDK could not read ({failure.message})")
        if failure.retryable:
            return BatchUnavailable(failure.reason, f"{message}; try again later", status_code=failure.status_code)
        if failure.fatal:
            return BatchError(failure.reason, message, status_code=failure.status_code)
        return BatchRejected(failure.reason, message, status_code=failure.status_code)


def _need(value: str, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise BatchInputError("invalid", f"{name} must be a non-empty string, got {value!r}")


def _status_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or "")[:300]
        return str(err or body.get("detail") or "")[:300]
    return str(body or "")[:300].strip()


def _names(text: str, ident: str) -> bool:
    """Does a 404's text name the object asked for (the server has the route), not an unknown path?"""
    return ident in text and not _NO_ROUTE.search(text)
