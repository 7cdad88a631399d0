"""The two on-premises agents that stand between a hybrid connection and the site
database: Azure Relay Bridge (a remote forwarder) and App Service's Hybrid Connection
Manager. Both keep a control channel to the relay (:class:`RelayAgent`) and, per
accepted connection, relay bytes between the WebSocket and a TCP connection.

Typical use::

    with RelayBridgeListener(relay.endpoint("site-sql"),
                             lambda: relay.sas_token("site-sql", "listen"),
                             targets={"sql": "127.0.0.1:1433"},
                             ca_bundle=ca.bundle_path) as bridge:
        ...
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection

from devstack.relay.agent import RelayAgent, open_target, pump
from devstack.relay.model import metadata_endpoint
from devstack.relay.rendezvous import short_reason

#: azbridge's preamble: version 1.0, then the mode (0 stream, 1 datagram).
PREAMBLE_ACCEPTED: Final = b"\x01\x00\x00"
#: What azbridge answers a preamble of an unknown version, and a datagram preamble on
#: a stream (TCP) forwarder; it closes the connection after either.
PREAMBLE_BAD_VERSION: Final = b"\x00\x00\x00"
PREAMBLE_MODE_MISMATCH: Final = b"\x00\x00\xff"
_PREAMBLE_TIMEOUT: Final = 30.0


def _host_port(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, tuple):
        return target
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {target!r} is not host:port")
    return host.strip("[]"), int(port)


class _Forwarder(RelayAgent):
    """A listener that forwards to TCP targets and counts the connections it refused."""

    def __init__(
        self,
        endpoint: str,
        token: Callable[[], str],
        *,
        ca_bundle: Path | str,
        target_timeout: float,
        name: str,
        **options: Any,
    ) -> None:
        super().__init__(endpoint, token, ca_bundle=ca_bundle, name=name, **options)
        self.target_timeout = target_timeout
        self._refused = 0

    @property
    def refused(self) -> int:
        """Connections refused (an unknown port, a bad preamble, a target unreachable)."""
        with self._lock:
            return self._refused

    def _refuse(self, session: ClientConnection, code: int, reason: str) -> None:
        with self._lock:
            self._refused += 1
        session.close(code, short_reason(reason))

    def _open(self, session: ClientConnection, target: tuple[str, int]) -> socket.socket | None:
        """A TCP connection to ``target``; None after closing the session with 1011 and a
        reason naming the target when it cannot be reached."""
        host, port = target
        try:
            return open_target(host, port, self.target_timeout)
        except OSError as error:
            self._refuse(session, CloseCode.INTERNAL_ERROR, f"Cannot reach {host}:{port}: {error}")
            return None


class RelayBridgeListener(_Forwarder):
    """Azure Relay Bridge as a remote forwarder (``azbridge -T``) with ``targets``, a
    map of port names to ``host:port``.

    Per connection it reads the sender's preamble (``01 00 <mode> <n> <n bytes of
    port name, UTF-8>``; it may come in one binary message or spread over several,
    with stream bytes after it), then, for a known port name, connects the target and
    answers ``01 00 00`` (one binary message) before relaying bytes. azbridge itself
    answers first and connects afterwards: ``answer_before_connect=True`` does that.
    Refusals:

    - an unknown port name: close 1008 with a reason naming it, nothing written and
      nothing connected (azbridge closes without a word; a sender must treat any
      close before ``01 00 00`` as a refusal). As in azbridge, a numeric port name
      selects the only target when there is just one;
    - another version: ``00 00 00``, then close 1000; datagram mode (1) on a stream
      target: ``00 00 ff``, then close 1000 (azbridge's answers);
    - a text message or no complete preamble within 30 s: close 1008;
    - the target cannot be reached: close 1011 with a reason naming the target.

    ``refused`` counts the connections refused for any of these reasons.
    """

    def __init__(
        self,
        endpoint: str,
        token: Callable[[], str],
        *,
        targets: Mapping[str, str | tuple[str, int]],
        ca_bundle: Path | str,
        answer_before_connect: bool = False,
        target_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(
            endpoint,
            token,
            ca_bundle=ca_bundle,
            target_timeout=target_timeout,
            name="azbridge",
            **options,
        )
        self.targets = {name: _host_port(target) for name, target in targets.items()}
        self.answer_before_connect = answer_before_connect

    def serve(self, session: ClientConnection, accept: dict[str, Any]) -> None:
        """Read the preamble, connect the named target and relay bytes."""
        buffer = b""
        try:
            while len(buffer) < 4 or len(buffer) < 4 + buffer[3]:
                if len(buffer) >= 3 and (buffer[:2] != b"\x01\x00" or buffer[2] not in (0, 1)):
                    break
                message = session.recv(timeout=_PREAMBLE_TIMEOUT)
                if isinstance(message, str):
                    self._refuse(session, CloseCode.POLICY_VIOLATION, "Text in the preamble.")
                    return
                buffer += message
        except TimeoutError:
            self._refuse(session, CloseCode.POLICY_VIOLATION, "No preamble.")
            return
        except ConnectionClosed:
            return
        if buffer[:2] != b"\x01\x00" or buffer[2] not in (0, 1):
            session.send(PREAMBLE_BAD_VERSION)
            self._refuse(session, CloseCode.NORMAL_CLOSURE, "")
            return
        if buffer[2] == 1:
            session.send(PREAMBLE_MODE_MISMATCH)
            self._refuse(session, CloseCode.NORMAL_CLOSURE, "")
            return
        length = buffer[3]
        name = buffer[4 : 4 + length].decode("utf-8", errors="replace")
        target = self.targets.get(name)
        if target is None and len(self.targets) == 1 and name.isdigit():
            target = next(iter(self.targets.values()))
        if target is None:
            self._refuse(session, CloseCode.POLICY_VIOLATION, f"Unknown port name '{name}'.")
            return
        if self.answer_before_connect:
            session.send(PREAMBLE_ACCEPTED)
        connection = self._open(session, target)
        if connection is None:
            return
        if not self.answer_before_connect:
            session.send(PREAMBLE_ACCEPTED)
        pump(session, connection, initial=buffer[4 + length :])


class HybridConnectionManagerListener(_Forwarder):
    """App Service's Hybrid Connection Manager: no preamble; every connection goes to
    the ``endpoint`` item of the hybrid connection's user metadata
    (``[{"key":"endpoint","value":"host:port"}]``, as App Service writes it and HCM
    reads it), raw bytes both ways. An unreachable target closes the WebSocket with
    1011 and a reason naming it. ``refused`` counts those.
    """

    def __init__(
        self,
        endpoint: str,
        token: Callable[[], str],
        *,
        user_metadata: str,
        ca_bundle: Path | str,
        target_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(
            endpoint,
            token,
            ca_bundle=ca_bundle,
            target_timeout=target_timeout,
            name="hcm",
            **options,
        )
        self.target = metadata_endpoint(user_metadata)

    def serve(self, session: ClientConnection, accept: dict[str, Any]) -> None:
        """Connect the endpoint and relay bytes."""
        connection = self._open(session, self.target)
        if connection is not None:
            pump(session, connection)
