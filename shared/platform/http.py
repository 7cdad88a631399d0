"""HTTPS for every outbound call, and the one pipeline every remote HTTP service uses.

TLS verification cannot be switched off. TLS_CA_BUNDLE *adds* CA certificates (a
site's self-signed SMS Provider certificate, a private CA) to the system store.

:class:`HttpPipeline` is the only place HTTP calls are retried: the AdminService, the
REST web service and the SOAP ConfigMgr WebService all go through it. Its rules, which
docs/reliability.md promises:

- Every call has a (connect, read) timeout, :data:`DEFAULT_TIMEOUT` unless the client
  gives another.
- Retried with the backoff and jitter of :class:`RetryPolicy` (5 attempts unless the
  client gives another policy): a dropped connection or a timeout; 429, 502, 503 and
  504 for any method (the server did nothing); any other 5xx of a GET (reading again
  is harmless). A Retry-After in seconds replaces the backoff, capped at
  ``RetryPolicy.max_retry_after_seconds``.
- A 401 gets one fresh token from the service's token provider, when it has one, and
  the call again; that retry does not count as an attempt.
- Not retried, a typed error naming what to check instead: a TLS certificate that is
  not trusted, a 401 (again), a 403, and a 5xx of a POST that may have changed
  something (the caller re-checks). A SOAP service's 500 is its answer: it carries the
  fault the caller reads.
- One warning per retry names the service, the method and the URL (without user
  information, registered secrets redacted); never a header or a body.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import certifi
import requests
from requests.adapters import HTTPAdapter

from shared.errors import ConfigurationError, ServiceRefused, ServiceUnavailable
from shared.platform.redaction import secrets
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import TokenProvider

log = logging.getLogger(__name__)

#: (connect, read) seconds for every HTTP call.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)

_SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian/Ubuntu, Azure's Linux images
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # RHEL family
)


def _system_bundle() -> Path:
    for path in _SYSTEM_BUNDLES:
        if path.is_file():
            return path
    return Path(certifi.where())


def trust_store(extra_ca_bundle: Path | None) -> Path:
    """A PEM file of the system CAs plus ``extra_ca_bundle`` (requests replaces, not adds)."""
    system = _system_bundle()
    if extra_ca_bundle is None:
        return system
    try:
        extra = extra_ca_bundle.read_text(encoding="ascii")
        ssl.create_default_context(cadata=extra)  # refuse a file that holds no certificate
    except (OSError, UnicodeDecodeError, ssl.SSLError, ValueError) as error:
        raise ConfigurationError(
            f"TLS_CA_BUNDLE: {extra_ca_bundle} is not a readable PEM file of CA certificates "
            f"({error})"
        ) from None
    with _combined_lock:
        # One file per distinct bundle: every runtime of a process (the CLI, tests) reuses it.
        combined = _combined.get((system, extra))
        if combined is None or not combined.is_file():
            combined = Path(tempfile.mkdtemp(prefix="cm-remediate-tls-")) / "ca-bundle.pem"
            combined.write_text(system.read_text(encoding="ascii") + "\n" + extra, encoding="ascii")
            _combined[(system, extra)] = combined
    return combined


_combined: dict[tuple[Path, str], Path] = {}
_combined_lock = threading.Lock()


#: Connections kept open per host: as many as invocations run at once (host.json
#: batchSize + newBatchThreshold) and then some, so a busy instance reuses its TLS
#: connections instead of opening (and verifying) new ones; requests' default is 10.
POOL_SIZE: Final = 64


def new_session(verify: Path) -> requests.Session:
    """A session that verifies against ``verify`` and ignores proxy/CA environment
    variables (REQUESTS_CA_BUNDLE would silently replace our trust store)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(verify)
    session.headers["User-Agent"] = "cm-remediate"
    adapter = HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


#: Safe to repeat for any method: the server refused before doing anything.
_RETRY_ALWAYS = frozenset({429, 502, 503, 504})


def odata_error(response: requests.Response) -> str:
    """The ``{"error": {"code", "message"}}`` of an answer, or the start of its text."""
    try:
        error = response.json().get("error", {})
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return response.text[:200]


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: our own backoff applies


