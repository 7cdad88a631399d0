"""HTTPS for every outbound call: verified TLS, explicit timeouts, our own trust store.

TLS verification cannot be switched off. TLS_CA_BUNDLE *adds* CA certificates (a
site's self-signed SMS Provider certificate, a private CA) to the system store.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import requests

from shared.errors import ConfigurationError, ServiceRefused, ServiceUnavailable
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


def new_session(verify: Path) -> requests.Session:
    """A session that verifies against ``verify`` and ignores proxy/CA environment
    variables (REQUESTS_CA_BUNDLE would silently replace our trust store)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(verify)
    session.headers["User-Agent"] = "cm-remediate"
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


def retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: our own backoff applies


@dataclass(frozen=True)
class ServiceErrors:
    """How one remote service names its failures and what to tell the operator."""

    name: str
    unavailable: type[ServiceUnavailable]
    refused: type[ServiceRefused]
    url_hint: str
    auth_hint: str
    forbidden_hint: str


class BearerClient:
    """HTTPS calls with a bearer token: timeouts; retries with backoff and jitter on
    429/5xx and dropped connections, honouring Retry-After; on 401 one fresh token,
    then a clear error. TLS is always verified."""

    def __init__(
        self,
        session: requests.Session,
        tokens: TokenProvider,
        errors: ServiceErrors,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._errors = errors
        self._retry = retry or RetryPolicy(attempts=5, initial_backoff_seconds=1.0)
        self._timeout = timeout
        self._sleep = sleep

    def request(
        self, method: str, url: str, *, what: str, body: dict[str, Any] | None = None
    ) -> requests.Response:
        """The response to a call that was neither throttled, failing nor unauthorised."""
        e = self._errors
        fresh_token = False
        attempt = 0
        while True:
            attempt += 1
            headers = {
                "Authorization": f"Bearer {self._tokens.token(fresh=fresh_token)}",
                "Accept": "application/json",
            }
            try:
                response = self._session.request(
                    method, url, headers=headers, json=body, timeout=self._timeout
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if isinstance(error, requests.exceptions.SSLError):
                    raise e.refused(
                        f"{e.name} TLS certificate was refused for {what}: {error}; if it is "
                        "signed by a private CA (or is the site's self-signed certificate), "
                        "put that CA in TLS_CA_BUNDLE",
                        status=0,
                    ) from None
                if attempt >= self._retry.attempts:
                    raise e.unavailable(
                        f"{e.name} unreachable for {what} after {attempt} attempts "
                        f"({type(error).__name__}); {e.url_hint}"
                    ) from None
                self._wait(attempt, None, what, type(error).__name__)
                continue
            status = response.status_code
            if status == 401:
                if not fresh_token:
                    fresh_token = True  # the cached token may have expired early
                    attempt -= 1
                    continue
                raise e.refused(
                    f"{e.name} rejected a fresh token for {what} ({odata_error(response)}): "
                    f"{e.auth_hint}",
                    status=401,
                )
            if status == 403:
                raise e.refused(
                    f"{e.name} refused {what} (403 {odata_error(response)}): {e.forbidden_hint}",
                    status=403,
                )
            if status in _RETRY_ALWAYS or (status >= 500 and method == "GET"):
                if attempt >= self._retry.attempts:
                    raise e.unavailable(
                        f"{e.name} answered {status} for {what} {attempt} times; "
                        "it will be tried again later"
                    )
                self._wait(attempt, retry_after(response), what, str(status))
                continue
            if status >= 500:
                # A failed POST may or may not have changed something: the caller re-checks.
                raise e.unavailable(f"{e.name} failed {what} ({status} {odata_error(response)})")
            return response

    def _wait(self, attempt: int, retry_after: float | None, what: str, why: str) -> None:
        delay = self._retry.backoff(attempt, retry_after)
        log.warning(
            "%s: %s got %s; retry %d/%d in %.1fs",
            self._errors.name,
            what,
            why,
            attempt,
            self._retry.attempts - 1,
            delay,
        )
        self._sleep(delay)
