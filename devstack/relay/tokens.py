"""Shared access signature (SAS) tokens of Azure Relay: audiences, signing, parsing.

``SharedAccessSignature sr={audience}&sig={signature}&se={expiry}&skn={key name}``,
each value URL-encoded. The signature is base64(HMAC-SHA256(key, sr + "\\n" + se))
where ``sr`` is the *encoded* audience exactly as it appears in the token and the key
is the base64 text of the rule's key taken as UTF-8 bytes (not decoded), as
Microsoft's SDKs sign (``createRelayToken`` in azure-relay-node's hyco-ws,
``SharedAccessSignatureTokenProvider`` in Microsoft.Azure.Relay). The service checks
the signature over the ``sr`` text it received, so any percent-encoding a signer
chose (.NET writes ``%3a``, JavaScript ``%3A``) verifies.

The audience is ``http://{namespace}/{path}/``: scheme http, no port, no ``$hc/``,
compared case-insensitively. .NET appends the trailing slash, Node does not; both are
accepted. ``https://`` and ``sb://`` audiences are accepted too (the Service Bus
gateway accepts them for its other entities; unverified for Relay).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit

import jwt

SAS_PREFIX: Final = "SharedAccessSignature"
#: encodeURIComponent leaves A-Z a-z 0-9 and - _ . ! ~ * ' ( ) alone; quote() keeps
#: the letters, digits and - _ . ~ unless told, so these four are added.
_JS_COMPONENT_SAFE: Final = "!*'()"
_FIELDS: Final = ("sr", "sig", "se", "skn")


class SasError(ValueError):
    """A SAS token that cannot be read (the service answers 401)."""


def encode_component(text: str) -> str:
    """``text`` percent-encoded as JavaScript's encodeURIComponent does."""
    return quote(text, safe=_JS_COMPONENT_SAFE)


def relay_audience(namespace: str, path: str | None = None) -> str:
    """``http://{namespace}/{path}/``, or ``http://{namespace}/`` for the namespace."""
    host = namespace.lower().rstrip("/")
    if path is None:
        return f"http://{host}/"
    return f"http://{host}/{path.strip('/')}/"


def normalize_audience(resource: str) -> str | None:
    """A token's audience in the form :func:`relay_audience` writes (lower case,
    trailing slash), or None when it cannot name a Relay entity (another scheme, a
    port, a query, ``$hc`` in the path)."""
    try:
        parts = urlsplit(resource)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https", "sb") or not parts.hostname:
        return None
    if port is not None or parts.query or parts.fragment or parts.username:
        return None
    path = parts.path.strip("/")
    if path.lower().startswith("$hc"):
        return None
    return relay_audience(parts.hostname, path or None).lower()


def sign(encoded_resource: str, expiry: int, key: str) -> str:
    """base64(HMAC-SHA256(key as UTF-8, encoded_resource + "\\n" + expiry))."""
    message = f"{encoded_resource}\n{expiry}".encode()
    digest = hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def make_sas_token(audience: str, key_name: str, key: str, expiry: int) -> str:
    """A token for ``audience`` signed with the rule ``key_name``'s ``key``, valid
    until ``expiry`` (Unix seconds), encoded as the Node SDK encodes it."""
    resource = encode_component(audience)
    signature = sign(resource, expiry, key)
    return (
        f"{SAS_PREFIX} sr={resource}&sig={encode_component(signature)}"
        f"&se={expiry}&skn={encode_component(key_name)}"
    )


def sas_token_for(
    namespace: str,
    path: str | None,
    key_name: str,
    key: str,
    *,
    expires_in: float = 3600.0,
    now: float | None = None,
) -> str:
    """A token for the hybrid connection ``path`` (None: the whole namespace) that
    expires ``expires_in`` seconds from now (rounded up to a whole second)."""
    start = time.time() if now is None else now
    return make_sas_token(
        relay_audience(namespace, path), key_name, key, int(start + expires_in + 0.999)
    )


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed SAS token; ``encoded_resource`` is ``sr`` as received (what was signed)."""

    resource: str
    encoded_resource: str
    signature: str
    expiry: int
    key_name: str

    def signed_with(self, key: str) -> bool:
        """Whether ``key`` produced the signature (constant-time comparison)."""
        try:
            given = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = base64.b64decode(sign(self.encoded_resource, self.expiry, key))
        return hmac.compare_digest(given, expected)

    def expired(self, now: float | None = None) -> bool:
        """Whether ``se`` has passed (a token is valid up to, not at, its expiry)."""
        return self.expiry <= (time.time() if now is None else now)


def parse_sas(token: str) -> SasToken:
    """Read a SAS token; SasError names what is wrong.

    Strict: the four fields exactly once each and nothing else, ``se`` all digits.
    """
    scheme, sep, rest = token.strip().partition(" ")
    if scheme.lower() != SAS_PREFIX.lower() or not sep or not rest:
        raise SasError("the token is not a SharedAccessSignature")
    values: dict[str, str] = {}
    for item in rest.split("&"):
        name, eq, value = item.partition("=")
        if not eq:
            raise SasError(f"the token field {name!r} has no value")
        if name not in _FIELDS:
            raise SasError(f"the token has an unknown field {name!r}")
        if name in values:
            raise SasError(f"the token field {name!r} appears twice")
        values[name] = value
    missing = [name for name in _FIELDS if not values.get(name)]
    if missing:
        raise SasError(f"the token lacks {', '.join(missing)}")
    if not values["se"].isascii() or not values["se"].isdigit():
        raise SasError("the token expiry 'se' is not a number")
    return SasToken(
        resource=unquote(values["sr"]),
        encoded_resource=values["sr"],
        signature=unquote(values["sig"]),
        expiry=int(values["se"]),
        key_name=unquote(values["skn"]),
    )


def bearer_jwt(token: str) -> str | None:
    """The JWT of ``Bearer <jwt>`` or of a bare JWT (the .NET SDK sends Entra tokens
    bare in ServiceBusAuthorization), else None."""
    text = token.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    elif text.lower().startswith(SAS_PREFIX.lower()):
        return None
    if text.count(".") == 2 and not any(ch.isspace() for ch in text):
        return text
    return None


def token_expiry(token: str) -> float | None:
    """When a SAS token or JWT expires (Unix seconds), read without checking it; None
    when it cannot be read. Listeners use it to renew in time."""
    if token.strip().lower().startswith(SAS_PREFIX.lower()):
        try:
            return float(parse_sas(token).expiry)
        except SasError:
            return None
    raw = bearer_jwt(token)
    if raw is None:
        return None
    try:
        claims = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
