"""Tokens a sender presents to Azure Relay.

- **Entra ID** (recommended, no key to store): the app's managed identity, holding the
  *Azure Relay Sender* role on the hybrid connection, asks for
  ``https://relay.azure.net/.default``. The relay reads the token from the
  ``ServiceBusAuthorization`` header; whether it wants the bare JWT or ``Bearer <JWT>``
  there is not documented for hybrid connections (*unverified*): Microsoft's .NET client
  sends the token string it got, the bare JWT, and so does this one.
- **Shared access signature** of a Send-only rule:
  ``SharedAccessSignature sr={enc(audience)}&sig={enc(b64(HMAC-SHA256(key, enc(audience)
  + "\\n" + expiry)))}&se={expiry}&skn={rule}``, audience ``http://{namespace}/{path}/``.
  The key is used as the UTF-8 bytes of its base64 text, as Microsoft's SDKs sign.

Both are cached and renewed well before they expire; a connection is only ever opened
with a token that outlives the connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import quote

from shared.errors import RelayRefused
from shared.platform.redaction import secrets

#: The resource Entra ID issues relay tokens for.
RELAY_SCOPE: Final = "https://relay.azure.net/.default"
#: A token is renewed once less than this is left.
RENEW_BEFORE_SECONDS: Final = 300
#: Lifetime of the SAS tokens this app signs.
SAS_LIFETIME_SECONDS: Final = 3600


class RelayTokens(Protocol):
    """Where the sender's token comes from."""

    def token(self) -> str:
        """A token valid for at least a few more minutes."""
        ...

    def expires_at(self) -> float:
        """When the current token expires (Unix seconds)."""
        ...


def _encode(text: str) -> str:
    # JavaScript's encodeURIComponent, as Microsoft's SDKs encode audience and signature.
    return quote(text, safe="-_.!~*'()")


def relay_audience(namespace: str, path: str) -> str:
    """The SAS audience of a hybrid connection: ``http://{namespace}/{path}/``."""
    host = namespace.split(":", 1)[0].lower()
    return f"http://{host}/{path.strip('/')}/"


def sas_token(audience: str, key_name: str, key: str, expiry: int) -> str:
    """A shared access signature for ``audience`` until ``expiry`` (Unix seconds)."""
    signed = f"{_encode(audience)}\n{expiry}".encode()
    digest = hmac.new(key.encode("utf-8"), signed, hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode("ascii")
    return (
        f"SharedAccessSignature sr={_encode(audience)}&sig={_encode(signature)}"
        f"&se={expiry}&skn={key_name}"
    )


class _Cached:
    """A token renewed once it has less than ``renew_before`` seconds left."""

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        clock: Callable[[], float],
        renew_before: float = RENEW_BEFORE_SECONDS,
    ):
        self._fetch = fetch
        self._clock = clock
        self._renew_before = renew_before
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._expires - self._clock() < self._renew_before:
                self._token, self._expires = self._fetch()
                secrets.add_token(self._token)
            return self._token

    def expires_at(self) -> float:
        with self._lock:
            return self._expires


class SasTokens(_Cached):
    """Tokens signed with a Send rule's key (``SITE_DB_RELAY_KEY_NAME``/``_KEY``)."""

    def __init__(
        self,
        namespace: str,
        path: str,
        key_name: str,
        key: str,
        *,
        lifetime_seconds: int = SAS_LIFETIME_SECONDS,
        renew_before_seconds: float = RENEW_BEFORE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        audience = relay_audience(namespace, path)
        secrets.add(key)

        def sign() -> tuple[str, float]:
            expiry = int(clock()) + lifetime_seconds
            return sas_token(audience, key_name, key, expiry), float(expiry)

        super().__init__(sign, clock, renew_before_seconds)


class EntraRelayTokens(_Cached):
    """Tokens of the app's identity (an azure-identity credential) for the relay."""

    def __init__(self, credential: Any, *, clock: Callable[[], float] = time.time) -> None:
        def fetch() -> tuple[str, float]:
            try:
                access = credential.get_token(RELAY_SCOPE)
            except Exception as error:  # azure-identity raises several unrelated types
                raise RelayRefused(
                    f"no Entra ID token for Azure Relay ({type(error).__name__}: {error}); "
                    "check the function app's managed identity (and SITE_DB_RELAY_CLIENT_ID "
                    "for a user-assigned one)"
                ) from None
            return str(access.token), float(access.expires_on)

        super().__init__(fetch, clock)
