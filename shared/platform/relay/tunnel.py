"""The sender end of the hybrid connection: a loopback port that ODBC connects to.

Each TCP connection accepted on ``127.0.0.1:<port>`` is carried over a WebSocket of its
own: ``wss://{namespace}/$hc/{path}?sb-hc-action=connect&sb-hc-id={guid}``, the token in
the ``ServiceBusAuthorization`` header, no compression. Once the relay has joined it to
the on-premises listener, bytes travel as binary messages both ways until either side
closes. Two listener kinds:

- ``bridge``, **Azure Relay Bridge** (``azbridge``) as a remote forwarder: the sender
  first writes the preamble ``01 00 00 <n> <port name>`` and the listener answers
  ``01 00 00`` to accept; anything else, or a close, is a refusal;
- ``hcm``, App Service's **Hybrid Connection Manager**: raw bytes from the first one; the
  listener connects to the hybrid connection's ``endpoint`` metadata. Microsoft supports
  HCM only with App Service's own sender.

SQL Server's TLS runs inside the tunnel, end to end: the relay and the listener see only
encrypted bytes. A failure closes the ODBC connection (the driver reports a broken link)
and is kept as :attr:`RelayTunnel.last_failure`, a typed error saying what to check,
which the site database client reports in place of the driver's words.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from shared.errors import RelayRefused, RelayUnavailable, SiteDatabaseError
from shared.platform.relay.tokens import RelayTokens

log = logging.getLogger(__name__)

ListenerKind = Literal["bridge", "hcm"]

#: Azure Relay Bridge's preamble: version 1, stream mode, then the port name's length.
_PREAMBLE_HEAD: Final = b"\x01\x00\x00"
#: The listener's answer that accepts the port name.
_ACCEPTED: Final = b"\x01\x00\x00"
#: Close codes of the protocol that say something an operator must hear.
_GOING_AWAY, _POLICY, _INTERNAL = 1001, 1008, 1011
_CHUNK: Final = 64 * 1024
_PORT_NAME_HINT: Final = (
    "check that SITE_DB_RELAY_PORT_NAME matches the port name of Azure Relay Bridge's "
    "remote forwarder (PortName in its configuration; on its command line "
    "azbridge -T <hybrid connection>:<port name>/<sql host>:<port>)"
)
#: The relay's keep-alive: a ping at most every 30 s keeps idle pooled links open.
_PING_SECONDS: Final = 25.0
#: A pooled connection is retired this long before its link's token expires.
RECYCLE_MARGIN_SECONDS: Final = 60.0


@dataclass(frozen=True)
class RelayRoute:
    """Where the tunnel goes: the hybrid connection and what the listener expects."""

    #: ``wss://{namespace}/$hc/{path}`` (a port only for the local double).
    endpoint: str
    path: str
    listener: ListenerKind = "bridge"
    #: The name Azure Relay Bridge maps to SQL Server's host:port (bridge only).
    port_name: str = "sql"

    def preamble(self) -> bytes:
        """What the sender writes first (bridge), or nothing (HCM)."""
        if self.listener != "bridge":
            return b""
        name = self.port_name.encode("utf-8")
        return _PREAMBLE_HEAD + bytes([len(name)]) + name


@dataclass
class TunnelStats:
    """What the tunnel has carried since it started."""

    connections: int = 0
    failures: int = 0
    #: Links the relay ended at their token's expiry (pooled past it; not a fault).
    expired_links: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    #: How long the latest links took to open (connect, rendezvous, preamble); bounded,
    #: as an instance runs for months.
    connect_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class RelayTunnel:
    """A loopback port whose connections travel through Azure Relay. Start once per
    process; thread-safe."""

    def __init__(
        self,
        route: RelayRoute,
        tokens: RelayTokens,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 30.0,
        recycle_margin: float = RECYCLE_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self._tokens = tokens
        self._margin = recycle_margin
        self._ssl = ssl_context
        self._timeout = connect_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._failure: tuple[float, SiteDatabaseError] | None = None
        self.stats = TunnelStats()

    @property
    def port(self) -> int:
        """The loopback port ODBC connects to (the tunnel must be started)."""
        if self._server is None:
            raise RuntimeError("the relay tunnel is not started")
        return int(self._server.getsockname()[1])

    def start(self) -> int:
        """Listen on a free loopback port; return it."""
        with self._lock:
            if self._server is None:
                server = socket.create_server(("127.0.0.1", 0))
                self._server = server
                threading.Thread(
                    target=self._accept_loop, args=(server,), name="relay-tunnel", daemon=True
                ).start()
        return self.port

    def close(self) -> None:
        """Stop accepting (connections already carried run to their end)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def reuse_until(self) -> float:
        """Until when (the clock's time) a connection opened now may be reused: a margin
        before the token its link opens with expires. Whether Azure Relay ends a joined
        link when the sender's token expires is not documented; retiring pooled
        connections first works either way."""
        self._tokens.token()  # renewed now if it is close to expiry: the link gets this one
        left = self._tokens.expires_at() - time.time()
        return self._clock() + left - self._margin

    def failure_since(self, since: float) -> SiteDatabaseError | None:
        """The tunnel's last failure if it happened at or after ``since`` (the clock's
        time): what explains an ODBC connection that broke then."""
        with self._lock:
            if self._failure is not None and self._failure[0] >= since:
                return self._failure[1]
        return None

    # -- carrying ----------------------------------------------------------------------

    def _accept_loop(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._carry, args=(client,), name="relay-tunnel-link", daemon=True
            ).start()

    def _carry(self, client: socket.socket) -> None:
        with client:
            try:
                started = self._clock()
                with self._refusals(), self._connect() as link:
                    expires = self._tokens.expires_at()
                    early = self._pass_preamble(link)
                    with self._lock:
                        self.stats.connections += 1
                        self.stats.connect_seconds.append(self._clock() - started)
                    client.sendall(early)
                    self._pump(client, link, expires)
            except SiteDatabaseError as error:
                self._fail(error)

    def _connect(self) -> ClientConnection:
        url = f"{self.route.endpoint}?sb-hc-action=connect&sb-hc-id={uuid.uuid4()}"
        return connect(
            url,
            additional_headers={"ServiceBusAuthorization": self._tokens.token()},
            ssl=self._ssl,
            compression=None,
            open_timeout=self._timeout,
            close_timeout=5,
            max_size=None,
            ping_interval=_PING_SECONDS,
            ping_timeout=_PING_SECONDS,
        )

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """The relay's answers to the connect, as errors that say what to check."""
        where = f"hybrid connection {self.route.path!r}"
        try:
            yield
        except InvalidStatus as error:
            raise _refusal(where, error.response.status_code, _reason(error)) from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise RelayUnavailable(
                f"{where}: cannot reach Azure Relay at {self.route.endpoint} "
                f"({type(error).__name__}: {error}); check outbound HTTPS (443) to "
                "*.servicebus.windows.net and SITE_DB_RELAY_NAMESPACE"
            ) from None

    def _pass_preamble(self, link: ClientConnection) -> bytes:
        """Name the port to Azure Relay Bridge and wait for its yes (nothing for HCM);
        the stream bytes that came in the same message as the yes, if any."""
        preamble = self.route.preamble()
        if not preamble:
            return b""
        where, name = f"hybrid connection {self.route.path!r}", self.route.port_name
        try:
            link.send(preamble)
            answer = link.recv(timeout=self._timeout)
        except (ConnectionClosed, TimeoutError) as error:
            raise _closed_at_preamble(where, name, error) from None
        data = answer if isinstance(answer, bytes) else answer.encode("utf-8")
        if not data.startswith(_ACCEPTED):
            raise RelayRefused(
                f"{where}: the listener refused port name {name!r} (it answered "
                f"{data[:3].hex(' ')}); {_PORT_NAME_HINT}"
            )
        return data[len(_ACCEPTED) :]

    def _pump(self, client: socket.socket, link: ClientConnection, expires: float) -> None:
        """Bytes both ways until either side closes; the other is closed after it."""
        down = threading.Thread(
            target=self._downstream,
            args=(client, link, expires),
            name="relay-tunnel-down",
            daemon=True,
        )
        down.start()
        try:
            while True:
                data = client.recv(_CHUNK)
                if not data:
                    break
                link.send(data)
                with self._lock:
                    self.stats.bytes_up += len(data)
        except (OSError, ConnectionClosed):
            pass
        link.close()
        down.join(timeout=10)

    def _downstream(self, client: socket.socket, link: ClientConnection, expires: float) -> None:
        try:
            for message in link:
                data = message if isinstance(message, bytes) else message.encode("utf-8")
                client.sendall(data)
                with self._lock:
                    self.stats.bytes_down += len(data)
        except (ConnectionClosed, OSError):
            pass
        # Recorded before ODBC sees the link end, so that its error can name the cause.
        received = link.close_code
        if received in (_GOING_AWAY, _POLICY, _INTERNAL):
            error = _closed(f"hybrid connection {self.route.path!r}", received, link)
            # A link left idle in the pool past its token's expiry: expected, not a fault
            # (a query on it is retried on a new link, and told why if that fails too).
            expected = received == _POLICY and time.time() >= expires - 1.0
            self._fail(error, expected=expected)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def _fail(self, error: SiteDatabaseError, *, expected: bool = False) -> None:
        with self._lock:
            self._failure = (self._clock(), error)
            if expected:
                self.stats.expired_links += 1
            else:
                self.stats.failures += 1
        if expected:
            log.info("relay tunnel: a link ended at its token's expiry: %s", error)
        else:
            log.warning("relay tunnel: %s", error)


