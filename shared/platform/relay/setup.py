"""The tunnel the ``SITE_DB_RELAY_*`` settings describe, built and started."""

from __future__ import annotations

import ssl
from pathlib import Path

from shared.platform.relay.tokens import EntraRelayTokens, RelayTokens, SasTokens
from shared.platform.relay.tunnel import RelayRoute, RelayTunnel
from shared.platform.relay_settings import RelaySettings


def relay_tokens(settings: RelaySettings) -> RelayTokens:
    """A Send rule's signatures when a key is set, else the managed identity's tokens."""
    assert settings.site_db_relay_namespace and settings.site_db_relay_path
    if settings.site_db_relay_key_name and settings.site_db_relay_key:
        return SasTokens(
            settings.site_db_relay_namespace,
            settings.site_db_relay_path,
            settings.site_db_relay_key_name,
            settings.site_db_relay_key.get_secret_value(),
        )
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = settings.site_db_relay_client_id
    credential = (
        ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    )
    return EntraRelayTokens(credential)


def open_tunnel(
    settings: RelaySettings, trust_store: Path, tokens: RelayTokens | None = None
) -> RelayTunnel:
    """Start the loopback tunnel to the site database's hybrid connection."""
    namespace, path = settings.site_db_relay_namespace, settings.site_db_relay_path
    assert namespace and path, "open_tunnel needs SITE_DB_RELAY_NAMESPACE and _PATH"
    route = RelayRoute(
        endpoint=f"wss://{namespace}/$hc/{path}",
        path=path,
        listener=settings.site_db_relay_listener,
        port_name=settings.site_db_relay_port_name,
    )
    context = ssl.create_default_context(cafile=str(trust_store))
    tunnel = RelayTunnel(route, tokens or relay_tokens(settings), ssl_context=context)
    tunnel.start()
    return tunnel
