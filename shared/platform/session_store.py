"""Where the AdminService session lives (``ADMINSERVICE_AUTH=refresh-token``): MSAL's
serialized token cache, refresh token included, written by ``cmremediate sign-in``
and kept alive by the app: a Key Vault secret on Azure (:class:`KeyVaultSessionStore`),
or a private blob in the storage account (:class:`BlobSessionStore`, local runs).

Every renewal is written only over the version it read: of two instances
that refreshed at once, one writes and the other adopts what it wrote, so the stored
session is never an older one written last. Entra ID leaves a redeemed refresh token
valid until it expires, so the loser's token is not wasted, merely not kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobLeaseClient, ContainerClient, ContentSettings

from shared.errors import StorageError, TokenError
from shared.platform.retry import RetryPolicy
from shared.platform.storage import create_missing, storage_errors


@dataclass(frozen=True)
class StoredSession:
    """The serialized cache and the version it was read at."""

    text: str
    version: str


class SessionStore(Protocol):
    """Reads and conditionally writes the stored session."""

    #: Where it is, for messages (never its content).
    where: str

    def load(self) -> StoredSession | None:
        """The stored session, or None when nobody has signed in."""
        ...

    def save(self, text: str, version: str | None) -> str | None:
        """Write ``text`` if the stored version is still ``version`` (None: if there is
        none, or unconditionally with ``replace``); the new version, or None when
        someone else wrote first."""
        ...

    def replace(self, text: str) -> str:
        """Write ``text`` whatever is stored (a new sign-in); the new version."""
        ...


class BlobSessionStore:
    """The session as a private blob (the storage account's encryption at rest; local
    runs, and deployments without a Key Vault secret for it)."""

    def __init__(self, container: ContainerClient, name: str) -> None:
        self._blob = container.get_blob_client(name)
        self._container = container
        self.where = f"blob {container.container_name}/{name}"

    def load(self) -> StoredSession | None:
        with storage_errors(f"read the AdminService session ({self.where})", "blob"):
            try:
                download = self._blob.download_blob(encoding="utf-8")
                text = download.readall()
            except ResourceNotFoundError:
                return None
        return StoredSession(str(text), str(download.properties.etag))

    def save(self, text: str, version: str | None) -> str | None:
        # No version: create only. A version: replace only that one.
        conditions: dict[str, Any] = (
            {"overwrite": False}
            if version is None
            else {
                "overwrite": True,
                "etag": version,
                "match_condition": MatchConditions.IfNotModified,
            }
        )
        lost = (ResourceModifiedError, ResourceExistsError)
        with storage_errors(
            f"write the AdminService session ({self.where})", "blob", let_through=lost
        ):
            try:
                return self._upload(text, conditions)
            except lost:
                return None

    def replace(self, text: str) -> str:
        _ensure_container(self._container)
        with storage_errors(f"write the AdminService session ({self.where})", "blob"):
            return self._upload(text, {"overwrite": True})

    def _upload(self, text: str, conditions: dict[str, Any]) -> str:
        result = self._blob.upload_blob(
            text.encode("utf-8"),
            content_settings=ContentSettings(content_type="application/json"),
            **conditions,
        )
        return str(result["etag"])


#: The content type of a stored session; a version without it (the deployment's empty
#: placeholder, which lets the app's role be scoped to this one secret) is not one.
SESSION_CONTENT_TYPE: Final = "application/vnd.cmremediate.msal-cache+json"
#: How long one instance may hold the write lock (a save takes one read and one write).
_LOCK_SECONDS: Final = 15
#: Waiting for another instance's lock: a save holds it well under a second.
_LOCK_WAIT: Final = RetryPolicy(
    attempts=40, initial_backoff_seconds=0.1, max_backoff_seconds=1.0, log_level=logging.INFO
)


class KeyVaultSessionStore:
    """The session as a Key Vault secret: each write a new version, read by the app's
    identity with a role on this one secret.

    Key Vault has no conditional write (no ETag on secrets), so a renewal takes a blob
    lease (``lock``) for its read-compare-write: of two instances, the second finds a
    newer version than the one it read and adopts it. A new sign-in writes without the
    lock; should it land between an instance's compare and write, the instance's
    renewal (as valid as the admin's) is what stays."""

    def __init__(self, client: SecretClient, name: str, lock_container: ContainerClient) -> None:
        self._client = client
        self._name = name
        self._container = lock_container
        self._lock = lock_container.get_blob_client(f"{name}.lock")
        self._lock_ready = False
        self.where = f"Key Vault secret {client.vault_url.rstrip('/')}/secrets/{name}"

    def load(self) -> StoredSession | None:
        found = self._latest()
        if found is None:
            return None
        version, text = found
        return StoredSession(text, version)

    def save(self, text: str, version: str | None) -> str | None:
        with self._locked():
            latest = self._latest()
            if (latest[0] if latest is not None else None) != version:
                return None  # another instance renewed first
            return self._write(text)

    def replace(self, text: str) -> str:
        return self._write(text)

    def _latest(self) -> tuple[str, str] | None:
        """The newest version that holds a session (placeholders skipped)."""
        with _vault_errors(f"read the AdminService session ({self.where})"):
            try:
                secret = self._client.get_secret(self._name)
            except ResourceNotFoundError:
                return None
            if secret.properties.content_type == SESSION_CONTENT_TYPE:
                return str(secret.properties.version), str(secret.value)
            sessions = [
                p
                for p in self._client.list_properties_of_secret_versions(self._name)
                if p.content_type == SESSION_CONTENT_TYPE and p.enabled is not False
            ]
            if not sessions:
                return None
            newest = max(sessions, key=lambda p: p.created_on or datetime.min.replace(tzinfo=UTC))
            secret = self._client.get_secret(self._name, newest.version)
            return str(secret.properties.version), str(secret.value)

    def _write(self, text: str) -> str:
        with _vault_errors(f"write the AdminService session ({self.where})"):
            secret = self._client.set_secret(self._name, text, content_type=SESSION_CONTENT_TYPE)
        return str(secret.properties.version)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        def acquire() -> BlobLeaseClient:
            return self._lock.acquire_lease(lease_duration=_LOCK_SECONDS)

        def busy(error: Exception) -> str | None:
            held = isinstance(error, HttpResponseError) and error.status_code == 409
            return "another instance is renewing the session" if held else None

        if not self._lock_ready:  # once per instance, not once per renewal
            _ensure_container(self._container)
            create_missing(
                lambda: self._lock.upload_blob(b"", overwrite=False),
                f"the AdminService session lock ({self._lock.blob_name})",
                "blob",
            )
            self._lock_ready = True
        with storage_errors(f"lock the AdminService session ({self._lock.blob_name})", "blob"):
            lease = _LOCK_WAIT.call(acquire, transient=busy, what="AdminService session lock")
        try:
            yield
        finally:
            with contextlib.suppress(AzureError):
                lease.release()


def _ensure_container(container: ContainerClient) -> None:
    what = f"blob container {container.container_name!r}"
    create_missing(container.create_container, what, "blob")


@contextlib.contextmanager
def _vault_errors(what: str) -> Iterator[None]:
    """Key Vault's refusals and outages as errors that say what to check."""
    try:
        yield
    except ResourceNotFoundError:
        raise
    except HttpResponseError as error:
        status = error.status_code or 0
        if status in (401, 403):
            raise TokenError(
                f"Key Vault refused to {what} (HTTP {status}): the app's identity needs the "
                "Key Vault Secrets Officer role on this secret (the admin who signs in, too), "
                "and the vault must admit the caller's network"
            ) from None
        raise StorageError(f"could not {what} (HTTP {status}: {error.reason})") from None
    except AzureError as error:
        raise StorageError(f"could not {what} ({type(error).__name__}: {error})") from None
