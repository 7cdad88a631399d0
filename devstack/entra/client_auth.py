"""How a client app proves itself: nothing, a client secret, or a certificate assertion."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from typing import Final

import jwt

from devstack.entra.directory import Directory
from devstack.entra.model import EntraClient
from devstack.entra.refusals import Refusal, missing, unknown_client

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def requested_client(directory: Directory, form: Mapping[str, str]) -> EntraClient:
    """The client app a form's ``client_id`` names, or the refusal Entra answers."""
    client_id = form.get("client_id")
    if not client_id:
        raise missing("client_id")
    client = directory.find_client(client_id)
    if client is None:
        raise unknown_client(client_id, directory.tenant_name)
    return client


def authenticate_client(
    client: EntraClient, form: Mapping[str, str], *, token_endpoint: str, issuer: str
) -> str:
    """How the client proved itself: ``none``, ``secret`` or ``certificate``.

    A wrong credential is a refusal; so is a client assertion of another type.
    """
    assertion_type = form.get("client_assertion_type")
    if assertion_type is not None or "client_assertion" in form:
        if assertion_type != CLIENT_ASSERTION_TYPE:
            raise Refusal(
                "invalid_request",
                50027,
                "JWT token is invalid or malformed: client_assertion_type must be "
                f"{CLIENT_ASSERTION_TYPE}.",
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise missing("client_assertion")
        _check_assertion(client, assertion, token_endpoint=token_endpoint, issuer=issuer)
        return "certificate"
    secret = form.get("client_secret")
    if secret is None:
        return "none"
    if client.secret is None or not hmac.compare_digest(
        secret.encode("utf-8"), client.secret.encode("utf-8")
    ):
        raise Refusal(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request "
            "is the client secret value, not the client secret ID, for a secret added to "
            f"app '{client.client_id}'.",
            status=401,
        )
    return "secret"


def _check_assertion(
    client: EntraClient, assertion: str, *, token_endpoint: str, issuer: str
) -> None:
    """Check a client assertion as Entra does: a registered certificate signed it for us."""
    malformed = Refusal("invalid_client", 50027, "JWT token is invalid or malformed.", status=401)
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise malformed from None
    algorithm = header.get("alg")
    if algorithm not in ("RS256", "PS256"):
        raise malformed
    # Entra finds the key by thumbprint: x5t#S256 (MSAL with public_certificate)
    # or x5t (MSAL with a SHA-1 thumbprint), both base64url.
    wanted: list[tuple[str, str]] = []
    for name, attribute in (("x5t#S256", "sha256_thumbprint"), ("x5t", "sha1_thumbprint")):
        value = header.get(name)
        if isinstance(value, str):
            try:
                raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                raise malformed from None
            wanted.append((attribute, raw.hex().upper()))
    certificate = next(
        (c for c in client.certificates for a, t in wanted if getattr(c, a) == t), None
    )
    if certificate is None:
        shown = wanted[0][1] if wanted else "none"
        raise Refusal(
            "invalid_client",
            700027,
            "Client assertion failed signature validation. [Reason - The key was not "
            f"found., Thumbprint of key used by client: '{shown}', Please visit the Azure "
            "Portal, Graph Explorer or directly use MS Graph to see configured keys for "
            f"app Id '{client.client_id}'.]",
            status=401,
        )
    try:
        claims = jwt.decode(
            assertion,
            certificate.public_key,
            algorithms=[algorithm],
            audience=[token_endpoint, issuer],
            leeway=300,  # Entra tolerates clock skew on assertions
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
        raise Refusal(
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
            status=401,
        ) from None
    except jwt.InvalidSignatureError:
        raise Refusal(
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
            status=401,
        ) from None
    except jwt.InvalidAudienceError:
        raise Refusal(
            "invalid_client",
            50027,
            f"JWT token is invalid or malformed. The audience must be {token_endpoint}.",
            status=401,
        ) from None
    except jwt.PyJWTError:
        raise malformed from None
    if (
        str(claims.get("iss")).lower() != client.client_id
        or str(claims.get("sub")).lower() != client.client_id
    ):
        raise Refusal(
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
            status=401,
        )
