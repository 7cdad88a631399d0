"""Microsoft's own Azure Relay client for Node, hyco-ws, against the relay double and the
Python side, in both directions: a hyco-ws listener serves the app's tunnel, and a
hyco-ws sender reaches the Python listener (Hybrid Connection Manager's role). If the
double or the Python side strayed from the protocol, Microsoft's client would notice."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.relay import (
    AuthorizationRule,
    HybridConnection,
    HybridConnectionManagerListener,
    RelayDouble,
)
from devstack.tls import LocalCA
from shared.platform.relay.tokens import SasTokens
from shared.platform.relay.tunnel import RelayRoute, RelayTunnel

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "relay_interop"
NODE_MODULES = REPO / "devstack" / "node_modules"
PATH = "interop"
SEND, LISTEN = "send", "listen"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH"),
    pytest.mark.skipif(
        not (NODE_MODULES / "hyco-ws").is_dir(), reason="hyco-ws missing: run bootstrap"
    ),
]


def _node_env(ca: LocalCA) -> dict[str, str]:
    # hyco-ws resolves from devstack/node_modules and trusts the double's CA.
    return {
        **os.environ,
        "NODE_PATH": str(NODE_MODULES),
        "NODE_EXTRA_CA_CERTS": str(ca.bundle_path),
    }


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def relay(local_ca: LocalCA) -> Iterator[RelayDouble]:
    hc = HybridConnection(
        PATH,
        rules=(AuthorizationRule.create(SEND, "Send"), AuthorizationRule.create(LISTEN, "Listen")),
    )
    with RelayDouble(local_ca, hybrid_connections=[hc], rendezvous_timeout=5.0) as double:
        yield double


def _hyco_ws_sender(relay: RelayDouble, ca: LocalCA, messages: int) -> dict[str, object]:
    """Run sender.js against the hybrid connection; its one-line report."""
    connect_uri = f"{relay.endpoint(PATH)}?sb-hc-action=connect&sb-hc-id={uuid.uuid4()}"
    sender = subprocess.run(
        [
            "node",
            str(SCRIPTS / "sender.js"),
            connect_uri,
            relay.sas_token(PATH, SEND),
            str(messages),
        ],
        env=_node_env(ca),
        capture_output=True,
        text=True,
        timeout=60,
    )
    report: dict[str, object] = json.loads(sender.stdout.strip().splitlines()[-1])
    return report


def test_a_hyco_ws_listener_serves_the_apps_tunnel(relay, local_ca):
    listen_uri = f"{relay.endpoint(PATH)}?sb-hc-action=listen&sb-hc-id={uuid.uuid4()}"
    listener = subprocess.Popen(
        ["node", str(SCRIPTS / "listener.js"), listen_uri, relay.sas_token(PATH, LISTEN)],
        env=_node_env(local_ca),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        ready, _, _ = select.select([listener.stdout], [], [], 20)
        assert ready, "the hyco-ws listener never said it was listening"
        assert listener.stdout.readline().strip() == "listening"
        assert relay.wait_for_listeners(PATH)
        tunnel = RelayTunnel(
            RelayRoute(relay.endpoint(PATH), PATH, "hcm"),  # raw bytes: hyco-ws echoes them
            SasTokens(relay.namespace, PATH, SEND, relay.key(PATH, SEND)),
            ssl_context=ssl.create_default_context(cafile=str(local_ca.bundle_path)),
        )
        tunnel.start()
        payload = bytes(range(256)) * 300  # 76,800 bytes, more than one message's worth
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=10) as client:
            client.sendall(payload)
            echoed = b""
            while len(echoed) < len(payload):
                chunk = client.recv(65536)
                assert chunk, "the link closed before the echo was complete"
                echoed += chunk
        tunnel.close()
        assert echoed == payload
        assert tunnel.stats.connections == 1 and tunnel.stats.failures == 0
    finally:
        assert listener.stdin is not None
        listener.stdin.close()
        listener.wait(timeout=10)


def test_a_hyco_ws_sender_reaches_the_python_listener(relay, local_ca, echo_server):
    metadata = f'[{{"key":"endpoint","value":"{echo_server[0]}:{echo_server[1]}"}}]'
    with HybridConnectionManagerListener(
        relay.endpoint(PATH),
        lambda: relay.sas_token(PATH, LISTEN),
        user_metadata=metadata,
        ca_bundle=local_ca.bundle_path,
    ) as listener:
        assert listener.wait_online()
        report = _hyco_ws_sender(relay, local_ca, 12)
    assert report == {"ok": True, "messages": 12, "error": None}
    assert listener.accepted == 1


def test_hyco_ws_is_refused_by_the_double_as_by_the_service(relay, local_ca):
    """Without a listener, Microsoft's sender gets the service's 404."""
    report = _hyco_ws_sender(relay, local_ca, 1)
    assert report["ok"] is False and report["error"] == "HTTP 404"
