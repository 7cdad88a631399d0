"""The AdminService's delegated tokens, as ADMINSERVICE_AUTH says: the service
account's password (ROPC), or the session an admin opened with ``cmremediate sign-in``,
and where that session is kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from azure.keyvault.secrets import SecretClient

from shared.errors import ConfigurationError
from shared.platform.session_store import BlobSessionStore, KeyVaultSessionStore, SessionStore
from shared.platform.settings import Settings
from shared.platform.storage import StorageAccount
from shared.platform.tokens import DelegatedTokens, SessionTokens, TokenProvider


def adminservice_tokens(
    s: Settings,
    http: requests.Session,
    store: Callable[[], SessionStore],
    monotonic: Callable[[], float],
) -> TokenProvider:
    """The token provider ADMINSERVICE_AUTH names (``store`` is only asked for with
    ``refresh-token``)."""
    assert s.entra_tenant_id and s.entra_client_id, "checked by the caller"
    if s.signs_in_with_session:
        return SessionTokens(
            authority_host=s.entra_authority_host,
            tenant_id=s.entra_tenant_id,
            client_id=s.entra_client_id,
            scope=s.adminservice_scope,
            session=http,
            store=store(),
            monotonic=monotonic,
        )
    if not (s.adminservice_username and s.adminservice_password):
        raise ConfigurationError(
            "ADMINSERVICE_USERNAME and ADMINSERVICE_PASSWORD are required "
            "(ADMINSERVICE_AUTH=password)"
        )
    secret = s.entra_client_secret
    return DelegatedTokens(
        authority_host=s.entra_authority_host,
        tenant_id=s.entra_tenant_id,
        client_id=s.entra_client_id,
        username=s.adminservice_username,
        password=s.adminservice_password.get_secret_value(),
        scope=s.adminservice_scope,
        session=http,
        client_secret=secret.get_secret_value() if secret is not None else None,
        monotonic=monotonic,
    )


def session_store(
    s: Settings, storage: StorageAccount, credential: Any = None, transport: Any = None
) -> SessionStore:
    """The Key Vault secret of ADMINSERVICE_SESSION_SECRET_URI, signed in to with
    ``credential`` (None: the app's identity; ``cmremediate sign-in`` passes the admin's),
    with a lease blob beside the state for its renewals; else the blob
    ADMINSERVICE_SESSION_BLOB in the state container."""
    container = storage.container(s.state_container)
    secret = s.session_secret
    if secret is None:
        return BlobSessionStore(container, s.adminservice_session_blob)
    vault, name = secret
    options = {"transport": transport} if transport is not None else {}
    client = SecretClient(vault, credential or storage.identity_credential(), **options)
    return KeyVaultSessionStore(client, name, container)
