"""The export's tests run against either status message source (``EXPORT_SOURCE``).

A module opts in with ``pytestmark = SOURCES``; every other test of the folder reads the
site database as before. With ``adminservice`` the settings carry no
SITE_DB_CONNECTION at all, so the export cannot reach SQL by accident (and a tripwire in
place of the reader's ``pyodbc`` proves it never tried); the AdminService
simulator reads the same PostgreSQL stand-in (committed rows only), so late commits
behave as they do through the SMS Provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from devstack.adminservice import AdminServiceSimulator, StatusMessageReader
from devstack.entra import EntraSimulator
from devstack.relay import (
    AuthorizationRule,
    HybridConnection,
    HybridConnectionManagerListener,
    RelayAgent,
    RelayBridgeListener,
    RelayDouble,
)
from devstack.tls import LocalCA
from tests.conftest import Stack
from tests.remediation import scenario

#: Run a module's tests once per status message source.
SOURCES = pytest.mark.parametrize("export_source", ["sitedb", "adminservice"], indirect=True)
#: ... and once more per path to SQL through the relay double's hybrid connection, with
#: each on-premises listener (the export still reads SQL: EXPORT_SOURCE sitedb).
ALL_PATHS = pytest.mark.parametrize(
    "export_source", ["sitedb", "adminservice", "relay-bridge", "relay-hcm"], indirect=True
)
RELAY_PATH, SEND, LISTEN = "site-db", "cmremediate-send", "onprem-listen"


def site_db_connection(site_db_port: int | None = None) -> HybridConnection:
    """The site database's hybrid connection: a Send rule for the app, a Listen rule for
    on premises, and (HCM) the ``endpoint`` metadata of the stand-in's port."""
    metadata = ""
    if site_db_port is not None:
        metadata = f'[{{"key":"endpoint","value":"127.0.0.1:{site_db_port}"}}]'
    return HybridConnection(
        RELAY_PATH,
        user_metadata=metadata,
        rules=(AuthorizationRule.create(SEND, "Send"), AuthorizationRule.create(LISTEN, "Listen")),
    )


@pytest.fixture
def export_source(request: pytest.FixtureRequest) -> str:
    """The EXPORT_SOURCE of this test (``sitedb`` unless the module runs both)."""
    return str(getattr(request, "param", "sitedb"))


@pytest.fixture
def stack(
    stack: Stack, export_source: str, local_ca: LocalCA, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The stack, its settings pointing the export at the chosen source."""
    if export_source == "sitedb":
        yield stack
        return
    if export_source.startswith("relay-"):
        yield from _through_relay(stack, local_ca, export_source.removeprefix("relay-"))
        return
    request.getfixturevalue("no_odbc")
    entra: EntraSimulator = request.getfixturevalue("entra")
    with AdminServiceSimulator(
        local_ca,
        jwks_uri=entra.jwks_uri,
        issuer=entra.issuer_v1,
        admins=[scenario.SERVICE_ACCOUNT],
        status_messages=StatusMessageReader.for_site_database(stack.site_db),
    ) as adminservice:
        stack.adminservice = adminservice
        stack.source_settings = {
            "EXPORT_SOURCE": "adminservice",
            "SITE_DB_CONNECTION": None,
            "ADMINSERVICE_URL": adminservice.cmg_url,
            "ENTRA_AUTHORITY_HOST": entra.authority_host,
            "ENTRA_TENANT_ID": entra.tenant_id,
            "ENTRA_CLIENT_ID": scenario.CLIENT_ID,
            "ADMINSERVICE_USERNAME": scenario.SERVICE_ACCOUNT,
            "ADMINSERVICE_PASSWORD": scenario.SERVICE_PASSWORD,
            "TLS_CA_BUNDLE": str(local_ca.bundle_path),
        }
        yield stack
        unbounded = [q for q in adminservice.status_message_queries() if not q.selective]
        assert not unbounded, f"status message queries that are not selective: {unbounded}"


def _through_relay(stack: Stack, ca: LocalCA, kind: str) -> Iterator[Stack]:
    """The stack with SITE_DB_RELAY_* set: the app's tunnel, the relay double (its
    namespace "localhost", so that the SAS audience of localhost:<port> is its own), and
    an on-premises listener of ``kind`` forwarding to the PostgreSQL stand-in."""
    target = ("127.0.0.1", stack.site_db.port)
    hc = site_db_connection(stack.site_db.port)
    with RelayDouble(ca, "localhost", hybrid_connections=[hc]) as relay:
        token = partial(relay.sas_token, RELAY_PATH, LISTEN)
        listener: RelayAgent = (
            RelayBridgeListener(
                relay.endpoint(RELAY_PATH), token, targets={"sql": target}, ca_bundle=ca.bundle_path
            )
            if kind == "bridge"
            else HybridConnectionManagerListener(
                relay.endpoint(RELAY_PATH),
                token,
                user_metadata=hc.user_metadata,
                ca_bundle=ca.bundle_path,
            )
        )
        with listener:
            assert listener.wait_online()
            stack.source_settings = {
                "SITE_DB_RELAY_NAMESPACE": f"localhost:{relay.port}",
                "SITE_DB_RELAY_PATH": RELAY_PATH,
                "SITE_DB_RELAY_LISTENER": kind,
                "SITE_DB_RELAY_KEY_NAME": SEND,
                "SITE_DB_RELAY_KEY": relay.key(RELAY_PATH, SEND),
                "TLS_CA_BUNDLE": str(ca.bundle_path),
            }
            yield stack
        # the export really went through the hybrid connection
        assert listener.accepted >= 1
