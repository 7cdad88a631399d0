"""The vault's secrets: versions, soft-deleted secrets, and the JSON bundles the REST
API answers with. Names compare without case, as Key Vault's do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from devstack.keyvault.errors import (
    deleted_but_recoverable,
    deleted_secret_not_found,
    secret_not_found,
)
from devstack.keyvault.model import (
    RECOVERABLE_DAYS,
    RECOVERY_LEVEL,
    DeletedSecret,
    SecretVersion,
    new_version_id,
)

_DAY = 86400


class SecretStore:
    """Every secret's versions (oldest first) and the soft-deleted secrets."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, list[SecretVersion]] = {}
        self._deleted: dict[str, DeletedSecret] = {}

    def _now(self) -> int:
        return int(self._clock())

    # -- writes ----------------------------------------------------------------------

    def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        """Add a version (the secret is made if new); a soft-deleted name is a 409."""
        key = name.lower()
        now = self._now()
        version = SecretVersion(
            name=name,
            version=new_version_id(),
            value=value,
            content_type=content_type,
            tags=dict(tags) if tags is not None else None,
            enabled=enabled,
            not_before=not_before,
            expires=expires,
            created=now,
            updated=now,
        )
        with self._lock:
            if key in self._deleted:
                raise deleted_but_recoverable(name)
            self._live.setdefault(key, []).append(version)
        return version

    def update(
        self,
        name: str,
        version: str | None,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool | None = None,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        """Change a version's attributes, content type or tags (None: unchanged)."""
        with self._lock:
            versions = self._versions_of(name, version)
            index = self._index(versions, name, version)
            current = versions[index]
            changed = replace(
                current,
                content_type=current.content_type if content_type is None else content_type,
                tags=current.tags if tags is None else dict(tags),
                enabled=current.enabled if enabled is None else enabled,
                not_before=current.not_before if not_before is None else not_before,
                expires=current.expires if expires is None else expires,
                updated=self._now(),
            )
            versions[index] = changed
            return changed

    def delete(self, name: str) -> DeletedSecret:
        """Soft-delete a secret (every version); it can be recovered or purged."""
        now = self._now()
        with self._lock:
            versions = self._live.pop(name.lower(), None)
            if versions is None:
                raise secret_not_found(name)
            deleted = DeletedSecret(tuple(versions), now, now + RECOVERABLE_DAYS * _DAY)
            self._deleted[name.lower()] = deleted
            return deleted

    def recover(self, name: str) -> SecretVersion:
        """Bring a soft-deleted secret back; its latest version."""
        with self._lock:
            deleted = self._deleted.pop(name.lower(), None)
            if deleted is None:
                raise deleted_secret_not_found(name)
            self._live[name.lower()] = list(deleted.versions)
            return deleted.latest

    def purge(self, name: str) -> None:
        """Forget a soft-deleted secret for good."""
        with self._lock:
            if self._deleted.pop(name.lower(), None) is None:
                raise deleted_secret_not_found(name)

    # -- reads -----------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> SecretVersion:
        """A version (the latest without ``version``), or the 404."""
        with self._lock:
            versions = self._versions_of(name, version)
            return versions[self._index(versions, name, version)]

    def versions(self, name: str) -> list[SecretVersion]:
        """The secret's versions, oldest first (empty for an unknown secret)."""
        with self._lock:
            return list(self._live.get(name.lower(), ()))

    def latest_versions(self) -> list[SecretVersion]:
        """The latest version of every live secret, by name."""
        with self._lock:
            return [self._live[key][-1] for key in sorted(self._live)]

    def deleted(self, name: str) -> DeletedSecret:
        """A soft-deleted secret, or the 404."""
        with self._lock:
            deleted = self._deleted.get(name.lower())
        if deleted is None:
            raise deleted_secret_not_found(name)
        return deleted

    def is_deleted(self, name: str) -> bool:
        """Whether ``name`` is a soft-deleted secret."""
        with self._lock:
            return name.lower() in self._deleted

    def _versions_of(self, name: str, version: str | None) -> list[SecretVersion]:
        versions = self._live.get(name.lower())
        if not versions:
            raise secret_not_found(name if not version else f"{name}/{version}")
        return versions

    @staticmethod
    def _index(versions: list[SecretVersion], name: str, version: str | None) -> int:
        if not version:
            return len(versions) - 1
        for index, candidate in enumerate(versions):
            if candidate.version == version.lower():
                return index
        raise secret_not_found(f"{name}/{version}")


# -- the JSON the REST API answers ---------------------------------------------------


def attributes(version: SecretVersion) -> dict[str, Any]:
    """A version's ``attributes`` object."""
    result: dict[str, Any] = {"enabled": version.enabled}
    if version.not_before is not None:
        result["nbf"] = version.not_before
    if version.expires is not None:
        result["exp"] = version.expires
    result.update(
        created=version.created,
        updated=version.updated,
        recoveryLevel=RECOVERY_LEVEL,
        recoverableDays=RECOVERABLE_DAYS,
    )
    return result


def secret_bundle(
    version: SecretVersion, vault_url: str, *, with_value: bool = True
) -> dict[str, Any]:
    """The SecretBundle of a version (``id`` = ``<vault>/secrets/<name>/<version>``)."""
    bundle: dict[str, Any] = {}
    if with_value:
        bundle["value"] = version.value
    if version.content_type is not None:
        bundle["contentType"] = version.content_type
    bundle["id"] = f"{vault_url}/secrets/{version.name}/{version.version}"
    bundle["attributes"] = attributes(version)
    if version.tags is not None:
        bundle["tags"] = dict(version.tags)
    return bundle


def secret_item(version: SecretVersion, vault_url: str, *, versioned: bool) -> dict[str, Any]:
    """A list item: no value; the ``id`` carries the version only in a versions list."""
    item: dict[str, Any] = {
        "id": f"{vault_url}/secrets/{version.name}" + (f"/{version.version}" if versioned else ""),
        "attributes": attributes(version),
    }
    if version.content_type is not None:
        item["contentType"] = version.content_type
    if version.tags is not None:
        item["tags"] = dict(version.tags)
    return item


def deleted_bundle(deleted: DeletedSecret, vault_url: str) -> dict[str, Any]:
    """The DeletedSecretBundle: the latest version without its value, and the deletion."""
    bundle = secret_bundle(deleted.latest, vault_url, with_value=False)
    return {
        "recoveryId": f"{vault_url}/deletedsecrets/{deleted.latest.name}",
        "deletedDate": deleted.deleted_date,
        "scheduledPurgeDate": deleted.scheduled_purge_date,
        **bundle,
    }
