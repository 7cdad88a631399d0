"""How the app signs in to the AdminService: the service account's password, or a
session an admin opened once with ``cmremediate sign-in`` (part of
:class:`shared.platform.settings.Settings`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

#: A blob name the session may live under: no path tricks, no URL.
_BLOB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
#: A Key Vault secret's URL without a version (any cloud's vault domain).
_SECRET_URI = re.compile(r"^https://[a-z0-9-]{3,24}\.vault\.[a-z.]+/secrets/[0-9A-Za-z-]{1,127}/?$")


class SessionSettings(BaseSettings):
    """``ADMINSERVICE_AUTH`` and where a signed-in session is kept."""

    adminservice_auth: Literal["password", "refresh-token"] = Field(
        default="password",
        alias="ADMINSERVICE_AUTH",
        description="How the app signs in to the AdminService: password (the service "
        "account's username and password, ROPC: no MFA, fails in federated tenants) or "
        "refresh-token (recommended: a session an admin opens once with `cmremediate "
        "sign-in`, device code with MFA; the app keeps it alive; no password stored).",
    )
    adminservice_session_blob: str = Field(
        default="adminservice-session.json",
        alias="ADMINSERVICE_SESSION_BLOB",
        description="With ADMINSERVICE_AUTH=refresh-token: the blob, in the state container "
        "(<REMEDIATION_QUEUE>-state), that keeps the session (MSAL's token cache); written "
        "by `cmremediate sign-in`, kept by the app with conditional writes.",
    )

    adminservice_session_secret_uri: str | None = Field(
        default=None,
        alias="ADMINSERVICE_SESSION_SECRET_URI",
        description="With ADMINSERVICE_AUTH=refresh-token: the Key Vault secret that keeps "
        "the session, https://<vault>.vault.azure.net/secrets/<name> (the app's identity "
        "needs Key Vault Secrets Officer on that secret only). Unset: the blob "
        "ADMINSERVICE_SESSION_BLOB in the storage account (local runs).",
    )

    @field_validator("adminservice_session_secret_uri")
    @classmethod
    def _secret_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _SECRET_URI.match(value):
            raise ValueError(
                "must be https://<vault>.vault.azure.net/secrets/<name> (no version: the "
                "app writes new versions)"
            )
        return value.rstrip("/")

    @property
    def session_secret(self) -> tuple[str, str] | None:
        """(vault URL, secret name) of ADMINSERVICE_SESSION_SECRET_URI, if set."""
        if self.adminservice_session_secret_uri is None:
            return None
        vault, _, name = self.adminservice_session_secret_uri.partition("/secrets/")
        return vault, name

    @field_validator("adminservice_session_blob")
    @classmethod
    def _blob_name(cls, value: str) -> str:
        if not _BLOB.match(value):
            raise ValueError("must be a plain blob name (letters, digits, '.', '_', '-')")
        return value

    @property
    def signs_in_with_session(self) -> bool:
        """Whether the AdminService tokens come from a signed-in session."""
        return self.adminservice_auth == "refresh-token"
