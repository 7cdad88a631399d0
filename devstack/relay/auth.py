"""Who may listen or send: SAS tokens against the namespace's and the hybrid connection's
authorization rules, and Entra ID tokens against role assignments.

The answers follow the service: **401** when the token is missing, malformed, for
another audience, signed with an unknown rule or a wrong key, or expired (or a JWT
fails validation); **403** when a valid token lacks the right (a Listen-only token
used to send). Messages imitate Service Bus's wording; the exact text is unverified.

Entra ID tokens travel in ServiceBusAuthorization as ``Bearer <jwt>`` or as the bare
JWT (what Microsoft.Azure.Relay's ``JsonSecurityToken`` sends); both are accepted.
The signature is checked against the issuer's JWKS (fetched over HTTPS with the
AdminService simulator's key cache), ``aud`` must be ``https://relay.azure.net`` (with
or without the slash), ``iss`` one of the trusted issuers, ``exp`` in the future; the
token's ``oid`` must hold "Azure Relay Sender" (Send), "Azure Relay Listener" (Listen)
or "Azure Relay Owner" on the hybrid connection or the namespace.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import jwt

from devstack.adminservice.auth import KeysUnavailable, SigningKeys
from devstack.relay.model import (
    ROLE_RIGHTS,
    AuthorizationRule,
    HybridConnection,
    Right,
    roles_by_principal,
)
from devstack.relay.tokens import (
    SasError,
    bearer_jwt,
    normalize_audience,
    parse_sas,
    relay_audience,
)
from devstack.tls import LocalCA

#: The audiences of Entra ID tokens for Azure Relay.
RELAY_AUDIENCES: Final = ("https://relay.azure.net", "https://relay.azure.net/")
_JWKS_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class EntraTrust:
    """Which Entra ID tokens the namespace accepts: signed by a key of ``jwks_uri``
    (https), issued by one of ``issuers``, for one of ``audiences``."""

    jwks_uri: str
    issuers: tuple[str, ...]
    audiences: tuple[str, ...] = RELAY_AUDIENCES


class AuthFailure(Exception):
    """A refused token: the HTTP ``status`` (401 or 403) and the service's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Grant:
    """Who the token speaks for (``sas:<rule>``, ``entra:<oid>`` or ``anonymous``) and
    when it expires (Unix seconds; None for an anonymous sender)."""

    principal: str
    expires_at: float | None


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%m/%d/%Y %H:%M:%S")


