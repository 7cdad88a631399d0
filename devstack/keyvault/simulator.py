"""The Key Vault simulator as a service: its options, the addresses a client uses, the
role assignments and secrets tests set up and look at, the request log, and faults."""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from devstack.https import HttpExchange, HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.keyvault.auth import DEFAULT_LEEWAY_SECONDS, TokenValidator
from devstack.keyvault.client import vault_session, vault_transport
from devstack.keyvault.dispatch import Dispatcher
from devstack.keyvault.errors import VaultError
from devstack.keyvault.model import (
    VAULT_DNS_SUFFIX,
    RoleAssignment,
    SecretVersion,
    VaultRequest,
    is_valid_name,
)
from devstack.keyvault.rbac import RoleAssignments
from devstack.keyvault.store import SecretStore
from devstack.ports import LOOPBACK
from devstack.tls import LOCAL_NAMES, LocalCA

if TYPE_CHECKING:
    import requests
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.transport import RequestsTransport
    from azure.keyvault.secrets import SecretClient

    from devstack.entra import EntraSimulator

#: A made-up subscription, as the 403's resource ID names it.
DEFAULT_SUBSCRIPTION_ID: Final = "3f2b8c1e-7d4a-4e6b-9c0f-5a1d2e3b4c5d"
FaultStatus = Literal[429, 500, 502, 503, 504]


