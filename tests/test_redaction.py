"""Secrets are redacted whole, URL-encoded and masked, from text and from every event the log writes."""

from __future__ import annotations

from pathlib import Path

from dsetlog import redaction
from dsetlog.llm.client import CallFailure
from dsetlog.store.events import AttemptFailed, JobFailed

KEY = "sk-proj-Ab12Cd34Ef56Gh78Ij90wxyz"


def test_every_echoed_form_of_a_key_is_redacted() -> None:
    redaction.register(KEY)
    echoes = [
        f"Incorrect API key provided: {KEY}.",
        "Incorrect API key provided: sk-proj-****wxyz. You can find your API key at ...",
        "Incorrect API key provided: sk-proj-...wxyz",
        "key=sk-proj-Ab1********",
    ]
    for text in echoes[:4]:
        cleaned = redaction.redact(text)
        assert "wxyz" not in cleaned and "Ab12" not in cleaned and redaction.MASK in cleaned, cleaned
    from urllib.parse import quote

    assert KEY not in redaction.redact(quote(KEY, safe="")) and redaction.MASK in redaction.redact(quote(KEY, safe=""))
    # prose with ellipses and short tokens is left alone
    assert redaction.redact("Rate limit... sk- try again in 1s...") == "Rate limit... sk- try again in 1s..."


def test_short_placeholders_are_not_secrets() -> None:
    redaction.register("none")
    redaction.register("x")
    assert redaction.redact("none of this is x") == "none of this is x"


def test_call_failures_are_redacted_when_made() -> None:
    redaction.register(KEY)
    failure = CallFailure("auth", f"the API refused the key (Incorrect API key provided: {KEY})", status_code=401)
    assert KEY not in str(failure) and KEY not in failure.message


def test_the_log_never_writes_a_registered_secret(tmp_path: Path) -> None:
    from dsetlog.store.log import EventLog
    from dsetlog.store.scan import read_records

    redaction.register(KEY)
    with EventLog.in_dir(tmp_path) as log:
        # made without going through CallFailure: the log's own guard catches it
        log.append_many([AttemptFailed(dataset_id="d", item_id="i", attempt=1, reason=f"echo {KEY} and sk-proj-...wxyz"),
                         JobFailed(job_id="j", error=f"boom {KEY}")])
    raw = (tmp_path / "events.jsonl").read_bytes()
    assert KEY.encode() not in raw and b"wxyz" not in raw
    events = [r.event for r in read_records(tmp_path / "events.jsonl")]  # checksums still hold
    assert events[0].reason == f"echo {redaction.MASK} and {redaction.MASK}"


def test_env_keys_and_tokens_are_registered() -> None:
    redaction.register_env({"OPENAI_API_KEY": KEY, "DSET_API_TOKEN": "tok-0123456789abcdef", "HOME": "/root/home"})
    assert redaction.redact(f"{KEY} tok-0123456789abcdef /root/home") == f"{redaction.MASK} {redaction.MASK} /root/home"


def test_log_records_and_tracebacks_are_redacted() -> None:
    import logging

    redaction.register(KEY)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling with %s", (KEY,), None)
    try:
        raise RuntimeError(f"the provider said {KEY}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert redaction.RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert KEY not in text and text.count(redaction.MASK) == 2
