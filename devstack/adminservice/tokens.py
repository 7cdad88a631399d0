"""Tokens for the simulator's own tests and standalone runs: an RSA key that signs
Entra-like access tokens, and an HTTPS server publishing its JWKS."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.adminservice.auth import DEFAULT_AUDIENCE, REQUIRED_SCOPE
from devstack.https import HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.tls import LocalCA


class TokenSigner:
    """An RSA key that signs Entra-like RS256 access tokens, and its public JWK.

    For the simulator's own tests and standalone runs; ``devstack.entra`` is the Entra
    stand-in the stack uses.
    """

    def __init__(self, kid: str | None = None) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid or uuid.uuid4().hex

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with ``kid``, ``use`` and ``alg``."""
        jwk = dict(RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return jwk

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """Sign ``claims`` as they are (no claim is added)."""
        header = {"typ": "JWT", "kid": self.kid, **(headers or {})}
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers=header)

    def token(
        self,
        *,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        upn: str | None = None,
        scp: str | None = REQUIRED_SCOPE,
        roles: Sequence[str] | None = None,
        issued_at: float | None = None,
        lifetime: float = 3600.0,
        **extra: Any,
    ) -> str:
        """A v1-style access token; ``scp=None, roles=[...]`` makes an app-only one."""
        now = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "ver": "1.0",
            "tid": "00000000-0000-0000-0000-000000000000",
            "appid": "11111111-1111-1111-1111-111111111111",
            "oid": str(uuid.uuid4()),
        }
        if upn is not None:
            claims["upn"] = upn
        if scp is not None:
            claims["scp"] = scp
        if roles is not None:
            claims["roles"] = list(roles)
        claims.update(extra)
        return self.sign(claims)


class JwksServer(HttpsSimulator):
    """Publishes the signers' keys as a JWKS over HTTPS (LocalCA) at ``url``.

    ``signers`` may be replaced while it serves (key rotation); ``fetches`` counts GETs.
    """

    PATH: Final = "/discovery/keys"

    def __init__(self, ca: LocalCA, signers: Iterable[TokenSigner] = ()) -> None:
        self.signers = list(signers)
        self.fetches = 0
        self._lock = threading.Lock()
        self._server = LocalHttpsServer(ca.server_context(), self._handle, name="jwks")

    @property
    def url(self) -> str:
        """The JWKS URL (``jwks_uri`` for the simulator)."""
        return f"https://localhost:{self.port}{self.PATH}"

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return HttpResponse.json(501, {"error": "not implemented"})
        if request.path != self.PATH:
            return HttpResponse.json(404, {"error": "not found"})
        with self._lock:
            self.fetches += 1
            document = {"keys": [signer.jwk() for signer in self.signers]}
        return HttpResponse.json(200, document)
