"""A local Azure Relay (Hybrid Connections) and the on-premises agents behind it.

The app reaches the on-premises site database through an Azure Relay hybrid
connection: it connects as the *sender*, an agent on premises *listens* and forwards
to SQL Server. None of that runs here, so:

- :class:`RelayDouble` serves the Hybrid Connections WebSocket protocol on
  ``wss://localhost:<port>/$hc/<path>`` with SAS and Entra ID authorization, the held
  connect and rendezvous, ``renewToken`` and fault controls (``double``, with
  ``upgrade``, ``channels``, ``rendezvous`` and ``auth`` under it);
- :class:`RelayBridgeListener` (Azure Relay Bridge's remote forwarder) and
  :class:`HybridConnectionManagerListener` (App Service's Hybrid Connection Manager)
  listen on it and relay bytes to a TCP target, the site database stand-in
  (``listeners``, ``agent``);
- ``tokens`` makes and reads SAS tokens; ``model`` holds hybrid connections, rules,
  rights and roles.

Typical use::

    rule = AuthorizationRule.create("RootManageSharedAccessKey", "Manage")
    hc = HybridConnection("site-sql", user_metadata='[{"key":"endpoint","value":"127.0.0.1:5432"}]')
    with RelayDouble(ca, hybrid_connections=[hc], rules=[rule]) as relay:
        token = lambda: relay.sas_token("site-sql", "RootManageSharedAccessKey")
        with HybridConnectionManagerListener(relay.endpoint("site-sql"), token,
                                             user_metadata=hc.user_metadata,
                                             ca_bundle=ca.bundle_path):
            ...  # a sender connects to relay.endpoint("site-sql")?sb-hc-action=connect
"""

from devstack.relay.agent import DEFAULT_RECONNECT_DELAYS, RelayAgent
from devstack.relay.auth import RELAY_AUDIENCES, EntraTrust
from devstack.relay.double import DEFAULT_NAMESPACE, RelayDouble
from devstack.relay.listeners import (
    PREAMBLE_ACCEPTED,
    PREAMBLE_BAD_VERSION,
    PREAMBLE_MODE_MISMATCH,
    HybridConnectionManagerListener,
    RelayBridgeListener,
)
from devstack.relay.model import (
    LISTENER_ROLE,
    OWNER_ROLE,
    SENDER_ROLE,
    AuthorizationRule,
    HybridConnection,
    RelayCall,
    Right,
    metadata_endpoint,
)
from devstack.relay.tokens import (
    make_sas_token,
    parse_sas,
    relay_audience,
    sas_token_for,
    token_expiry,
)
from devstack.relay.upgrade import AUTH_HEADER

__all__ = [
    "AUTH_HEADER",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RECONNECT_DELAYS",
    "LISTENER_ROLE",
    "OWNER_ROLE",
    "PREAMBLE_ACCEPTED",
    "PREAMBLE_BAD_VERSION",
    "PREAMBLE_MODE_MISMATCH",
    "RELAY_AUDIENCES",
    "SENDER_ROLE",
    "AuthorizationRule",
    "EntraTrust",
    "HybridConnection",
    "HybridConnectionManagerListener",
    "RelayAgent",
    "RelayBridgeListener",
    "RelayCall",
    "RelayDouble",
    "Right",
    "make_sas_token",
    "metadata_endpoint",
    "parse_sas",
    "relay_audience",
    "sas_token_for",
    "token_expiry",
]
