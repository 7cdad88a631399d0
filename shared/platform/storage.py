"""The storage account: one place that turns settings into Azure SDK clients, and Azure
SDK errors into a StorageError that tells the operator what to check (storage_errors).

Works with a connection string (local, Azurite) or with the identity-based
``AzureWebJobsStorage__*`` settings and a managed identity (Azure).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import (
    ExponentialRetry,
    QueueClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from shared.errors import StorageError
from shared.platform.retry import RetryPolicy, Sleep, any_of
from shared.platform.settings import Settings

#: Explicit timeouts and a bounded retry, instead of the SDK's minutes-long defaults.
CONNECTION_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60


#: How often the Azure SDK retries a storage call (exponential backoff from 1 s).
STORAGE_RETRIES = 5


class StorageAccount:
    """Builds the queue, blob and table clients of the account in AzureWebJobsStorage."""

    def __init__(self, settings: Settings, *, retries: int = STORAGE_RETRIES) -> None:
        self._settings = settings
        self._retries = retries
        self._credential: TokenCredential | None = None
        if settings.storage_connection is None:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            self._credential = (
                ManagedIdentityCredential(client_id=settings.storage_client_id)
                if settings.storage_client_id
                else DefaultAzureCredential()
            )

    def identity_credential(self) -> TokenCredential:
        """The app's identity (the user-assigned one when AzureWebJobsStorage names it),
        for the Azure services it signs in to besides storage."""
        if self._credential is not None:
            return self._credential
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _common(self) -> dict[str, Any]:
        return {
            "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "retry_policy": ExponentialRetry(
                initial_backoff=1,
                increment_base=3,
                retry_total=self._retries,
                random_jitter_range=2,
            ),
            # Like every other client here: REQUESTS_CA_BUNDLE or proxy variables (app
            # settings are environment variables) must not replace the trust store.
            "use_env_settings": False,
        }

    def _service_uri(self, service: str, explicit: str | None) -> str:
        if explicit:
            return explicit
        return f"https://{self._settings.storage_account_name}.{service}.core.windows.net"

    def queue(self, name: str, *, raw: bool = False) -> QueueClient:
        """A queue client that writes and reads base64 text, as the queue trigger expects;
        ``raw`` leaves the stored text alone (to handle what another writer sent)."""
        policies: dict[str, Any] = dict(self._common())
        if not raw:
            policies["message_encode_policy"] = TextBase64EncodePolicy()
            policies["message_decode_policy"] = TextBase64DecodePolicy()
        if self._settings.storage_connection is not None:
            return QueueClient.from_connection_string(
                self._settings.storage_connection.get_secret_value(), name, **policies
            )
        return QueueClient(
            self._service_uri("queue", self._settings.storage_queue_uri),
            name,
            credential=self._credential,
            **policies,
        )

    def container(self, name: str) -> ContainerClient:
        """A blob container client (the exporter keeps its state in one)."""
        if self._settings.storage_connection is not None:
            service = BlobServiceClient.from_connection_string(
                self._settings.storage_connection.get_secret_value(), **self._common()
            )
        else:
            service = BlobServiceClient(
                self._service_uri("blob", self._settings.storage_blob_uri),
                credential=self._credential,
                **self._common(),
            )
        return service.get_container_client(name)

    def table(self, name: str) -> TableClient:
        """A table client (the audit trail lives in one). Entity writes are small: a
        shorter read timeout lets the audit log retry a stalled write sooner."""
        options = {**self._common(), "read_timeout": 20}
        if self._settings.storage_connection is not None:
            return TableClient.from_connection_string(
                self._settings.storage_connection.get_secret_value(), name, **options
            )
        return TableClient(
            self._service_uri("table", self._settings.storage_table_uri),
            name,
            credential=self._credential,
            **options,
        )


#: The storage services the app uses.
Service = Literal["queue", "blob", "table"]
#: The role each storage service needs, named in every error so the operator knows
#: what to check.
_ROLES: Final[dict[Service, str]] = {
    "queue": "Storage Queue Data Contributor",
    "blob": "Storage Blob Data Owner",
    "table": "Storage Table Data Contributor",
}


def storage_error(what: str, error: BaseException, service: Service) -> StorageError:
    """The typed error for a storage call the SDK's own retries did not ride out: what
    failed, why, and what the operator should check."""
    return StorageError(
        f"cannot {what}: {type(error).__name__}: {error}; check AzureWebJobsStorage, that "
        f"the storage account is reachable, and the identity's {_ROLES[service]} role"
    )


@contextlib.contextmanager
def storage_errors(
    what: str, service: Service, *, let_through: tuple[type[AzureError], ...] = ()
) -> Iterator[None]:
    """Turn Azure SDK errors into :func:`storage_error`; ``let_through`` are the ones the
    caller handles itself (a conflict it retries, a row that is not there)."""
    try:
        yield
    except let_through:
        raise
    except AzureError as error:
        raise storage_error(what, error, service) from None


def create_missing(create: Callable[[], object], what: str, service: Service) -> None:
    """Create a queue, container or table unless it exists."""
    with storage_errors(f"create {what}", service), contextlib.suppress(ResourceExistsError):
        create()


#: How a conditional write says another writer got there first (a created row, a
#: changed ETag): read again and decide again.
CONFLICTS: Final = (ResourceExistsError, ResourceModifiedError)

T = TypeVar("T")


def without_conflicts(
    attempt: Callable[[], T], *, attempts: int, what: str, sleep: Sleep | None = None
) -> T:
    """Run ``attempt`` (a read, then a conditional write that lets :data:`CONFLICTS`
    through) until no other writer came between them; StorageError naming ``what``
    after ``attempts`` (the message is then retried)."""
    policy = RetryPolicy.for_conflicts(attempts)
    try:
        return policy.call(
            attempt, transient=any_of(*CONFLICTS), what=f"{what}: writing", sleep=sleep
        )
    except CONFLICTS:
        raise StorageError(
            f"{what} kept changing under {attempts} attempts; the message will be retried"
        ) from None


def table_name_beside(queue_name: str, suffix: str) -> str:
    """A table named after its queue (table names allow letters and digits only)."""
    return (re.sub(r"[^A-Za-z0-9]", "", queue_name) + suffix)[:63]


def ensure_table(table: TableClient, purpose: str) -> None:
    """Create the table unless it exists."""
    create_missing(table.create_table, f"the {purpose} table {table.table_name!r}", "table")


class LazyTable:
    """A table client whose table is created on its first use by this object, and the
    read of one row that says what failed (None when there is no such row). Create
    once, reuse: the components that keep rows in a table share this."""

    def __init__(self, client: TableClient, purpose: str) -> None:
        self._client = client
        self._purpose = purpose
        self._ready = False

    @property
    def client(self) -> TableClient:
        """The SDK's client, the table created first if need be."""
        if not self._ready:
            ensure_table(self._client, self._purpose)
            self._ready = True
        return self._client

    def get(self, partition: str, row: str, *, select: list[str] | None = None) -> Any:
        """The row, or None; StorageError naming the table when the read fails."""
        client = self.client
        with storage_errors(f"read the {self._purpose} table", "table"):
            try:
                if select is None:
                    return client.get_entity(partition, row)
                return client.get_entity(partition, row, select=select)
            except ResourceNotFoundError:
                return None


def approximate_depth(queue: QueueClient) -> int:
    """Approximately how many messages a queue holds, invisible ones included (0 when
    it does not exist)."""
    what = f"read the length of queue {queue.queue_name!r}"
    try:
        with storage_errors(what, "queue", let_through=(ResourceNotFoundError,)):
            return int(queue.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0