class KeyVaultSimulator(HttpsSimulator):
    """A Key Vault (RBAC permission model) serving the secrets data plane over HTTPS.

    It listens on ``127.0.0.1:<port>`` with a certificate for ``<vault_name>.vault.azure.net``
    (and localhost); clients address it as :attr:`vault_url` through :meth:`transport`
    (or :attr:`local_url` for raw HTTP). Tokens are checked against ``jwks_uri`` (fetched
    over HTTPS), ``issuers`` (default: the tenant's v1 issuer
    ``https://sts.windows.net/<tenant>/``, which Key Vault tokens carry) and Key Vault's
    audiences; the challenge names ``<authority_host>/<tenant_id>``.
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        jwks_uri: str,
        tenant_id: str,
        authority_host: str,
        vault_name: str = "devstack-kv",
        issuers: Sequence[str] | None = None,
        port: int | None = None,
        location: str = "eastus",
        subscription_id: str = DEFAULT_SUBSCRIPTION_ID,
        resource_group: str = "rg-devstack",
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        jwks_refresh_cooldown: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (3 <= len(vault_name) <= 24 and is_valid_name(vault_name)):
            raise ValueError("a vault name is 3-24 characters of 0-9, a-z, A-Z and '-'")
        self.ca = ca
        self.vault_name = vault_name
        self.tenant_id = tenant_id.lower()
        self.location = location
        self._validator = TokenValidator(
            ca,
            jwks_uri=jwks_uri,
            issuers=issuers or (f"https://sts.windows.net/{self.tenant_id}/",),
            authorization=f"{authority_host.rstrip('/')}/{self.tenant_id}",
            leeway_seconds=leeway_seconds,
            jwks_refresh_cooldown=jwks_refresh_cooldown,
            clock=clock,
        )
        self._rbac = RoleAssignments(
            vault_name=vault_name,
            subscription_id=subscription_id,
            resource_group=resource_group,
            location=location,
        )
        self._store = SecretStore(clock)
        self._lock = threading.Lock()
        self._requests: list[VaultRequest] = []
        self._errors: list[str] = []
        self._faults: list[tuple[int, int | None]] = []
        self._dispatcher = Dispatcher(
            validator=self._validator,
            rbac=self._rbac,
            store=self._store,
            vault_url=lambda: self.vault_url,
            record=self._record,
        )
        self._server = LocalHttpsServer(
            ca.server_context(self.dns_name, *LOCAL_NAMES),
            self._handle,
            port=port,
            name="keyvault",
        )

    @classmethod
    def for_entra(cls, ca: LocalCA, entra: EntraSimulator, **options: Any) -> KeyVaultSimulator:
        """A vault in the Entra simulator's tenant, trusting its signing keys and naming
        it in the challenge (start ``entra`` first: its port is part of its addresses)."""
        return cls(
            ca,
            jwks_uri=entra.jwks_uri,
            tenant_id=entra.tenant_id,
            authority_host=entra.authority_host,
            **options,
        )

    # -- addresses -----------------------------------------------------------------

    @property
    def dns_name(self) -> str:
        """``<vault_name>.vault.azure.net``."""
        return f"{self.vault_name.lower()}.{VAULT_DNS_SUFFIX}"

    @property
    def vault_url(self) -> str:
        """``https://<vault_name>.vault.azure.net``: the vault URL clients use (through
        :meth:`transport`), and the base of every ``id`` the vault answers."""
        return f"https://{self.dns_name}"

    @property
    def address(self) -> tuple[str, int]:
        """Where the vault's name is reached: ``(127.0.0.1, port)``."""
        return (LOOPBACK, self.port)

    @property
    def local_url(self) -> str:
        """``https://localhost:<port>``, for raw HTTP (the SDK refuses it, see the package)."""
        return f"https://localhost:{self.port}"

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of every 401."""
        return self._validator.challenge

    @property
    def resource_id(self) -> str:
        """The vault's ARM resource ID as its 403 answers write it."""
        return self._rbac.vault_resource_id

    def transport(self) -> RequestsTransport:
        """A new azure-core transport that reaches :attr:`vault_url` here and trusts the
        local CA: ``SecretClient(kv.vault_url, credential, transport=kv.transport())``."""
        return vault_transport(self.dns_name, self.address, self.ca.bundle_path)

    def session(self) -> requests.Session:
        """A requests session that reaches :attr:`vault_url` here (raw REST calls)."""
        return vault_session(self.dns_name, self.address, self.ca.bundle_path)

    def secret_client(self, credential: TokenCredential, **options: Any) -> SecretClient:
        """``azure.keyvault.secrets.SecretClient`` for this vault over :meth:`transport`."""
        from azure.keyvault.secrets import SecretClient

        return SecretClient(self.vault_url, credential, transport=self.transport(), **options)

    # -- RBAC ----------------------------------------------------------------------

    def grant(self, principal_oid: str, role: str, secret: str | None = None) -> RoleAssignment:
        """Assign ``role`` (``Key Vault Secrets User``, ``Key Vault Secrets Officer``,
        ``Key Vault Reader``, ``Key Vault Administrator``) to a principal's object ID
        (the token's ``oid``) at vault scope, or at one secret's scope."""
        return self._rbac.grant(principal_oid, role, secret)

    def revoke(self, principal_oid: str, role: str, secret: str | None = None) -> bool:
        """Remove an assignment :meth:`grant` made; False if there was none."""
        return self._rbac.revoke(principal_oid, role, secret)

    def clear_role_assignments(self) -> None:
        """Remove every role assignment."""
        self._rbac.clear()

    @property
    def role_assignments(self) -> list[RoleAssignment]:
        """Every role assignment, oldest first."""
        return self._rbac.assignments

    # -- secrets -------------------------------------------------------------------

    def put_secret(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool = True,
    ) -> SecretVersion:
        """Add a version as an administrator would (no HTTP, no RBAC, no log entry)."""
        if not is_valid_name(name):
            raise ValueError(f"invalid secret name {name!r}")
        return self._store.set(name, value, content_type=content_type, tags=tags, enabled=enabled)

    def secret_versions(self, name: str) -> list[SecretVersion]:
        """The secret's versions, oldest first (empty if there is no such live secret)."""
        return self._store.versions(name)

    def latest(self, name: str) -> SecretVersion | None:
        """The secret's current version, or None."""
        versions = self._store.versions(name)
        return versions[-1] if versions else None

    def is_deleted(self, name: str) -> bool:
        """Whether the secret is soft-deleted (recoverable, its name not reusable)."""
        return self._store.is_deleted(name)

    # -- the request log -----------------------------------------------------------

    @property
    def requests(self) -> list[VaultRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self._requests.clear()

    @property
    def http_log(self) -> list[HttpExchange]:
        """The server's access log (targets with their query strings)."""
        return self._server.http_log

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of simulator bugs (each answered 500); tests assert it stays empty."""
        with self._lock:
            return list(self._errors)

    @property
    def jwks_fetches(self) -> int:
        """How often the signing keys were fetched."""
        return self._validator.jwks_fetches

    # -- faults --------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, status: FaultStatus = 503, *, retry_after: int | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status`` before authentication
        (throttling 429 or a server error; bodies' wording unverified). azure-core's
        retry policy retries these (3 times by default, honouring Retry-After)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * count)

    def clear_faults(self) -> None:
        """Drop pending faults."""
        with self._lock:
            self._faults.clear()

    # -- HTTP ----------------------------------------------------------------------

    def _record(self, entry: VaultRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    def _handle(self, request: HttpRequest) -> HttpResponse:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        try:
            if fault is not None:
                response = _fault(*fault).response()
                self._record(VaultRequest(request.method, request.path, None, response.status))
            else:
                response = self._dispatcher.handle(request)
        except Exception:
            with self._lock:
                self._errors.append(traceback.format_exc())
            response = VaultError(500, "InternalServerError", "simulator bug").response()
            self._record(VaultRequest(request.method, request.path, None, 500))
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        response.headers["x-ms-keyvault-region"] = self.location
        response.headers["x-ms-keyvault-service-version"] = "devstack"
        return response


def _fault(status: int, retry_after: int | None) -> VaultError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if status == 429:
        return VaultError(
            429,
            "Throttled",
            "Request was not processed because too many requests were received.",
            headers=headers,
        )
    code = "ServiceUnavailable" if status == 503 else "InternalServerError"
    return VaultError(status, code, "The service is temporarily unavailable.", headers=headers)
