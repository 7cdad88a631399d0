"""Where the AdminService session lives (``ADMINSERVICE_AUTH=refresh-token``): MSAL's
serialized token cache, refresh token included, written by ``cmremediate sign-in``
and kept alive by the app.

Every write is conditional on the version read (the blob's ETag): of two instances
that refreshed at once, one writes and the other adopts what it wrote, so the stored
session is never an older one written last. Entra ID leaves a redeemed refresh token
valid until it expires, so the loser's token is not wasted, merely not kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.platform.storage import storage_errors


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
        with storage_errors(f"write the AdminService session ({self.where})", "blob"):
            self._ensure_container()
            return self._upload(text, {"overwrite": True})

    def _upload(self, text: str, conditions: dict[str, Any]) -> str:
        result = self._blob.upload_blob(
            text.encode("utf-8"),
            content_settings=ContentSettings(content_type="application/json"),
            **conditions,
        )
        return str(result["etag"])

    def _ensure_container(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