def _reason(error: InvalidStatus) -> str:
    response = error.response
    body = bytes(response.body or b"").decode("utf-8", errors="replace").strip()
    return body[:300] or str(response.reason_phrase or "")


def _refusal(where: str, status: int, reason: str) -> SiteDatabaseError:
    said = f"HTTP {status}" + (f": {reason}" if reason else "")
    if status == 404:
        return RelayUnavailable(
            f"{where}: no listener is online ({said}); start the on-premises listener "
            "(Azure Relay Bridge, or the Hybrid Connection Manager) and check that it "
            "reaches *.servicebus.windows.net on 443"
        )
    if status == 401 and "expired" in reason.lower():
        return RelayRefused(
            f"{where}: Azure Relay says the token has expired ({said}); check the function "
            "app's clock (a SAS token is signed for an hour from it) or, with the managed "
            "identity, that its token is renewed"
        )
    if status == 401:
        return RelayRefused(
            f"{where}: Azure Relay refused the token ({said}); check SITE_DB_RELAY_KEY_NAME "
            "and SITE_DB_RELAY_KEY (a Send rule of this hybrid connection), or without a "
            "key the function app's identity and its token for https://relay.azure.net"
        )
    if status == 403:
        return RelayRefused(
            f"{where}: the token does not allow sending ({said}); give the function app's "
            "identity the Azure Relay Sender role on the hybrid connection, or use a rule "
            "with the Send right"
        )
    return RelayUnavailable(
        f"{where}: the relay or the listener could not connect ({said}); check the "
        "on-premises listener's log and that it reaches SQL Server"
    )


