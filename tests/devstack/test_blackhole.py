"""The black hole: takes connections, never answers, lets go of them all on stop."""

from __future__ import annotations

import socket

import pytest

from devstack.blackhole import BlackHole


def closed(client: socket.socket) -> bool:
    """The peer closed: end of stream, or a reset (it had unread bytes of ours)."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_it_accepts_and_never_answers_then_closes_everything():
    with BlackHole() as hole:
        clients = [socket.create_connection(("127.0.0.1", hole.port), timeout=2) for _ in range(3)]
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(1)
        assert hole.accepted == 3
        assert hole.url == f"https://127.0.0.1:{hole.port}"
    for client in clients:
        client.settimeout(2)
        assert closed(client)
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", hole.port), timeout=2)
    hole.stop()  # twice is fine
