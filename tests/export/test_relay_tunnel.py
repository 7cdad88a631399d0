"""The site database through the hybrid connection: ODBC to the app's loopback tunnel,
the tunnel to the relay double, the double to a local listener of each kind, the
listener to the PostgreSQL stand-in. TLS stays end to end (the stand-in's certificate is
checked through the tunnel), and every way the path fails reaches the operator as its
own message."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest

from devstack.ports import free_port
from devstack.relay import (
    HybridConnectionManagerListener,
    RelayBridgeListener,
    RelayDouble,
)
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.errors import RelayRefused, RelayUnavailable
from shared.export.site_database import SiteDatabaseClient
from shared.platform.connection_strings import through_tunnel
from shared.platform.relay.tokens import SasTokens
from shared.platform.relay.tunnel import ListenerKind, RelayRoute, RelayTunnel
from shared.platform.retry import RetryPolicy
from tests.export.conftest import LISTEN, RELAY_PATH, SEND, site_db_connection

pytestmark = pytest.mark.stack

PATH = RELAY_PATH


@pytest.fixture(scope="module")
def relay(local_ca: LocalCA, site_db: SiteDatabase) -> Iterator[RelayDouble]:
    hc = site_db_connection(site_db.port)
    with RelayDouble(local_ca, hybrid_connections=[hc], rendezvous_timeout=5.0) as double:
        yield double


def _listener(
    kind: ListenerKind, relay: RelayDouble, local_ca: LocalCA, target: tuple[str, int]
) -> RelayBridgeListener | HybridConnectionManagerListener:
    def token() -> str:
        return relay.sas_token(PATH, LISTEN)

    if kind == "bridge":
        return RelayBridgeListener(
            relay.endpoint(PATH), token, targets={"sql": target}, ca_bundle=local_ca.bundle_path
        )
    metadata = f'[{{"key":"endpoint","value":"{target[0]}:{target[1]}"}}]'
    return HybridConnectionManagerListener(
        relay.endpoint(PATH), token, user_metadata=metadata, ca_bundle=local_ca.bundle_path
    )


def _tunnel(
    relay: RelayDouble,
    local_ca: LocalCA,
    kind: ListenerKind,
    *,
    port_name: str = "sql",
    tokens: SasTokens | None = None,
    recycle_margin: float = 60.0,
) -> RelayTunnel:
    route = RelayRoute(relay.endpoint(PATH), PATH, kind, port_name)
    tokens = tokens or SasTokens(relay.namespace, PATH, SEND, relay.key(PATH, SEND))
    tunnel = RelayTunnel(
        route,
        tokens,
        ssl_context=ssl.create_default_context(cafile=str(local_ca.bundle_path)),
        connect_timeout=10.0,
        recycle_margin=recycle_margin,
    )
    tunnel.start()
    return tunnel


def _client(site_db: SiteDatabase, tunnel: RelayTunnel, attempts: int = 1) -> SiteDatabaseClient:
    return SiteDatabaseClient(
        through_tunnel(site_db.reader_connection_string, tunnel.port),
        login_timeout_seconds=10,
        retry=RetryPolicy(attempts=attempts, initial_backoff_seconds=0.05),
        path=tunnel,
    )


@pytest.mark.parametrize("kind", ["bridge", "hcm"])
def test_the_site_database_answers_through_the_tunnel(kind, relay, local_ca, site_db):
    with _listener(kind, relay, local_ca, ("127.0.0.1", site_db.port)) as listener:
        assert listener.wait_online()
        tunnel = _tunnel(relay, local_ca, kind)
        try:
            with _client(site_db, tunnel) as client:
                client.ping()  # every view the app reads, over TLS inside the tunnel
                client.sites()
                client.sites()  # a pooled connection: no new tunnel link
        finally:
            tunnel.close()
    assert tunnel.stats.connections == 1 and tunnel.stats.failures == 0
    assert tunnel.stats.bytes_up > 0 and tunnel.stats.bytes_down > 0
    assert listener.accepted == 1


def _refused_with(
    error: type[Exception], match: str, site_db: SiteDatabase, tunnel: RelayTunnel
) -> None:
    try:
        with _client(site_db, tunnel) as client, pytest.raises(error, match=match):
            client.sites()
    finally:
        tunnel.close()


def test_no_listener_online_is_said_so(relay, local_ca, site_db):
    assert relay.listener_count(PATH) == 0
    tunnel = _tunnel(relay, local_ca, "bridge")
    _refused_with(RelayUnavailable, "no listener is online", site_db, tunnel)


def test_a_wrong_key_an_expired_token_and_a_listen_rule_are_refused(relay, local_ca, site_db):
    with _listener("bridge", relay, local_ca, ("127.0.0.1", site_db.port)) as listener:
        assert listener.wait_online()
        wrong = SasTokens(relay.namespace, PATH, SEND, "bm90IHRoZSBrZXkgb2YgdGhlIHJ1bGUK")
        _refused_with(
            RelayRefused,
            "refused the token",
            site_db,
            _tunnel(relay, local_ca, "bridge", tokens=wrong),
        )
        hours_ago = SasTokens(
            relay.namespace, PATH, SEND, relay.key(PATH, SEND), clock=lambda: time.time() - 7200
        )
        _refused_with(
            RelayRefused,
            "the token has expired",
            site_db,
            _tunnel(relay, local_ca, "bridge", tokens=hours_ago),
        )
        listen_only = SasTokens(relay.namespace, PATH, LISTEN, relay.key(PATH, LISTEN))
        _refused_with(
            RelayRefused,
            "does not allow sending",
            site_db,
            _tunnel(relay, local_ca, "bridge", tokens=listen_only),
        )
        assert listener.accepted == 0  # none of them reached the listener


def test_an_unknown_port_name_is_refused_by_the_bridge(relay, local_ca, site_db):
    with _listener("bridge", relay, local_ca, ("127.0.0.1", site_db.port)) as listener:
        assert listener.wait_online()
        tunnel = _tunnel(relay, local_ca, "bridge", port_name="sql-typo")
        _refused_with(RelayRefused, "refused port name 'sql-typo'", site_db, tunnel)
        assert listener.refused == 1


@pytest.mark.parametrize("kind", ["bridge", "hcm"])
def test_sql_server_unreachable_behind_the_listener_is_said_so(kind, relay, local_ca, site_db):
    with _listener(kind, relay, local_ca, ("127.0.0.1", free_port())) as listener:
        assert listener.wait_online()
        tunnel = _tunnel(relay, local_ca, kind)
        _refused_with(RelayUnavailable, "could not reach SQL Server", site_db, tunnel)


def test_a_listener_back_after_an_outage_carries_the_next_query(relay, local_ca, site_db):
    target = ("127.0.0.1", site_db.port)
    tunnel = _tunnel(relay, local_ca, "hcm")
    try:
        # a second attempt, on a new connection, is how a broken pooled one is left behind
        with _client(site_db, tunnel, attempts=2) as client:
            with _listener("hcm", relay, local_ca, target) as listener:
                assert listener.wait_online()
                client.sites()
            # the listener is gone: the pooled link broke, a new one finds nobody
            with pytest.raises(RelayUnavailable, match="no listener is online"):
                client.sites()
            with _listener("hcm", relay, local_ca, target) as back:
                assert back.wait_online()
                client.sites()
    finally:
        tunnel.close()
    assert tunnel.stats.connections == 2


def _expiring_relay(local_ca: LocalCA, site_db: SiteDatabase) -> RelayDouble:
    """A double that ends a joined link when the sender's token expires (whether Azure
    does is not documented: the stricter answer)."""
    hc = site_db_connection(site_db.port)
    return RelayDouble(local_ca, hybrid_connections=[hc], expire_sender_links=True)


def _short_lived(relay: RelayDouble) -> SasTokens:
    """Tokens that expire 5 to 6 s after signing (the expiry is whole seconds)."""
    return SasTokens(
        relay.namespace,
        PATH,
        SEND,
        relay.key(PATH, SEND),
        lifetime_seconds=6,
        renew_before_seconds=4,
    )


def test_a_pooled_connection_is_retired_before_its_links_token_expires(local_ca, site_db):
    with (
        _expiring_relay(local_ca, site_db) as relay,
        _listener("hcm", relay, local_ca, ("127.0.0.1", site_db.port)) as listener,
    ):
        assert listener.wait_online()
        # retired 2 s before its token expires: 3 to 4 s after it opened
        tunnel = _tunnel(relay, local_ca, "hcm", tokens=_short_lived(relay), recycle_margin=2)
        try:
            with _client(site_db, tunnel) as client:  # one attempt: no failure allowed
                client.sites()
                client.sites()  # reused while its token is good
                assert tunnel.stats.connections == 1
                time.sleep(4.2)  # past its reuse, before the relay would end the link
                client.sites()  # on a new link, with a renewed token
        finally:
            tunnel.close()
    assert tunnel.stats.connections == 2
    assert tunnel.stats.failures == tunnel.stats.expired_links == 0, tunnel.failure_since(0.0)


def test_a_link_the_relay_ends_at_token_expiry_is_said_so_and_replaced(local_ca, site_db):
    with (
        _expiring_relay(local_ca, site_db) as relay,
        _listener("hcm", relay, local_ca, ("127.0.0.1", site_db.port)) as listener,
    ):
        assert listener.wait_online()
        # kept past expiry, as without recycling
        tunnel = _tunnel(relay, local_ca, "hcm", tokens=_short_lived(relay), recycle_margin=-5)
        try:
            with _client(site_db, tunnel, attempts=2) as client:
                client.sites()
                time.sleep(6.5)  # the relay closes the idle link with 1008
                client.sites()  # the broken pooled connection is left behind
                failure = tunnel.failure_since(0.0)
        finally:
            tunnel.close()
    assert tunnel.stats.connections == 2
    assert (tunnel.stats.expired_links, tunnel.stats.failures) == (1, 0)  # expected, no fault
    assert failure is not None and "close 1008" in str(failure)
    assert "expired token" in str(failure)
