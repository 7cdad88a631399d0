"""Who may call: delegated RS256 bearer tokens of a ConfigMgr administrative user,
checked against the issuer's JWKS fetched over HTTPS, with errors in the shape Entra
ID-protected APIs answer (RFC 6750 ``WWW-Authenticate``)."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import jwt

from devstack.adminservice.odata import _MAX_BODY, ODataError
from devstack.tls import LocalCA

DEFAULT_AUDIENCE: Final = "https://ConfigMgrService"
REQUIRED_SCOPE: Final = "user_impersonation"
_JWKS_TIMEOUT: Final = 5.0


def _header_safe(text: str, limit: int = 300) -> str:
    # A WWW-Authenticate quoted-string: no quotes, backslashes or control characters.
    cleaned = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "?" for ch in text)
    return cleaned[:limit]


class KeysUnavailable(Exception):
    """The JWKS could not be fetched or parsed."""


class SigningKeys:
    """The issuer's signing keys, fetched over HTTPS and cached; an unknown kid refetches."""

    def __init__(self, uri: str, context: ssl.SSLContext, timeout: float, cooldown: float) -> None:
        self._uri = uri
        self._cooldown = cooldown
        self._fetched_at = float("-inf")
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler(
                {}
            ),  # a proxy from the environment must not catch localhost
            urllib.request.HTTPSHandler(context=context),
        )
        self._timeout = timeout
        self._keys: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def for_kid(self, kid: str | None) -> list[Any]:
        """The keys a token with this ``kid`` may be signed with (all of them without one)."""
        with self._lock:
            unknown = kid is not None and self._keys is not None and kid not in self._keys
            # Microsoft's validator refreshes on an unknown kid at most every few minutes;
            # the cooldown (0 by default, for tests) models that.
            if self._keys is None or (
                unknown and time.monotonic() - self._fetched_at >= self._cooldown
            ):
                self._keys = self._fetch()  # a failed fetch keeps the old cache
            if kid is None:
                return list(self._keys.values())
            key = self._keys.get(kid)
            return [] if key is None else [key]

    def _fetch(self) -> dict[str, Any]:
        self.fetches += 1
        self._fetched_at = time.monotonic()
        try:
            request = urllib.request.Request(self._uri, headers={"Accept": "application/json"})  # noqa: S310 (https only, checked)
            with self._opener.open(request, timeout=self._timeout) as response:
                document = json.loads(response.read(_MAX_BODY))
        except (OSError, ValueError, urllib.error.URLError) as error:
            raise KeysUnavailable(f"the signing keys could not be fetched ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeysUnavailable("the JWKS document has no 'keys' list")
        keys: dict[str, Any] = {}
        for index, entry in enumerate(document["keys"]):
            if not isinstance(entry, dict) or entry.get("kty") != "RSA":
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry, algorithm="RS256").key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else f"#{index}"] = key
        return keys


@dataclass(frozen=True, slots=True)
class _Principal:
    upn: str


