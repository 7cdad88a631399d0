"""The secret settings, registered so that no log line can carry them."""

from __future__ import annotations

from pydantic import SecretStr

from shared.platform.redaction import (
    connection_string_secrets,
    install_log_redaction,
    secrets,
    url_secrets,
)
from shared.platform.settings import Settings


def register_secrets(settings: Settings) -> None:
    """Make every secret setting unloggable (see shared.platform.redaction), from now on."""
    install_log_redaction()

    def plain(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    secrets.add(
        *connection_string_secrets(
            plain(settings.site_db_connection), plain(settings.storage_connection)
        ),
        plain(settings.adminservice_password),
        plain(settings.entra_client_secret),
        plain(settings.webservice_secret),
        plain(settings.site_db_relay_key),
        *url_secrets(settings.webservice_url, settings.adminservice_url),
    )