def _closed_at_preamble(
    where: str, port_name: str, error: ConnectionClosed | TimeoutError
) -> SiteDatabaseError:
    if isinstance(error, TimeoutError):
        return RelayUnavailable(
            f"{where}: the listener did not answer the port name {port_name!r} in time; "
            "check that the listener is Azure Relay Bridge (SITE_DB_RELAY_LISTENER=hcm for "
            "the Hybrid Connection Manager)"
        )
    received = error.rcvd
    if received is not None and received.code == _INTERNAL:
        return _closed(where, _INTERNAL, None, received.reason)
    said = f"close {received.code}" if received is not None else "closed without a code"
    if received is not None and received.reason:
        said += f": {received.reason}"
    return RelayRefused(
        f"{where}: the listener refused port name {port_name!r} ({said}); {_PORT_NAME_HINT}"
    )


def _closed(
    where: str, code: int, link: ClientConnection | None, reason: str | None = None
) -> SiteDatabaseError:
    said = reason if reason is not None else (link.close_reason if link is not None else "")
    if code == _GOING_AWAY:
        return RelayUnavailable(
            f"{where}: the on-premises listener went away (close 1001: {said}); the query "
            "is retried on a new link; if this repeats, check the listener's service, its "
            "log and its outbound HTTPS to *.servicebus.windows.net"
        )
    if code == _INTERNAL:
        return RelayUnavailable(
            f"{where}: the listener could not reach SQL Server (close 1011: {said}); check "
            "the SQL Server host and static port the listener forwards to, and that the "
            "listener's machine reaches it"
        )
    return RelayRefused(
        f"{where}: the relay closed the link under its policy (close 1008: {said}), "
        "usually an expired token; check the clock and the token's lifetime"
    )
