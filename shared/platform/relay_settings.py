"""The ``SITE_DB_RELAY_*`` settings: the site database through an Azure Relay hybrid
connection the app opens itself (part of :class:`shared.platform.settings.Settings`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

#: A hybrid connection's name: letters, digits, periods, hyphens, underscores (and "/"
#: for a path), at most 260 characters, starting and ending with a letter or digit.
_PATH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,258}[A-Za-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?$")


class RelaySettings(BaseSettings):
    """Where the tunnel goes and how the app proves it may send."""

    site_db_relay_namespace: str | None = Field(
        default=None,
        alias="SITE_DB_RELAY_NAMESPACE",
        description="Azure Relay namespace host (<name>.servicebus.windows.net). With it "
        "and SITE_DB_RELAY_PATH, the site database is reached through that hybrid "
        "connection: SITE_DB_CONNECTION still names the SQL Server host and static port "
        "(its certificate's name), and the app connects through a loopback tunnel.",
    )
    site_db_relay_path: str | None = Field(
        default=None,
        alias="SITE_DB_RELAY_PATH",
        description="Name of the hybrid connection to the site database.",
    )
    site_db_relay_listener: Literal["bridge", "hcm"] = Field(
        default="bridge",
        alias="SITE_DB_RELAY_LISTENER",
        description="The on-premises listener: bridge (Azure Relay Bridge, azbridge; "
        "recommended) or hcm (Hybrid Connection Manager; Microsoft supports it only with "
        "App Service's own sender).",
    )
    site_db_relay_port_name: str = Field(
        default="sql",
        alias="SITE_DB_RELAY_PORT_NAME",
        description="The port name Azure Relay Bridge maps to SQL Server "
        "(PortName of its RemoteForward entry; azbridge -T "
        "<hybrid connection>:<port name>/<host>:<port>); bridge only.",
    )
    site_db_relay_key_name: str | None = Field(
        default=None,
        alias="SITE_DB_RELAY_KEY_NAME",
        description="A Send-only shared access rule of the hybrid connection; without it "
        "the app's managed identity signs in (Azure Relay Sender role), no key stored.",
    )
    site_db_relay_key: SecretStr | None = Field(
        default=None,
        alias="SITE_DB_RELAY_KEY",
        description="The key of SITE_DB_RELAY_KEY_NAME (a Key Vault reference).",
    )
    site_db_relay_client_id: str | None = Field(
        default=None,
        alias="SITE_DB_RELAY_CLIENT_ID",
        description="Client ID of the user-assigned managed identity that holds the "
        "Azure Relay Sender role (the system-assigned identity without it).",
    )

    @field_validator("site_db_relay_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.match(value.strip()):
            raise ValueError(
                "must be the namespace's host name, e.g. contoso.servicebus.windows.net"
            )
        return value.strip().lower() if value is not None else None

    @field_validator("site_db_relay_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.match(value.strip()):
            raise ValueError("must be a hybrid connection name (letters, digits, '.', '-', '_')")
        return value.strip() if value is not None else None

    @field_validator("site_db_relay_port_name")
    @classmethod
    def _port_name(cls, value: str) -> str:
        # The preamble gives the name's length in one byte.
        if not value or len(value.encode("utf-8")) > 255:
            raise ValueError("must be 1 to 255 bytes long")
        return value

    @model_validator(mode="after")
    def _relay_complete(self) -> RelaySettings:
        if (self.site_db_relay_namespace is None) != (self.site_db_relay_path is None):
            raise ValueError(
                "SITE_DB_RELAY_NAMESPACE and SITE_DB_RELAY_PATH: set both (the site "
                "database through a hybrid connection) or neither"
            )
        if (self.site_db_relay_key_name is None) != (self.site_db_relay_key is None):
            raise ValueError(
                "SITE_DB_RELAY_KEY_NAME and SITE_DB_RELAY_KEY: set both (a Send rule) or "
                "neither (the managed identity)"
            )
        if self.site_db_relay_key_name is not None and self.site_db_relay_namespace is None:
            raise ValueError("SITE_DB_RELAY_KEY_NAME: given without SITE_DB_RELAY_NAMESPACE")
        return self

    @property
    def relay_configured(self) -> bool:
        """Whether the site database is reached through the hybrid connection."""
        return self.site_db_relay_namespace is not None
