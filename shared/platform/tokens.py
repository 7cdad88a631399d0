"""Entra ID tokens with MSAL: delegated (service account) and app-only.

The AdminService accepts only tokens of a ConfigMgr administrative *user*, so the
unattended path is a synced service account with username and password (no MFA). A
customer web service may accept app-only tokens (client secret or certificate).

Tokens are cached in-process by MSAL and reused until shortly before they expire.
Neither tokens nor credentials are ever logged or put in an exception message; each
token is registered with :mod:`shared.platform.redaction` as it arrives, so that a library that
logs one at DEBUG logs ``***`` instead.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import msal
import msal.exceptions
import requests

from shared.errors import SignInNeeded, TokenEndpointUnavailable, TokenError
from shared.platform.redaction import secrets
from shared.platform.session_store import SessionStore
from shared.platform.telemetry import telemetry

log = logging.getLogger(__name__)

#: Hosts MSAL knows; anything else (a sovereign cloud, the local simulator) is used as
#: given, without instance discovery.
_MICROSOFT_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
)

#: AADSTS codes an operator can act on, and what to check.
_HINTS = {
    50126: "the service account's user name or password is wrong: check ADMINSERVICE_USERNAME "
    "and ADMINSERVICE_PASSWORD (was the password rotated?)",
    50076: "the service account must pass MFA: exclude it from MFA with a conditional access "
    "policy restricted to the function app's location",
    50079: "the service account must register for MFA: exclude it from MFA",
    50053: "the service account is locked out after too many failed sign-ins",
    50057: "the service account is disabled",
    50034: "the service account does not exist in this tenant: check ADMINSERVICE_USERNAME",
    7000215: "the client secret is wrong or expired: check ENTRA_CLIENT_SECRET",
    7000222: "the client secret has expired: create a new one",
    700016: "the application is not found in the tenant: check ENTRA_CLIENT_ID and ENTRA_TENANT_ID",
    90002: "the tenant is not found: check ENTRA_TENANT_ID",
    500011: "the resource of the scope is not in the tenant: check ADMINSERVICE_SCOPE / "
    "WEBSERVICE_SCOPE",
    65001: "consent is missing: grant admin consent to the client app's API permission",
    7000218: "the app registration is confidential: give ENTRA_CLIENT_SECRET or a certificate, "
    "or allow public client flows",
}


class TokenProvider(Protocol):
    """Something that hands out bearer tokens for one resource."""

    def token(self, *, fresh: bool = False) -> str:
        """A valid access token; ``fresh`` skips the cache (after a 401)."""
        ...


def _describe(result: dict[str, Any], who: str) -> str:
    codes = result.get("error_codes") or []
    hint = next((_HINTS[c] for c in codes if c in _HINTS), None)
    description = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
    text = f"Entra ID refused a token for {who}: {result.get('error')}: {description}"
    return f"{text}; {hint}" if hint else text


def _msal_options(host: str, tenant: str, session: requests.Session) -> dict[str, Any]:
    """The options of an MSAL application: the authority URL, instance discovery only
    for hosts MSAL knows, our session (our trust store) and a timeout."""
    return {
        "authority": f"{host.rstrip('/')}/{tenant}",
        "instance_discovery": (urlsplit(host).hostname or "") in _MICROSOFT_HOSTS,
        "http_client": session,
        "timeout": 30,
    }


#: After Entra ID refuses a sign-in, ask again only this much later: every message
#: retrying its own sign-in would lock the service account out (smart lockout counts
#: each wrong password) long before an operator reads the first error. (MSAL alone
#: answers an identical request from its cache of HTTP 400s for only 60 s.)
REFUSAL_PAUSE_SECONDS = 300.0


class _MsalTokens:
    """Shared MSAL plumbing: one application object, created once, with its cache."""

    #: What signs in, for the token failure metric.
    credential_kind: ClassVar[str] = "application"

    def __init__(
        self,
        who: str,
        scope: str,
        factory: Callable[[], Any],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._who = who
        self._scopes = [scope]
        self._lock = threading.Lock()
        self._factory = factory
        self._application: Any = None
        self._monotonic = monotonic
        self._refused: tuple[float, str] | None = None

    @property
    def _app(self) -> Any:
        # Created on first use: MSAL reads the authority's discovery document when the
        # application is built, and a down endpoint must be a retryable error then.
        if self._application is None:
            self._application = self._guard(self._factory)
        return self._application

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except requests.exceptions.SSLError:
            raise TokenError(
                f"Entra ID's TLS certificate was refused for {self._who}: check "
                "ENTRA_AUTHORITY_HOST; a private CA (a proxy that inspects TLS) belongs in "
                "TLS_CA_BUNDLE"
            ) from None
        except (requests.RequestException, OSError, msal.exceptions.MsalServiceError) as error:
            raise TokenEndpointUnavailable(
                f"Entra ID did not answer a token request for {self._who} "
                f"({type(error).__name__}); check ENTRA_AUTHORITY_HOST and the network"
            ) from None
        except ValueError as error:  # MSAL raises ValueError on unusable discovery documents
            raise TokenEndpointUnavailable(
                f"Entra ID authority is unusable for {self._who}: {error}"
            ) from None

    def _call(self, acquire: Callable[[], Any]) -> str:
        if self._refused is not None:
            since, refusal = self._refused
            waited = self._monotonic() - since
            if waited < REFUSAL_PAUSE_SECONDS:
                raise TokenError(
                    f"{refusal} [not asked again for {REFUSAL_PAUSE_SECONDS - waited:.0f} s, "
                    "so that retries cannot lock the account out; fix the cause and restart "
                    "the app to try at once]"
                )
        log.info("requesting a new token for %s", self._who)
        try:
            result = _registered(self._guard(acquire))
        except TokenEndpointUnavailable:
            self._count_failure("unavailable")
            raise
        except TokenError:
            self._count_failure("tls")
            raise
        if not result or "access_token" not in result:
            code = str((result or {}).get("error") or "no_result")
            self._count_failure(code)
            if code in {"temporarily_unavailable", "server_error"}:
                raise TokenEndpointUnavailable(_describe(result or {}, self._who))
            refusal = _describe(result or {"error": "no_result"}, self._who)
            self._refused = (self._monotonic(), refusal)
            raise TokenError(refusal)
        self._refused = None
        return str(result["access_token"])

    def _count_failure(self, failure: str) -> None:
        where = {"credential": self.credential_kind, "failure": failure}
        telemetry.record("cmremediate.token.failures", 1, where)


class DelegatedTokens(_MsalTokens):
    """Tokens of the service account (ROPC), for the AdminService."""

    credential_kind: ClassVar[str] = "service account"

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        username: str,
        password: str,
        scope: str,
        session: requests.Session,
        client_secret: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        options = _msal_options(authority_host, tenant_id, session)

        def factory() -> Any:
            if client_secret:
                return msal.ConfidentialClientApplication(
                    client_id, client_credential=client_secret, **options
                )
            return msal.PublicClientApplication(client_id, **options)

        super().__init__(f"the service account {username}", scope, factory, monotonic=monotonic)
        self._username = username
        self._password = password

    def token(self, *, fresh: bool = False) -> str:
        """A token for the service account, from the cache unless ``fresh``."""
        with self._lock:
            if not fresh:
                for account in self._app.get_accounts(username=self._username):
                    cached = self._silent(account)
                    if cached and "access_token" in cached:
                        return str(cached["access_token"])
            with warnings.catch_warnings():
                # MSAL discourages ROPC; the AdminService leaves no other unattended flow.
                warnings.simplefilter("ignore", DeprecationWarning)
                return self._call(
                    lambda: self._app.acquire_token_by_username_password(
                        self._username, self._password, scopes=self._scopes
                    )
                )

    def _silent(self, account: Any) -> Any:
        """The cached token, refreshed by MSAL if it can (which may call Entra ID)."""
        return _registered(
            self._guard(lambda: self._app.acquire_token_silent(self._scopes, account=account))
        )


def _registered(result: Any) -> Any:
    """MSAL's result, its tokens now known to the log redaction."""
    if isinstance(result, dict):
        secrets.add_token(
            *(str(result[k]) for k in ("access_token", "refresh_token") if result.get(k))
        )
    return result