class RelayAuthorizer:
    """Checks a token for one right on one hybrid connection of the namespace."""

    def __init__(
        self,
        ca: LocalCA,
        namespace: str,
        rules: Iterable[AuthorizationRule],
        role_assignments: Mapping[str, Iterable[str]],
        entra: EntraTrust | None,
    ) -> None:
        self.namespace = namespace.lower()
        self.rules = tuple(rules)
        self.role_assignments = roles_by_principal(role_assignments)
        self.entra = entra
        self._keys: SigningKeys | None = None
        if entra is not None:
            context = ssl.create_default_context(cafile=str(ca.bundle_path))
            self._keys = SigningKeys(entra.jwks_uri, context, _JWKS_TIMEOUT, 0.0)

    def rule(self, name: str) -> AuthorizationRule | None:
        """The namespace rule called ``name``."""
        return next((r for r in self.rules if r.name.lower() == name.lower()), None)

    def authorize(
        self,
        token: str | None,
        hc: HybridConnection,
        right: Right,
        *,
        anonymous: bool = False,
    ) -> Grant:
        """The grant ``token`` gives for ``right`` on ``hc``, or AuthFailure.

        ``anonymous`` (a sender on a connection that does not require client
        authorization) admits a request without a token; a token that is given is
        still checked.
        """
        if not token or not token.strip():
            if anonymous:
                return Grant("anonymous", None)
            raise AuthFailure(401, "MissingToken: The request does not contain a security token.")
        raw_jwt = bearer_jwt(token)
        if raw_jwt is not None:
            return self._entra(raw_jwt, hc, right)
        return self._sas(token, hc, right)

    # -- SAS -------------------------------------------------------------------------

    def _sas(self, token: str, hc: HybridConnection, right: Right) -> Grant:
        try:
            sas = parse_sas(token)
        except SasError as error:
            raise AuthFailure(401, f"MalformedToken: {str(error).capitalize()}.") from None
        audience = normalize_audience(sas.resource)
        entity = relay_audience(self.namespace, hc.name).lower()
        namespace = relay_audience(self.namespace).lower()
        if audience not in (entity, namespace):
            raise AuthFailure(
                401,
                f"InvalidAudience: The token audience '{sas.resource}' is not valid for "
                f"'{relay_audience(self.namespace, hc.name)}'.",
            )
        # A rule of the entity signs tokens for the entity only; a namespace rule
        # signs for the namespace and every entity in it.
        rule = (hc.rule(sas.key_name) if audience == entity else None) or self.rule(sas.key_name)
        if rule is None:
            raise AuthFailure(
                401,
                f"InvalidSignature: The shared access key name '{sas.key_name}' is not "
                "an authorization rule of this entity or namespace.",
            )
        if not any(sas.signed_with(key) for key in rule.signing_keys()):
            raise AuthFailure(401, "InvalidSignature: The token has an invalid signature.")
        if sas.expired():
            raise AuthFailure(
                401, f"ExpiredToken: The token is expired. Expiration time: '{_when(sas.expiry)}'."
            )
        if not rule.grants(right):
            raise self._missing_right(hc, right)
        return Grant(f"sas:{rule.name}", float(sas.expiry))

    def _missing_right(self, hc: HybridConnection, right: Right) -> AuthFailure:
        return AuthFailure(
            403,
            f"Unauthorized access. '{right.value}' claim(s) are required to perform this "
            f"operation. Resource: 'sb://{self.namespace}/{hc.name}'.",
        )

    # -- Entra ID --------------------------------------------------------------------

    def _entra(self, token: str, hc: HybridConnection, right: Right) -> Grant:
        if self.entra is None or self._keys is None:
            raise AuthFailure(
                401, "InvalidToken: Entra ID tokens are not configured for this namespace."
            )
        claims = self._verify(token, self.entra, self._keys)
        object_id = claims.get("oid")
        if not isinstance(object_id, str) or not object_id:
            raise AuthFailure(401, "InvalidToken: The token has no 'oid' claim.")
        roles = self.role_assignments.get(object_id.lower(), frozenset()) | frozenset(
            hc.role_assignments.get(object_id.lower(), ())
        )
        rights = frozenset().union(*(ROLE_RIGHTS[role] for role in roles))
        if right not in rights:
            raise self._missing_right(hc, right)
        return Grant(f"entra:{object_id.lower()}", float(claims["exp"]))

    @staticmethod
    def _verify(token: str, trust: EntraTrust, keys: SigningKeys) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthFailure(401, "InvalidToken: The token is malformed.") from None
        if header.get("alg") != "RS256":
            raise AuthFailure(401, f"InvalidToken: The algorithm '{header.get('alg')}' is refused.")
        kid = header.get("kid")
        try:
            candidates = keys.for_kid(kid if isinstance(kid, str) else None)
        except KeysUnavailable as error:
            raise AuthFailure(401, f"InvalidToken: {error}.") from None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    audience=list(trust.audiences),
                    issuer=list(trust.issuers),
                    leeway=0,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise AuthFailure(401, "ExpiredToken: The token is expired.") from None
            except jwt.InvalidAudienceError:
                raise AuthFailure(
                    401, "InvalidAudience: The token audience is not valid."
                ) from None
            except jwt.InvalidIssuerError:
                raise AuthFailure(401, "InvalidIssuer: The token issuer is not trusted.") from None
            except jwt.PyJWTError as error:
                raise AuthFailure(401, f"InvalidToken: {error}.") from None
            if claims["exp"] <= time.time():  # jwt allows exp == now; the service does not
                raise AuthFailure(401, "ExpiredToken: The token is expired.")
            return claims
        raise AuthFailure(401, "InvalidSignature: The token has an invalid signature.")
