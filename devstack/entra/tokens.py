"""Minting the tenant's tokens: v1.0 or v2.0 access tokens, ID tokens, refresh tokens."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import jwt

from devstack.entra.directory import Directory
from devstack.entra.keys import SigningKeys, b64url
from devstack.entra.model import OIDC_SCOPE_ORDER, EntraClient, EntraUser, RefreshGrant, SignIn
from devstack.entra.scopes import ResolvedScope


class Authority(Protocol):
    """What tokens and client assertions are checked against, read on every request: the
    port, and so every URL, is only known once the simulator listens."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def issuer(self) -> str: ...

    @property
    def issuer_v1(self) -> str: ...

    @property
    def token_endpoint(self) -> str: ...

    @property
    def token_lifetime_seconds(self) -> int: ...


def _random_id(length: int = 22) -> str:
    """A random token identifier (``uti``, ``aio``) of ``length`` URL-safe characters."""
    return secrets.token_urlsafe(length)[:length]


def _pairwise_subject(object_id: str, app_id: str) -> str:
    """A ``sub`` claim: Entra's is pairwise, the same user differs per application."""
    return b64url(hashlib.sha256(f"{object_id}:{app_id}".encode()).digest())[:43]


class TokenIssuer:
    """Signs the tokens of granted requests with the tenant's current key, and counts them."""

    def __init__(self, authority: Authority, directory: Directory, keys: SigningKeys) -> None:
        self._authority = authority
        self._directory = directory
        self._keys = keys
        self._lock = threading.Lock()
        self._issued = 0

    @property
    def issued(self) -> int:
        """Access tokens issued so far."""
        with self._lock:
            return self._issued

    def issue(
        self,
        client: EntraClient,
        resolved: ResolvedScope,
        user: EntraUser | None,
        roles: Sequence[str],
        auth: str,
        *,
        want_client_info: bool,
        sign_in: SignIn | None = None,
        rotate_refresh: bool = False,
    ) -> dict[str, object]:
        """The token answer of a granted request: an access token, and for a user the
        ``scope``, and the refresh token, ID token and client info it asked for.

        ``sign_in`` is the authentication the user's tokens stand for (default: a
        password sign-in now); its methods are a v1 token's ``amr`` (v2 tokens carry no
        ``amr``, as Entra's). ``rotate_refresh`` (a refresh token redemption) answers a
        new refresh token whatever the scope, as Entra does on every use.
        """
        now = int(time.time())
        if user is not None and sign_in is None:
            sign_in = SignIn(user.upn, self._directory.now())
        lifetime = int(self._authority.token_lifetime_seconds)
        api = resolved.api
        acr = {"none": "0", "secret": "1", "certificate": "2"}[auth]
        common: dict[str, object] = {
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _random_id(40),
            "rh": f"0.{_random_id(40)}.",
            "tid": self._authority.tenant_id,
            "uti": _random_id(22),
        }
        if user is not None:
            identity: dict[str, object] = {
                "oid": user.object_id,
                "sub": _pairwise_subject(user.object_id, api.app_id),
                "name": user.display_name,
                "scp": " ".join(resolved.scopes),
            }
        else:
            identity = {"oid": client.service_principal_id, "sub": client.service_principal_id}
            if roles:
                identity["roles"] = list(roles)
        if api.access_token_version == 1:
            claims: dict[str, object] = {
                "aud": resolved.identifier,
                "iss": self._authority.issuer_v1,
                **common,
                **identity,
                "appid": client.client_id,
                "appidacr": acr,
                "ver": "1.0",
            }
            if user is not None and sign_in is not None:
                claims.update(
                    acr="1",
                    amr=list(sign_in.amr),
                    ipaddr="127.0.0.1",
                    unique_name=user.upn,
                    upn=user.upn,
                )
            else:
                claims["idp"] = self._authority.issuer_v1
        else:
            claims = {
                "aud": api.app_id,
                "iss": self._authority.issuer,
                **common,
                **identity,
                "azp": client.client_id,
                "azpacr": acr,
                "ver": "2.0",
            }
            if user is not None:
                claims["preferred_username"] = user.upn
        access_token = self._sign(claims, x5t=api.access_token_version == 1)
        body: dict[str, object] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
        }
        if lifetime >= 7200:  # Entra tells clients to renew long-lived tokens early
            body["refresh_in"] = lifetime // 2
        body["access_token"] = access_token
        if user is not None and sign_in is not None:
            scope_names = [f"{resolved.identifier}/{s}" for s in resolved.scopes]
            scope_names += [s for s in OIDC_SCOPE_ORDER if s in resolved.oidc]
            body["scope"] = " ".join(scope_names)
            if "offline_access" in resolved.oidc or rotate_refresh:
                body["refresh_token"] = self._new_refresh_token(client, user, resolved, sign_in)
            if "openid" in resolved.oidc:
                body["id_token"] = self._id_token(client, user, resolved.oidc, now, lifetime)
            if want_client_info:
                info = json.dumps(
                    {"uid": user.object_id, "utid": self._authority.tenant_id},
                    separators=(",", ":"),
                )
                body["client_info"] = b64url(info.encode("utf-8"))
        with self._lock:
            self._issued += 1
        return body

    def _new_refresh_token(
        self, client: EntraClient, user: EntraUser, resolved: ResolvedScope, sign_in: SignIn
    ) -> str:
        token = f"1.devstack.{secrets.token_urlsafe(48)}"
        scope = " ".join(
            [f"{resolved.identifier}/{s}" for s in resolved.scopes] + sorted(resolved.oidc)
        )
        issued = self._directory.now()
        self._directory.keep_refresh_grant(
            token, RefreshGrant(client.client_id, user.upn, scope, issued, sign_in, issued)
        )
        return token

    def _id_token(
        self, client: EntraClient, user: EntraUser, oidc: frozenset[str], now: int, lifetime: int
    ) -> str:
        claims: dict[str, object] = {
            "aud": client.client_id,
            "iss": self._authority.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "oid": user.object_id,
            "rh": f"0.{_random_id(40)}.",
            "sub": _pairwise_subject(user.object_id, client.client_id),
            "tid": self._authority.tenant_id,
            "uti": _random_id(22),
            "ver": "2.0",
        }
        if "profile" in oidc:
            claims.update(name=user.display_name, preferred_username=user.upn)
        if "email" in oidc:
            claims["email"] = user.upn
        return self._sign(claims, x5t=False)

    def _sign(self, claims: Mapping[str, object], *, x5t: bool) -> str:
        key = self._keys.current()
        headers: dict[str, str] = {"kid": key.kid}
        if x5t:  # v1 tokens carry x5t beside kid
            headers["x5t"] = key.kid
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=headers)