def _loggable_url(url: str) -> str:
    """``url`` as a log line may show it: no user information, registered secrets
    (a key in the query string) redacted."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return secrets.redact(urlunsplit(parts._replace(netloc=host, fragment="")))


@dataclass(frozen=True)
class RemoteService:
    """One remote service as the pipeline calls it: its name in messages, its typed
    errors, and what the operator should check for each kind of failure."""

    name: str
    unavailable: type[ServiceUnavailable]
    refused: type[ServiceRefused]
    #: When no attempt was answered.
    url_hint: str
    #: After a 401 (with a token provider: to a fresh token).
    auth_hint: str
    #: After a 403.
    forbidden_hint: str
    #: ``json``: answers in JSON, whose errors are worth quoting; a failed POST raises.
    #: ``soap``: SOAP 1.1 behind IIS: a fault is a 500 whose envelope the caller reads,
    #: and an error page is not worth quoting.
    protocol: Literal["json", "soap"] = "json"


class HttpPipeline:
    """Calls to one remote service: timeouts, retries, token refresh, logging and
    typed errors as the module docstring describes. TLS is always verified."""

    def __init__(
        self,
        session: requests.Session,
        service: RemoteService,
        *,
        tokens: TokenProvider | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent: int | None = None,
    ) -> None:
        self._session = session
        self._service = service
        self._tokens = tokens
        self._retry = retry or RetryPolicy(attempts=5)
        self._timeout = timeout
        self._sleep = sleep
        # At most this many requests of this process on the wire at once; a request
        # waiting out a backoff holds no slot.
        self._slots: AbstractContextManager[object] = (
            threading.BoundedSemaphore(max_concurrent) if max_concurrent else nullcontext()
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        body: dict[str, Any] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """The answer to ``method url`` (``body`` as JSON, or ``data`` as is) that was
        neither throttled, failing, unauthorised nor forbidden; ``what`` names the call
        in errors and logs."""
        s = self._service
        fresh_token = False
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._slots:
                    response = self._session.request(
                        method,
                        url,
                        headers=self._headers(headers, fresh_token=fresh_token),
                        json=body,
                        data=data,
                        timeout=self._timeout,
                    )
            except (requests.ConnectionError, requests.Timeout) as error:
                if isinstance(error, requests.exceptions.SSLError):
                    raise s.refused(
                        f"{s.name} TLS certificate was refused for {what}: {error}; if it is "
                        "signed by a private CA (or is the site's self-signed certificate), "
                        "put that CA in TLS_CA_BUNDLE",
                        status=0,
                    ) from None
                if attempt >= self._retry.attempts:
                    raise s.unavailable(
                        f"{s.name} unreachable for {what} after {attempt} attempts "
                        f"({type(error).__name__}); {s.url_hint}"
                    ) from None
                self._wait(attempt, None, method, url, what, type(error).__name__)
                continue
            status = response.status_code
            if status == 401 and self._tokens is not None and not fresh_token:
                fresh_token = True  # the cached token may have expired early
                attempt -= 1
                continue
            if status in (401, 403):
                raise self._refusal(response, what, fresh_token=fresh_token)
            if status in _RETRY_ALWAYS or (status >= 500 and method == "GET"):
                if attempt >= self._retry.attempts:
                    raise s.unavailable(
                        f"{s.name} answered {status} for {what} {attempt} times; "
                        "it will be tried again later"
                    )
                self._wait(attempt, _retry_after(response), method, url, what, str(status))
                continue
            if status >= 500 and s.protocol == "json":
                # A failed POST may or may not have changed something: the caller re-checks.
                raise s.unavailable(f"{s.name} failed {what} ({status} {odata_error(response)})")
            return response

    def _headers(self, extra: Mapping[str, str] | None, *, fresh_token: bool) -> dict[str, str]:
        headers = dict(extra or {})
        if self._service.protocol == "json":
            headers["Accept"] = "application/json"
        if self._tokens is not None:
            headers["Authorization"] = f"Bearer {self._tokens.token(fresh=fresh_token)}"
        return headers

    def _refusal(
        self, response: requests.Response, what: str, *, fresh_token: bool
    ) -> ServiceRefused:
        s = self._service
        status = response.status_code
        error = odata_error(response) if s.protocol == "json" else ""
        detail = f" ({error})" if error else ""
        if status == 401 and fresh_token:
            return s.refused(
                f"{s.name} rejected a fresh token for {what}{detail}: {s.auth_hint}", status=status
            )
        hint = s.auth_hint if status == 401 else s.forbidden_hint
        return s.refused(f"{s.name} refused {what} with {status}{detail}: {hint}", status=status)

    def _wait(
        self, attempt: int, retry_after: float | None, method: str, url: str, what: str, why: str
    ) -> None:
        delay = self._retry.backoff(attempt, retry_after)
        log.warning(
            "%s: %s %s (%s) got %s; retry %d/%d in %.1fs",
            self._service.name,
            method,
            _loggable_url(url),
            what,
            why,
            attempt,
            self._retry.attempts - 1,
            delay,
        )
        self._sleep(delay)
