"""Key Vault's fixed names and limits, its built-in secret roles, and the records the
simulator keeps: secret versions, role assignments and the request log."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple

#: The resource Key Vault names in its challenge, and a token's accepted ``aud`` values:
#: the resource, or Key Vault's first-party application ID (both named by AKV10022).
VAULT_RESOURCE: Final = "https://vault.azure.net"
VAULT_APP_ID: Final = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
#: The scope azure-keyvault-secrets asks for (the challenge's resource + "/.default").
VAULT_SCOPE: Final = f"{VAULT_RESOURCE}/.default"
#: Vault DNS names end with this (public cloud); the SDK checks the challenge against it.
VAULT_DNS_SUFFIX: Final = "vault.azure.net"

#: The api-version values azure-keyvault-secrets 4.12 can send (its ApiVersion enum).
API_VERSIONS: Final = frozenset(
    {"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}
)

#: An object name: 1-127 characters of 0-9, a-z, A-Z and "-" (names compare without case).
NAME_PATTERN: Final = re.compile(r"[0-9a-zA-Z-]{1,127}")
#: "a maximum size of 25 KB" (about-secrets); the Azure CLI says 25600.
MAX_VALUE_BYTES: Final = 25 * 1024
#: contentType "maximum length ... 255 characters" (about-secrets).
MAX_CONTENT_TYPE_CHARS: Final = 255
#: ``maxresults`` of a list: 1 to 25, and 25 without it.
MAX_RESULTS: Final = 25

#: A vault with soft delete (mandatory now) and without purge protection.
RECOVERY_LEVEL: Final = "Recoverable+Purgeable"
RECOVERABLE_DAYS: Final = 90


class DataAction(StrEnum):
    """The RBAC data actions of the secret operations."""

    GET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    SET = "Microsoft.KeyVault/vaults/secrets/setSecret/action"
    READ_METADATA = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
    UPDATE = "Microsoft.KeyVault/vaults/secrets/update/action"
    DELETE = "Microsoft.KeyVault/vaults/secrets/delete"
    RECOVER = "Microsoft.KeyVault/vaults/secrets/recover/action"
    PURGE = "Microsoft.KeyVault/vaults/secrets/purge/action"


_ALL_SECRET_ACTIONS = frozenset(DataAction)

#: The built-in roles' data actions on secrets (Azure built-in roles, security section):
#: Secrets User has getSecret and readMetadata, Reader readMetadata only, Secrets Officer
#: ``vaults/secrets/*``, Administrator ``vaults/*``.
ROLES: Final[Mapping[str, frozenset[DataAction]]] = {
    "Key Vault Administrator": _ALL_SECRET_ACTIONS,
    "Key Vault Secrets Officer": _ALL_SECRET_ACTIONS,
    "Key Vault Secrets User": frozenset({DataAction.GET, DataAction.READ_METADATA}),
    "Key Vault Reader": frozenset({DataAction.READ_METADATA}),
}


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a valid object name."""
    return NAME_PATTERN.fullmatch(name) is not None


def new_version_id() -> str:
    """A version identifier: 32 lower-case hex digits."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of a secret as the vault holds it (times in whole epoch seconds).

    ``name`` is spelt as the request that made this version spelt it.
    """

    name: str
    version: str
    value: str = field(repr=False)
    content_type: str | None
    tags: Mapping[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class DeletedSecret:
    """A soft-deleted secret: its versions, latest last, and when it goes for good."""

    versions: tuple[SecretVersion, ...]
    deleted_date: int
    scheduled_purge_date: int

    @property
    def latest(self) -> SecretVersion:
        """The version that was current when the secret was deleted."""
        return self.versions[-1]


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    """A role of a principal (object ID) at vault scope (``secret`` None) or one secret's."""

    principal_id: str
    role: str
    secret: str | None = None


class VaultRequest(NamedTuple):
    """One request as the simulator answered it.

    ``principal`` is the token's ``oid`` (None before authentication succeeded),
    ``operation`` the REST operation (``SetSecret``, ``GetSecret``...; None when the
    request was refused before its route was known), ``secret`` the name in the path.
    """

    method: str
    path: str
    principal: str | None
    status: int
    operation: str | None = None
    secret: str | None = None
