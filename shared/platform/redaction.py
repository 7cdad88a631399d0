"""Known secret values never reach a log handler, whoever logs them.

cm-remediate's own code logs no secret. Libraries are another matter, at levels an
operator may switch on while chasing a problem (urllib3, MSAL, the Azure SDK at DEBUG).
So the runtime registers every secret it holds (settings, and each token as it is
issued) here, and a log record factory — which, unlike a handler or logger filter, sees
every record of every logger whatever handlers the host or the CLI installs — replaces
them in the message, its traceback and its stack before any handler formats it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit
from xml.sax.saxutils import escape

from shared.platform.connection_strings import parse_odbc

REDACTED: Final = "***"
#: Shorter values would blot out ordinary words; no real secret is this short.
MIN_LENGTH: Final = 8
#: Tokens are replaced hourly: keep the recent ones, not every one since start.
_MAX_TOKENS: Final = 64
#: Connection string keywords whose values are secrets.
_ODBC_SECRET_KEYS: Final = frozenset({"pwd", "password"})
_STORAGE_SECRET_KEYS: Final = frozenset({"accountkey", "sharedaccesssignature"})


def encodings(secret: str) -> set[str]:
    """The forms a secret takes on its way out: as is, URL-encoded, JSON- and
    XML-escaped, base64 (as in a Basic header)."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        escape(secret),
        base64.b64encode(secret.encode("utf-8")).decode("ascii"),
    }
    return {form for form in forms if len(form) >= MIN_LENGTH}


class SecretRegistry:
    """The secret values of this process, longest first (a secret that contains
    another is replaced whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._static: set[str] = set()
        self._tokens: deque[str] = deque(maxlen=_MAX_TOKENS)
        self._forms: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        """Secrets held for the life of the process (settings)."""
        self._add(values, self._static.add)

    def add_token(self, *values: str | None) -> None:
        """A token just issued (only the most recent ones are kept)."""
        self._add(values, self._tokens.append)

    def _add(self, values: Iterable[str | None], store: Any) -> None:
        with self._lock:
            changed = False
            for value in values:
                if value and len(value) >= MIN_LENGTH and value not in self._known():
                    store(value)
                    changed = True
            if changed:
                forms = {f for value in self._known() for f in encodings(value)}
                self._forms = tuple(sorted(forms, key=len, reverse=True))

    def _known(self) -> set[str]:
        return self._static | set(self._tokens)

    def redact(self, text: str) -> str:
        """``text`` with every known secret (in any of its forms) replaced."""
        for form in self._forms:  # a tuple swapped whole: no lock needed to read it
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def clear(self) -> None:
        """Forget every secret (tests)."""
        with self._lock:
            self._static.clear()
            self._tokens.clear()
            self._forms = ()


#: The process's registry: the runtime fills it, the record factory reads it.
secrets = SecretRegistry()


def connection_string_secrets(odbc: str | None = None, storage: str | None = None) -> list[str]:
    """The secret parts of connection strings (and the strings themselves)."""
    found: list[str] = []
    if odbc:
        found.append(odbc)
        # Settings validation has refused a string that does not parse.
        with contextlib.suppress(ValueError):
            found += [a.value for a in parse_odbc(odbc) if a.key in _ODBC_SECRET_KEYS]
    if storage:
        found.append(storage)
        for part in storage.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() in _STORAGE_SECRET_KEYS:
                found.append(value.strip())
    return found


def url_secrets(*urls: str | None) -> list[str]:
    """Query-string values of URLs: a web service behind Azure Functions or API
    Management may carry its key there (``?code=...``), and URLs end up in errors."""
    return [
        value
        for url in urls
        if url
        for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=False)
    ]


def _redact_record(record: logging.LogRecord) -> None:
    if not secrets._forms:
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging reports it itself, later
        message = str(record.msg)
    clean = secrets.redact(message)
    if clean != message:
        # Formatted now: arguments may hold a secret that only formatting reveals.
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        clean = secrets.redact(text)
        if clean != text:
            # Handlers that render exc_info themselves would show the secret again: they
            # get the redacted text only.
            record.exc_info, record.exc_text = None, clean
    if record.stack_info:
        record.stack_info = secrets.redact(record.stack_info)


class _RedactingFactory:
    """The log record factory: the previous factory's record, redacted."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.previous(*args, **kwargs)
        _redact_record(record)
        return record


_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Redact known secrets in every log record from now on (idempotent)."""
    with _install_lock:
        if not isinstance(logging.getLogRecordFactory(), _RedactingFactory):
            logging.setLogRecordFactory(_RedactingFactory(logging.getLogRecordFactory()))