class SessionTokens(_MsalTokens):
    """Tokens of the session an admin opened with ``cmremediate sign-in`` (device code,
    MFA), for the AdminService (``ADMINSERVICE_AUTH=refresh-token``): no password.

    MSAL refreshes from the stored cache; a rotated refresh token is written back to
    the store conditionally (see :mod:`shared.platform.session_store`). When the session
    is gone (revoked, expired, a password reset, a sign-in frequency policy), every
    call raises :class:`SignInNeeded` naming the cure; the store is read again first,
    in case an admin has signed in anew meanwhile."""

    credential_kind: ClassVar[str] = "signed-in session"

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        scope: str,
        session: requests.Session,
        store: SessionStore,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        options = _msal_options(authority_host, tenant_id, session)
        self._cache = msal.SerializableTokenCache()
        self._store = store
        self._version: str | None = None
        self._loaded = False

        def factory() -> Any:
            return msal.PublicClientApplication(client_id, token_cache=self._cache, **options)

        super().__init__("the signed-in session", scope, factory, monotonic=monotonic)

    def token(self, *, fresh: bool = False) -> str:
        """An access token of the session, refreshed (and the cache kept) as needed."""
        with self._lock:
            if not self._loaded:
                self._load()
            result = self._silent(fresh)
            if "access_token" not in result:
                self._load()  # an admin may have signed in anew since
                result = self._silent(fresh)
            if "access_token" not in result:
                self._count_failure(str(result.get("error") or "no_session"))
                raise SignInNeeded(self._refusal(result))
            self._keep()
            return str(result["access_token"])

    def _load(self) -> None:
        stored = self._store.load()
        self._cache.deserialize(stored.text if stored is not None else None)
        self._version = stored.version if stored is not None else None
        self._loaded = True
        secrets.add_token(*_refresh_tokens(self._cache))

    def _silent(self, fresh: bool) -> dict[str, Any]:
        accounts = self._app.get_accounts()
        if not accounts:
            return {"error": "no_session"}
        result = _registered(
            self._guard(
                lambda: self._app.acquire_token_silent_with_error(
                    self._scopes, account=accounts[0], force_refresh=fresh
                )
            )
        )
        if result is None:
            return {"error": "no_session"}
        if str(result.get("error")) in {"temporarily_unavailable", "server_error"}:
            self._count_failure("unavailable")
            raise TokenEndpointUnavailable(_describe(result, self._who))
        return dict(result)

    def _keep(self) -> None:
        """Write a changed cache (a rotated refresh token) back, if nobody else wrote
        since it was read; else adopt theirs (ours stays valid until it expires)."""
        if not self._cache.has_state_changed:
            return
        secrets.add_token(*_refresh_tokens(self._cache))
        saved = self._store.save(self._cache.serialize(), self._version)
        if saved is None:
            log.info("another instance renewed the AdminService session first; using its")
            self._load()
        else:
            self._version = saved
        self._cache.has_state_changed = False

    def _refusal(self, result: dict[str, Any]) -> str:
        if result.get("error") == "no_session":
            found = (
                "no session is stored" if self._version is None else "the session holds no account"
            )
        else:
            found = _describe(result, self._who)
        return (
            f"sign-in needed: run cmremediate sign-in ({found}; {self._store.where}). Requests "
            "wait in the queue until then; afterwards requeue the poison queue"
        )


