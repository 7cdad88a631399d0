"""The documents MSAL reads before it asks for a token: OpenID discovery and the JWKS."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any, Final

from devstack.entra.keys import SigningKey, int_b64url
from devstack.entra.model import OIDC_SCOPE_ORDER

# Entra's list, in Entra's order.
# fmt: off
_CLAIMS_SUPPORTED: Final = (
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
    "name", "tid", "ver", "at_hash", "c_hash", "email",
)
# fmt: on


def openid_configuration(
    *, authority: str, issuer: str, token_endpoint: str, jwks_uri: str
) -> dict[str, Any]:
    """The tenant's ``/v2.0/.well-known/openid-configuration`` document."""
    return {
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": jwks_uri,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": list(OIDC_SCOPE_ORDER),
        "issuer": issuer,
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{authority}/oauth2/v2.0/logout",
        "claims_supported": list(_CLAIMS_SUPPORTED),
        "kerberos_endpoint": f"{authority}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def jwk(key: SigningKey, issuer: str) -> dict[str, Any]:
    """A signing key's public JWK, as Entra publishes it."""
    numbers = key.private_key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "kid": key.kid,
        "x5t": key.kid,
        "n": int_b64url(numbers.n),
        "e": int_b64url(numbers.e),
        "x5c": [base64.b64encode(key.certificate_der).decode("ascii")],
        "issuer": issuer,
    }


def jwks(keys: Iterable[SigningKey], issuer: str) -> dict[str, Any]:
    """The JWKS document of ``keys``."""
    return {"keys": [jwk(key, issuer) for key in keys]}
