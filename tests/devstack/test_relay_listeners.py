"""The two on-premises agents on the relay double: Azure Relay Bridge (preamble, port
names) and Hybrid Connection Manager (the endpoint metadata), bytes both ways to a TCP
target, refusals, token renewal, reconnects, and PostgreSQL through each of them."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyodbc
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devstack.ports import free_port
from devstack.relay import (
    PREAMBLE_ACCEPTED,
    AuthorizationRule,
    HybridConnection,
    HybridConnectionManagerListener,
    RelayAgent,
    RelayBridgeListener,
    RelayDouble,
)
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from tests.helpers import wait_until

HC = "site-sql"
FAST = (0.05, 0.1, 0.2, 0.5)  # reconnect delays for tests


def preamble(port_name: str, mode: int = 0) -> bytes:
    name = port_name.encode("utf-8")
    return bytes([1, 0, mode, len(name)]) + name


class TcpServer:
    """A loopback TCP server: echoes what it reads, or (``goodbye``) writes that and
    closes. Counts connections and ends of stream it saw."""

    def __init__(self, goodbye: bytes | None = None) -> None:
        self.goodbye = goodbye
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.eofs = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            if self.goodbye is not None:
                connection.sendall(self.goodbye)
                return
            while data := connection.recv(65536):
                connection.sendall(data)
            with self._lock:
                self.eofs += 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[TcpServer]:
    server = TcpServer()
    yield server
    server.close()


LISTEN = AuthorizationRule.create("listen", "Listen")
SEND = AuthorizationRule.create("send", "Send")


def metadata(port: int) -> str:
    return json.dumps([{"key": "endpoint", "value": f"127.0.0.1:{port}"}])


@pytest.fixture
def relay(local_ca: LocalCA, echo: TcpServer) -> Iterator[RelayDouble]:
    hc = HybridConnection(HC, user_metadata=metadata(echo.port), rules=(LISTEN, SEND))
    with RelayDouble(local_ca, hybrid_connections=[hc], rendezvous_timeout=5) as double:
        yield double


def listen_token(relay: RelayDouble, expires_in: float = 3600.0) -> Callable[[], str]:
    return lambda: relay.sas_token(HC, "listen", expires_in=expires_in)


@pytest.fixture
def bridge(relay: RelayDouble, echo: TcpServer, local_ca: LocalCA) -> Iterator[RelayBridgeListener]:
    with RelayBridgeListener(
        relay.endpoint(HC),
        listen_token(relay),
        targets={"sql": f"127.0.0.1:{echo.port}", "down": f"127.0.0.1:{free_port()}"},
        ca_bundle=local_ca.bundle_path,
        reconnect_delays=FAST,
    ) as agent:
        yield agent


@pytest.fixture
def hcm(relay: RelayDouble, local_ca: LocalCA) -> Iterator[HybridConnectionManagerListener]:
    with HybridConnectionManagerListener(
        relay.endpoint(HC),
        listen_token(relay),
        user_metadata=relay.hybrid_connection(HC).user_metadata,
        ca_bundle=local_ca.bundle_path,
        reconnect_delays=FAST,
    ) as agent:
        yield agent


@pytest.fixture
def sender(relay: RelayDouble, local_ca: LocalCA) -> Iterator[Callable[[], ClientConnection]]:
    """Opens relay connects as the app would (plain websockets)."""
    context = ssl.create_default_context(cafile=str(local_ca.bundle_path))
    opened: list[ClientConnection] = []

    def open_one() -> ClientConnection:
        ws = connect(
            f"{relay.endpoint(HC)}?sb-hc-action=connect&sb-hc-id={uuid.uuid4()}",
            ssl=context,
            additional_headers={"ServiceBusAuthorization": relay.sas_token(HC, "send")},
            compression=None,
            proxy=None,
            open_timeout=15,
            legacy=True,
        )
        opened.append(ws)
        return ws

    yield open_one
    for ws in opened:
        ws.close()


def read_exactly(ws: ClientConnection, size: int) -> bytes:
    data = b""
    while len(data) < size:
        message = ws.recv(timeout=10)
        assert isinstance(message, bytes)
        data += message
    return data


def close_of(ws: ClientConnection) -> tuple[int, str, list[Any]]:
    """What arrived before the close, and the close code and reason."""
    received: list[Any] = []
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            received.append(ws.recv(timeout=10))
    frame = caught.value.rcvd
    assert frame is not None
    return int(frame.code), frame.reason, received


# -- Azure Relay Bridge ---------------------------------------------------------------------


def test_bridge_forwards_bytes_to_the_named_port_and_back(bridge, sender, echo):
    ws = sender()
    ws.send(preamble("sql"))
    assert ws.recv(timeout=10) == PREAMBLE_ACCEPTED
    ws.send(b"hello ")
    ws.send(b"world")
    assert read_exactly(ws, 11) == b"hello world"
    ws.close()
    assert wait_until(lambda: echo.eofs == 1)  # the WebSocket close reached TCP
    assert bridge.accepted == 1 and echo.connections == 1


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([preamble("sql") + b"early"], id="preamble and data in one message"),
        pytest.param([b"\x01\x00", b"\x00\x03s", b"qlearly"], id="preamble in pieces"),
    ],
)
def test_bridge_reads_the_preamble_however_it_is_framed(bridge, sender, messages):
    ws = sender()
    for message in messages:
        ws.send(message)
    assert ws.recv(timeout=10) == PREAMBLE_ACCEPTED
    assert read_exactly(ws, 5) == b"early"


def test_bridge_refuses_an_unknown_port_name_without_connecting(bridge, sender, echo):
    ws = sender()
    ws.send(preamble("oracle"))
    code, reason, received = close_of(ws)
    assert (code, received) == (1008, [])
    assert "oracle" in reason
    assert echo.connections == 0 and bridge.refused == 1


@pytest.mark.parametrize(
    ("first", "answer"),
    [(b"\x02\x00\x00\x03sql", b"\x00\x00\x00"), (preamble("sql", mode=1), b"\x00\x00\xff")],
)
def test_bridge_answers_a_bad_preamble_as_azbridge_does(bridge, sender, echo, first, answer):
    ws = sender()
    ws.send(first)
    code, _, received = close_of(ws)
    assert (code, received) == (1000, [answer])
    assert echo.connections == 0


def test_bridge_closes_with_1011_when_the_target_is_down(bridge, sender):
    ws = sender()
    ws.send(preamble("down"))
    code, reason, received = close_of(ws)
    assert (code, received) == (1011, [])
    assert f"127.0.0.1:{bridge.targets['down'][1]}" in reason


def test_bridge_can_answer_before_connecting_like_azbridge(relay, sender, local_ca):
    dead = free_port()
    with RelayBridgeListener(
        relay.endpoint(HC),
        listen_token(relay),
        targets={"sql": f"127.0.0.1:{dead}"},
        ca_bundle=local_ca.bundle_path,
        answer_before_connect=True,
    ):
        ws = sender()
        ws.send(preamble("sql"))
        code, reason, received = close_of(ws)
    assert (code, received) == (1011, [PREAMBLE_ACCEPTED])
    assert str(dead) in reason


def test_target_end_of_stream_closes_the_websocket_with_1000(relay, sender, local_ca):
    goodbye = TcpServer(goodbye=b"bye")
    try:
        with RelayBridgeListener(
            relay.endpoint(HC),
            listen_token(relay),
            targets={"sql": f"127.0.0.1:{goodbye.port}"},
            ca_bundle=local_ca.bundle_path,
        ):
            ws = sender()
            ws.send(preamble("sql"))
            code, _, received = close_of(ws)
    finally:
        goodbye.close()
    assert code == 1000
    assert b"".join(received) == PREAMBLE_ACCEPTED + b"bye"


# -- Hybrid Connection Manager -----------------------------------------------------------


def test_hcm_forwards_raw_bytes_to_the_metadata_endpoint(hcm, sender, echo):
    ws = sender()
    ws.send(b"\x01\x00\x00")  # no preamble: these are data
    assert read_exactly(ws, 3) == b"\x01\x00\x00"
    ws.close()
    assert wait_until(lambda: echo.eofs == 1)
    assert hcm.accepted == 1


def test_hcm_closes_with_1011_when_the_endpoint_is_down(relay, sender, local_ca):
    dead = free_port()
    with HybridConnectionManagerListener(
        relay.endpoint(HC),
        listen_token(relay),
        user_metadata=metadata(dead),
        ca_bundle=local_ca.bundle_path,
    ) as agent:
        code, reason, received = close_of(sender())
    assert (code, received) == (1011, [])
    assert f"127.0.0.1:{dead}" in reason and agent.refused == 1


def test_hcm_needs_an_endpoint_in_the_metadata(relay, local_ca):
    with pytest.raises(ValueError, match="endpoint"):
        HybridConnectionManagerListener(
            relay.endpoint(HC),
            listen_token(relay),
            user_metadata="[]",
            ca_bundle=local_ca.bundle_path,
        )


# -- the control channel, both kinds ----------------------------------------------------------


@pytest.fixture(params=["bridge", "hcm"])
def agent(request: pytest.FixtureRequest) -> RelayAgent:
    chosen: RelayAgent = request.getfixturevalue(request.param)
    return chosen


def through(agent: RelayAgent, sender: Callable[[], ClientConnection], data: bytes) -> bytes:
    ws = sender()
    if isinstance(agent, RelayBridgeListener):
        ws.send(preamble("sql"))
        assert ws.recv(timeout=10) == PREAMBLE_ACCEPTED
    ws.send(data)
    answer = read_exactly(ws, len(data))
    ws.close()
    return answer


def test_a_stopped_listener_means_404_and_a_restarted_one_works(agent, relay, sender):
    assert through(agent, sender, b"one") == b"one"
    agent.stop()
    assert not agent.online and relay.listener_count(HC) == 0
    with pytest.raises(InvalidStatus) as caught:
        sender()
    assert caught.value.response.status_code == 404
    agent.start()
    assert agent.online
    assert through(agent, sender, b"two") == b"two"


def test_the_listener_comes_back_after_the_relay_restarts(agent, relay, sender):
    relay.stop()
    assert wait_until(lambda: not agent.online)
    relay.start()
    assert agent.wait_online(15)
    assert relay.wait_for_listeners(HC, 1)
    assert through(agent, sender, b"again") == b"again"
    assert agent.connects == 2


def test_the_listener_reconnects_when_its_channel_is_dropped(agent, relay, sender):
    assert relay.drop_listeners(HC) == 1
    assert wait_until(lambda: agent.connects == 2 and agent.online)
    assert relay.wait_for_listeners(HC, 1)
    assert through(agent, sender, b"back") == b"back"


def test_the_listener_renews_its_token_before_it_expires(relay, echo, sender, local_ca):
    with HybridConnectionManagerListener(
        relay.endpoint(HC),
        listen_token(relay, expires_in=2),
        user_metadata=metadata(echo.port),
        ca_bundle=local_ca.bundle_path,
        reconnect_delays=FAST,
    ) as agent:
        # Two renewals outlive the first token (it lasts 2 s, a renewal comes at half-life).
        assert wait_until(lambda: relay.renewals >= 3)
        assert agent.connects == 1 and agent.online
        assert through(agent, sender, b"still here") == b"still here"


def test_the_listener_answers_the_relays_pings(agent, relay):
    assert relay.ping_listeners(HC) == 1


# -- PostgreSQL through the relay -------------------------------------------------------------


class LoopbackSender:
    """Test-only sender: a loopback TCP port whose every connection becomes a relay
    connect (with azbridge's preamble when ``port_name`` is given), bytes both ways."""

    def __init__(self, relay: RelayDouble, ca: LocalCA, port_name: str | None) -> None:
        self.relay = relay
        self.port_name = port_name
        self.context = ssl.create_default_context(cafile=str(ca.bundle_path))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connects = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            ws = stack.enter_context(
                connect(
                    f"{self.relay.endpoint(HC)}?sb-hc-action=connect&sb-hc-id={uuid.uuid4()}",
                    ssl=self.context,
                    additional_headers={
                        "ServiceBusAuthorization": self.relay.sas_token(HC, "send")
                    },
                    compression=None,
                    proxy=None,
                )
            )
            self.connects += 1
            if self.port_name is not None:
                ws.send(preamble(self.port_name))
                if ws.recv(timeout=10) != PREAMBLE_ACCEPTED:
                    return
            upstream = threading.Thread(target=self._to_relay, args=(client, ws), daemon=True)
            upstream.start()
            with contextlib.suppress(ConnectionClosed, OSError):
                while True:
                    message = ws.recv()
                    client.sendall(message if isinstance(message, bytes) else message.encode())
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            upstream.join(timeout=10)

    @staticmethod
    def _to_relay(client: socket.socket, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            while data := client.recv(65536):
                ws.send(data)
        ws.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.stack
@pytest.mark.parametrize("kind", ["bridge", "hcm"])
def test_a_select_reaches_postgresql_through_the_relay(
    kind, relay, site_db: SiteDatabase, local_ca
):
    target = f"127.0.0.1:{site_db.port}"
    listener: RelayAgent
    if kind == "bridge":
        listener = RelayBridgeListener(
            relay.endpoint(HC),
            listen_token(relay),
            targets={"sql": target},
            ca_bundle=local_ca.bundle_path,
        )
    else:
        listener = HybridConnectionManagerListener(
            relay.endpoint(HC),
            listen_token(relay),
            user_metadata=json.dumps([{"key": "endpoint", "value": target}]),
            ca_bundle=local_ca.bundle_path,
        )
    loopback = LoopbackSender(relay, local_ca, "sql" if kind == "bridge" else None)
    connection_string = re.sub(
        r"Port=\d+", f"Port={loopback.port}", site_db.reader_connection_string
    )
    assert "SSLmode=verify-full" in connection_string  # TLS to PostgreSQL stays on
    try:
        with listener:
            connection = pyodbc.connect(connection_string, autocommit=True, timeout=15)
            try:
                assert connection.cursor().execute("SELECT 1").fetchone()[0] == 1
                ssl_in_use = (
                    connection.cursor()
                    .execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetchone()[0]
                )
            finally:
                connection.close()
            assert ssl_in_use is True
            assert loopback.connects >= 1 and listener.accepted == loopback.connects
    finally:
        loopback.close()