@dataclass(frozen=True)
class SignedIn:
    """A session opened by device code: whose, and MSAL's serialized cache (secret)."""

    username: str
    cache_text: str


def sign_in_by_device_code(
    *,
    authority_host: str,
    tenant_id: str,
    client_id: str,
    scope: str,
    session: requests.Session,
    show: Callable[[str], None],
    expected_username: str | None = None,
) -> SignedIn:
    """Open a session by the device-code flow: ``show`` gets Entra ID's instructions
    (the URL and the user code, no secret) for the admin, who signs in with MFA as
    usual; returns once the sign-in completes. Raises TokenError when it does not, or
    when another account than ``expected_username`` signed in."""
    cache = msal.SerializableTokenCache()
    options = _msal_options(authority_host, tenant_id, session)
    app = msal.PublicClientApplication(client_id, token_cache=cache, **options)
    flow = app.initiate_device_flow(scopes=[scope])
    if "user_code" not in flow:
        raise TokenError(
            f"Entra ID refused to start a device-code sign-in: {_describe(flow, client_id)}"
        )
    show(str(flow["message"]))
    result = _registered(app.acquire_token_by_device_flow(flow))
    if not result or "access_token" not in result:
        raise TokenError(_describe(result or {"error": "no_result"}, "the device-code sign-in"))
    username = str((result.get("id_token_claims") or {}).get("preferred_username") or "")
    if expected_username and username.casefold() != expected_username.casefold():
        raise TokenError(
            f"{username or 'an unknown account'} signed in, not {expected_username} (the "
            "remediation account, ADMINSERVICE_USERNAME): nothing was stored; sign in again "
            "with that account"
        )
    secrets.add_token(*_refresh_tokens(cache))
    return SignedIn(username, cache.serialize())


def _refresh_tokens(cache: Any) -> list[str]:
    """The refresh tokens a serialized cache holds, so that no log line can carry one."""
    return [str(item.get("secret")) for item in cache.search("RefreshToken") if item.get("secret")]


class AppTokens(_MsalTokens):
    """App-only tokens (client credentials), for a web service that accepts them."""

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        scope: str,
        session: requests.Session,
        client_secret: str | None = None,
        certificate_path: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_secret:
            credential: Any = client_secret
        elif certificate_path is not None:
            credential = _certificate_credential(certificate_path)
        else:
            raise TokenError(
                "app-only tokens need ENTRA_CLIENT_SECRET or ENTRA_CLIENT_CERTIFICATE_PATH"
            )
        options = _msal_options(authority_host, tenant_id, session)
        super().__init__(
            f"the application {client_id}",
            scope,
            lambda: msal.ConfidentialClientApplication(
                client_id, client_credential=credential, **options
            ),
            monotonic=monotonic,
        )

    def token(self, *, fresh: bool = False) -> str:
        """An app-only token; MSAL's token cache serves it until near expiry."""
        # A claims challenge makes MSAL skip its cache and ask Entra ID again.
        claims = '{"access_token": {}}' if fresh else None
        with self._lock:
            return self._call(
                lambda: self._app.acquire_token_for_client(self._scopes, claims_challenge=claims)
            )


def _certificate_credential(path: Path) -> dict[str, Any]:
    """MSAL's certificate credential from a PEM holding the private key and certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    pem = path.read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise TokenError(
            f"ENTRA_CLIENT_CERTIFICATE_PATH: {path} holds no PEM certificate ({error})"
        ) from None
    if b"PRIVATE KEY" not in pem:
        raise TokenError(f"ENTRA_CLIENT_CERTIFICATE_PATH: {path} holds no private key")
    return {
        "private_key": pem.decode("ascii"),
        "thumbprint": certificate.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - x5t is SHA-1
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }
