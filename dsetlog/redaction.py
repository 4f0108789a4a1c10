"""Secrets (provider API keys, DSET_API_TOKEN) and their redaction from everything that leaves the process.

Real providers echo the key they were sent in their error texts, in full, masked (``sk-abc1...wxyz``,
``sk-proj-****wxyz``) or URL-encoded inside a URL. Every secret the process knows is registered here,
and :func:`redact` replaces each of those forms with ``[REDACTED]``. It is applied where text from outside
becomes ours (a classified call failure), and once more, as a last guard, to every event's bytes before
the log writes them, so no event, snapshot, response, progress line or stderr message can carry one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
_MIN_LENGTH = 8  # shorter values ("none", "x") are placeholders, and redacting them would garble text
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_bytes: tuple[bytes, ...] = ()
_fragments: tuple[bytes, ...] = ()  # every masked form holds one of these: a key's last 4 or first 6 characters
# the masks providers put between the visible head and tail of a key
_MASK_RUN = r"(?:\*{2,}|\.{2,}|…+|•{2,}|x{4,}|X{4,})"


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it (and its echoed forms) from now on."""
    if not secret or len(secret) < _MIN_LENGTH:
        return
    global _pattern, _bytes, _fragments
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        _pattern = _compile(_secrets)
        forms = {f.encode() for s in _secrets for f in _forms(s)}
        _bytes = tuple(sorted(forms, key=len, reverse=True))
        _fragments = tuple({f.encode() for s in _secrets for f in (s[-4:], s[:6])})


def register_env(env: Mapping[str, str] | None = None) -> None:
    """Register every ``*_API_KEY`` and ``*_TOKEN`` value of the environment (``.env`` loaded first)."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET")):
            register(value)


def redact(text: str) -> str:
    """``text`` with every registered secret, whole, URL-encoded or masked, replaced by ``[REDACTED]``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_bytes(data: bytes) -> bytes:
    """The log writer's guard: every form of a registered secret replaced in encoded event bytes.

    Costs one substring search per form and fragment when nothing matches. Keys are printable ASCII, so each form
    appears in the JSON exactly as it is and the replacement keeps the JSON valid.
    """
    if not _bytes:
        return data
    for form in _bytes:
        if form in data:
            data = data.replace(form, MASK.encode())
    # the regex pass only where a masked form can be: most batches hold no fragment of any key
    if _pattern is not None and any(fragment in data for fragment in _fragments):
        text = data.decode("utf-8", "surrogateescape")
        cleaned = redact(text)
        if cleaned != text:
            data = cleaned.encode("utf-8", "surrogateescape")
    return data


class RedactingFilter(logging.Filter):
    """A logging filter for a handler: the message and any traceback text pass through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def clear() -> None:
    """Forget every secret (tests)."""
    global _pattern, _bytes, _fragments
    with _lock:
        _secrets.clear()
        _pattern, _bytes, _fragments = None, (), ()


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


def _compile(secrets: set[str]) -> re.Pattern[str]:
    alternatives = []
    for secret in sorted(secrets, key=len, reverse=True):
        alternatives.extend(re.escape(f) for f in sorted(_forms(secret), key=len, reverse=True))
        # a masked echo: some of the key's head, a mask, some of its tail (either part may be missing,
        # not both): sk-abc1...wxyz, sk-proj-****wxyz, ...wxyz, sk-abc123****
        heads = [re.escape(secret[:k]) for k in range(min(12, len(secret) - 4), 1, -1)]
        tails = [re.escape(secret[-k:]) for k in range(min(8, len(secret) // 2), 3, -1)]
        head, tail = "|".join(heads), "|".join(tails)
        alternatives.append(f"(?:{head})?{_MASK_RUN}(?:{tail})")
        alternatives.append(f"(?:{'|'.join(heads[: max(1, len(heads) - 4)])}){_MASK_RUN}")
    return re.compile("|".join(alternatives))
