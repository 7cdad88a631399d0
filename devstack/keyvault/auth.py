"""Who is calling: the bearer token, checked as Key Vault checks it, and the challenge.

The signing keys come from the issuer's JWKS over HTTPS, fetched and cached by the
AdminService simulator's key cache (``devstack.adminservice.auth``), which refetches
on an unknown ``kid``. Every 401 carries the challenge
``Bearer authorization="<authority host>/<tenant>", resource="https://vault.azure.net"``
and a body ``{"error": {"code": "Unauthorized", "message": ...}}``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

import jwt

from devstack.adminservice.auth import KeysUnavailable, SigningKeys, http_timestamp
from devstack.keyvault.errors import VaultError
from devstack.keyvault.model import VAULT_APP_ID, VAULT_RESOURCE
from devstack.tls import LocalCA

_JWKS_TIMEOUT: Final = 5.0
#: Microsoft.IdentityModel's default clock skew; whether Key Vault keeps it is unverified.
DEFAULT_LEEWAY_SECONDS: Final = 300


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal a valid token stands for."""

    oid: str
    appid: str | None
    issuer: str
    upn: str | None = None

    def describe(self) -> str:
        """``appid=...;oid=...;iss=...`` as a 403 names the caller."""
        parts = []
        if self.appid:
            parts.append(f"appid={self.appid}")
        parts.append(f"oid={self.oid}")
        if self.upn:
            parts.append(f"upn={self.upn}")
        parts.append(f"iss={self.issuer}")
        return ";".join(parts)


class TokenValidator:
    """Checks ``Authorization: Bearer <JWT>``: RS256 signature by a published key,
    ``aud`` (``https://vault.azure.net`` or Key Vault's application ID), ``iss`` (the
    tenant's v1 issuer by default), ``exp``/``nbf`` with ``leeway_seconds``, an ``oid``.
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        jwks_uri: str,
        issuers: Sequence[str],
        authorization: str,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        jwks_refresh_cooldown: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if urlsplit(jwks_uri).scheme != "https":
            raise ValueError("jwks_uri must be an https:// URL (keys are only fetched over TLS)")
        if not issuers:
            raise ValueError("at least one accepted issuer is needed")
        self.issuers = tuple(issuers)
        self.authorization = authorization
        self.audiences = (VAULT_RESOURCE, VAULT_APP_ID)
        self.leeway_seconds = leeway_seconds
        self._clock = clock
        context = ssl.create_default_context(cafile=str(ca.bundle_path))
        self._keys = SigningKeys(jwks_uri, context, _JWKS_TIMEOUT, jwks_refresh_cooldown)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of every 401."""
        return f'Bearer authorization="{self.authorization}", resource="{VAULT_RESOURCE}"'

    @property
    def jwks_fetches(self) -> int:
        """How often the signing keys were fetched."""
        return self._keys.fetches

    def unauthorized(self, message: str) -> VaultError:
        """A 401 with the challenge."""
        return VaultError(
            401, "Unauthorized", message, headers={"WWW-Authenticate": self.challenge}
        )

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header, or a 401."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "pop" and token:
            raise self.unauthorized("PoP tokens are not accepted by the devstack Key Vault.")
        if scheme.lower() != "bearer" or not token:
            # What the service answers to a request without a token (the challenge request).
            raise self.unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        claims = self._verified_claims(token)
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise self.unauthorized("Error validating token: the token has no 'oid' claim.")
        appid = claims.get("appid", claims.get("azp"))
        upn = claims.get("upn")
        return Caller(
            oid=oid,
            appid=appid if isinstance(appid, str) else None,
            issuer=str(claims["iss"]),
            upn=upn if isinstance(upn, str) else None,
        )

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self.unauthorized("Error validating token: the token is malformed.") from None
        if header.get("alg") != "RS256":
            raise self.unauthorized(
                f"Error validating token: the signature algorithm '{header.get('alg')}' "
                "is not accepted."
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self.unauthorized("Error validating token: the token is malformed (kid).")
        try:
            keys = self._keys.for_kid(kid)
        except KeysUnavailable:
            keys = []
        if not keys:
            encoded_header = token.partition(".")[0]
            raise self.unauthorized(
                "AKV10046: Unable to resolve the key used for signature validation. "
                f"EncodedJwtHeader: '{encoded_header}'."
            )
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    options={
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                        "verify_aud": False,
                        "verify_iss": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise self.unauthorized("Error validating token: the token is malformed.") from None
        if claims is None:
            raise self.unauthorized("Error validating token: the signature is invalid.")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        audience = claims.get("aud")
        if audience not in self.audiences:
            raise self.unauthorized(
                f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE} or {VAULT_APP_ID}, "
                f"found: {audience}."
            )
        issuer = claims.get("iss")
        if issuer not in self.issuers:
            raise self.unauthorized(
                f"AKV10032: Invalid issuer. Expected one of {', '.join(self.issuers)}, "
                f"found {issuer}."
            )
        now = self._clock()
        expires = claims.get("exp")
        if not _is_number(expires):
            raise self.unauthorized("Error validating token: the token has no 'exp' claim.")
        if float(expires) + self.leeway_seconds <= now:
            # Seen from the service: "[TokenExpired] Error validating token: 'S2S12086'."
            raise self.unauthorized(
                f"[TokenExpired] Error validating token: 'S2S12086'. "
                f"The token expired at '{http_timestamp(expires)}'."
            )
        not_before = claims.get("nbf")
        if _is_number(not_before) and float(not_before) - self.leeway_seconds > now:
            raise self.unauthorized(
                "Error validating token: the token is not valid before "
                f"'{http_timestamp(not_before)}'."
            )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