def http_timestamp(value: object) -> str:
    """A token's ``exp``/``nbf`` as the Microsoft services print it in their refusals."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).strftime("%m/%d/%Y %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            pass
    return str(value)


class BearerAuth:
    """Checks the bearer token of every request: signature, audience, issuer, lifetime,
    scope, and the user's UPN among the ConfigMgr administrative users."""

    def __init__(
        self,
        ca: LocalCA,
        *,
        jwks_uri: str,
        issuer: str,
        audiences: Iterable[str],
        admins: Iterable[str],
        app_only_status: Literal[401, 403],
        mfa_required: bool,
        jwks_refresh_cooldown: float,
    ) -> None:
        if urlsplit(jwks_uri).scheme != "https":
            raise ValueError("jwks_uri must be an https:// URL (metadata is only fetched over TLS)")
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.app_only_status = app_only_status
        self.mfa_required = mfa_required
        client_context = ssl.create_default_context(cafile=str(ca.bundle_path))
        self._keys = SigningKeys(jwks_uri, client_context, _JWKS_TIMEOUT, jwks_refresh_cooldown)
        self._admins = {upn.casefold() for upn in admins}
        self._lock = threading.Lock()
        self._expired_before: int | None = None

    @property
    def jwks_fetches(self) -> int:
        """How often the signing keys were fetched."""
        return self._keys.fetches

    def expire_tokens_issued_before(self, when: datetime | None) -> None:
        """Treat tokens issued before ``when`` as expired; None undoes it."""
        with self._lock:
            if when is None:
                self._expired_before = None
            else:
                aware = when if when.tzinfo else when.replace(tzinfo=UTC)
                self._expired_before = int(aware.timestamp())

    def authenticate(self, headers: Message) -> _Principal:
        """The caller, or the 401 or 403 answer as an ODataError."""
        values = headers.get_all("Authorization") or []
        if not values:
            # RFC 6750 §3.1: no error code when the request carries no credentials.
            raise ODataError(
                401,
                "Authorization has been denied for this request: no bearer token.",
                headers=(("WWW-Authenticate", "Bearer"),),
            )
        if len(values) > 1:
            raise self._invalid_token("More than one Authorization header")
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer":
            raise ODataError(
                401,
                f"Authorization has been denied for this request: scheme '{scheme}' is not Bearer.",
                headers=(("WWW-Authenticate", "Bearer"),),
            )
        if not token or any(ch.isspace() for ch in token):
            raise self._invalid_token("The token is malformed")
        claims = self._verify(token)
        self._check_fresh(claims)

        scopes = claims.get("scp")
        scope_list = scopes.split() if isinstance(scopes, str) else []
        if REQUIRED_SCOPE not in scope_list:
            what = (
                "an app-only token (roles, no scp) is not accepted: the AdminService needs a "
                "delegated token of a ConfigMgr administrative user"
                if not scope_list
                else f"the token lacks the '{REQUIRED_SCOPE}' scope"
            )
            if self.app_only_status == 401:
                raise self._invalid_token(what[0].upper() + what[1:])
            raise ODataError(
                403,
                f"Forbidden: {what}.",
                headers=(
                    (
                        "WWW-Authenticate",
                        f'Bearer error="insufficient_scope", scope="{REQUIRED_SCOPE}", '
                        f'error_description="{_header_safe(what)}"',
                    ),
                ),
            )
        if self.mfa_required:
            raise ODataError(
                403,
                "Forbidden: the site requires multi-factor authentication for SMS Provider "
                "calls, which token authentication cannot satisfy.",
            )
        upn = claims.get("upn")
        if not isinstance(upn, str) or not upn:
            raise ODataError(
                403, "Forbidden: the token has no 'upn' to map to a ConfigMgr administrative user."
            )
        if upn.casefold() not in self._admins:
            raise ODataError(403, f"Forbidden: '{upn}' is not a ConfigMgr administrative user.")
        return _Principal(upn)

    def _invalid_token(self, description: str) -> ODataError:
        return ODataError(
            401,
            f"Authorization has been denied for this request: {description}.",
            headers=(
                (
                    "WWW-Authenticate",
                    'Bearer error="invalid_token", '
                    f'error_description="{_header_safe(description)}"',
                ),
            ),
        )

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._invalid_token("The token is malformed") from None
        if header.get("alg") != "RS256":
            raise self._invalid_token(
                f"The signature algorithm '{header.get('alg')}' is not accepted"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._invalid_token("The token is malformed (kid)")
        try:
            keys = self._keys.for_kid(kid)
        except KeysUnavailable as error:
            raise self._invalid_token(f"The signature key was not found: {error}") from None
        if not keys:
            raise self._invalid_token("The signature key was not found")
        unverified = self._unverified_claims(token)
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    audience=list(self.audiences),
                    issuer=self.issuer,
                    leeway=0,
                    # iat is checked by expire_tokens_issued_before only: Microsoft's
                    # validator ignores it, so a skewed clock must not fail here.
                    options={"require": ["exp", "iss", "aud"], "verify_iat": False},
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid, another key may fit
            except jwt.ExpiredSignatureError:
                raise self._invalid_token(
                    f"The token expired at '{http_timestamp(unverified.get('exp'))}'"
                ) from None
            except jwt.ImmatureSignatureError:
                raise self._invalid_token(
                    f"The token is not valid before '{http_timestamp(unverified.get('nbf'))}'"
                ) from None
            except jwt.InvalidAudienceError:
                raise self._invalid_token(
                    f"The audience '{unverified.get('aud')}' is invalid"
                ) from None
            except jwt.InvalidIssuerError:
                raise self._invalid_token(
                    f"The issuer '{unverified.get('iss')}' is invalid"
                ) from None
            except jwt.MissingRequiredClaimError as error:
                raise self._invalid_token(f"The token has no '{error.claim}' claim") from None
            except jwt.PyJWTError:
                raise self._invalid_token("The token is malformed") from None
        raise self._invalid_token("The signature is invalid")

    @staticmethod
    def _unverified_claims(token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return {}
        return claims

    def _check_fresh(self, claims: Mapping[str, Any]) -> None:
        with self._lock:
            cutoff = self._expired_before
        if cutoff is None:
            return
        issued = claims.get("iat", claims.get("nbf"))
        if not isinstance(issued, int | float) or isinstance(issued, bool) or int(issued) < cutoff:
            raise self._invalid_token(f"The token expired at '{http_timestamp(cutoff)}'")
