"""What a client of the simulated vault needs: a transport that reaches the vault's
DNS name on loopback, and an app credential that gets its tokens from an Entra
authority (the Entra ID simulator) with MSAL.

The vault is addressed as ``https://<name>.vault.azure.net``, the form the SDK's
challenge check accepts (see ``devstack.keyvault``); nothing resolves that name to
this machine, so :func:`vault_transport` does what a hosts-file entry would do, for
its own connections only: a connection to ``<name>.vault.azure.net:443`` goes to the
simulator's loopback address and port. TLS is untouched (SNI and the certificate
check are for the vault's name; the certificate comes from the local CA).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import msal
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util.retry import Retry


def _routed_pool(address: tuple[str, int]) -> type[HTTPSConnectionPool]:
    """An HTTPS connection pool whose connections open a socket to ``address``."""

    class RoutedConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            try:
                return urllib3_connection.create_connection(
                    address,
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as error:
                raise NewConnectionError(
                    self, f"Failed to establish a new connection to {address}: {error}"
                ) from error

    class RoutedPool(HTTPSConnectionPool):
        ConnectionCls = RoutedConnection

    return RoutedPool


class _RoutingAdapter(HTTPAdapter):
    """Sends the requests of the URLs it is mounted for to ``address``."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._pool_class = _routed_pool(address)
        # No retries here: azure-core's retry policy decides, as with its own adapter.
        super().__init__(max_retries=Retry(total=False, redirect=False, raise_on_status=False))

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": HTTPConnectionPool,
            "https": self._pool_class,
        }


def vault_session(
    dns_name: str, address: tuple[str, int], ca_bundle: str | Path
) -> requests.Session:
    """A requests session that reaches ``https://<dns_name>`` (port 443, written or not)
    at ``address`` and trusts only ``ca_bundle``; other hosts are reached as usual."""
    session = requests.Session()
    session.trust_env = False  # no proxy, and REQUESTS_CA_BUNDLE must not override verify
    session.verify = str(ca_bundle)
    adapter = _RoutingAdapter(address)
    for prefix in (f"https://{dns_name}/", f"https://{dns_name}:443/"):
        session.mount(prefix, adapter)
    return session


def vault_transport(
    dns_name: str, address: tuple[str, int], ca_bundle: str | Path
) -> RequestsTransport:
    """An azure-core transport over :func:`vault_session` (pass it as ``transport=``)."""
    return RequestsTransport(
        session=vault_session(dns_name, address, ca_bundle),
        session_owner=True,
        connection_verify=str(ca_bundle),
    )


class EntraAppCredential:
    """A ``TokenCredential`` (azure-core protocol) for an app registration with a client
    secret: app-only tokens by MSAL's client credentials grant, cached by MSAL.

    ``authority`` is ``<authority host>/<tenant>`` (``EntraSimulator.authority``). The
    SDK passes the tenant named by the vault's challenge; another tenant than the
    authority's raises ``ClientAuthenticationError``, as azure-identity's credentials do
    for a tenant they are not allowed.
    """

    def __init__(
        self, authority: str, client_id: str, client_secret: str, *, ca_bundle: str | Path
    ) -> None:
        self.authority = authority.rstrip("/")
        self.tenant_id = self.authority.rsplit("/", 1)[-1].lower()
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = str(ca_bundle)
        self._app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_secret,
            authority=self.authority,
            http_client=self._session,
            instance_discovery=False,
        )
        self._lock = threading.Lock()
        #: Every (scopes, tenant_id) the SDK asked a token for, oldest first.
        self.requests: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """An access token for ``scopes`` (``https://vault.azure.net/.default``)."""
        with self._lock:
            self.requests.append((scopes, tenant_id))
        if tenant_id and tenant_id.lower() != self.tenant_id:
            raise ClientAuthenticationError(
                message=f"the vault's tenant {tenant_id} is not this credential's "
                f"({self.tenant_id})"
            )
        with self._lock:  # MSAL's application object is not documented thread-safe
            result = self._app.acquire_token_for_client(scopes=list(scopes))
        if not isinstance(result, dict) or "access_token" not in result:
            detail = result.get("error_description") if isinstance(result, dict) else result
            raise ClientAuthenticationError(message=f"no token from {self.authority}: {detail}")
        expires_in = int(result.get("expires_in", 0))
        return AccessToken(str(result["access_token"]), int(time.time()) + expires_in)

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()
