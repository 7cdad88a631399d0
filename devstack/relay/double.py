"""The Azure Relay Hybrid Connections service as a local WebSocket server.

Azure Relay cannot run here, so this serves its WebSocket protocol ("Azure Relay Hybrid
Connections protocol", Microsoft Learn) on ``wss://localhost:<port>/$hc/<path>``:
listen (the control channel), connect (the sender, held until the listener comes to
the rendezvous), accept and reject (the listener dialling the one-time address the
``accept`` message gave it), ``renewToken`` on the control channel, and the joined
WebSockets. The HTTP request mode (``sb-hc-action=request``) is not served.

Where the service is strict, so is the double; where it is not documented, the double
picks the following (each one is a choice, not verified against the service):

- An error answers the status with the description as the HTTP reason phrase (as the
  service does, followed by ``TrackingId:…, SystemTracker:…, Timestamp:…``) and the same
  text as a ``text/plain`` body. Statuses: 400 malformed request (no or unknown
  ``sb-hc-action``, ``request``, a repeated ``sb-hc-*`` parameter, an ``sb-hc-id`` that
  is not 1-128 letters, digits or ``-_.:``); 404 "Endpoint does not exist" (an unknown
  hybrid connection, checked before the token) and "There are no listeners connected
  for the endpoint"; 401/403 from :mod:`devstack.relay.auth`; 403 when a 26th listener
  comes (the quota) and when an accept address is unknown, used or expired; the
  listener's status on a reject; 504 when no listener dials the rendezvous within
  ``rendezvous_timeout``; 503 while the relay stops.
- A rejecting listener's own upgrade gets 410 (documented), or 400 when
  ``sb-hc-statusCode`` is not a number from 400 to 599.
- ``connectHeaders`` carries the sender's upgrade headers except
  ``ServiceBusAuthorization``; the accept address keeps the sender's path suffix and
  query parameters other than ``sb-hc-*``; ``sb-hc-id`` in it is the sender's id plus
  a random suffix (``id`` in the message is the sender's id, or a new GUID).
- A token may come in the ServiceBusAuthorization header or ``sb-hc-token``; the
  header wins when both are there. A hybrid connection with
  ``requires_client_authorization=False`` admits senders without a token (a token
  that is sent is still checked). Tokens are checked at the upgrade only, except the
  listener's: its control channel closes with 1008 when the token expires unrenewed.
  Whether Azure also ends a joined sender link when the sender's token expires is not
  documented; ``expire_sender_links=True`` makes the double do it (close 1008 on both
  sides), so the app is proven against the stricter answer.
- New connections go to the open control channels of the path in turn (round robin).
- The joined sockets: a close on one side closes the other with the same code and
  reason; a side that drops without a close frame closes the other with 1001.
- permessage-deflate is never negotiated; the service sends keep-alive pings every
  ``keepalive_interval`` seconds (30); messages have no size limit.

A sender's client must wait longer than ``rendezvous_timeout`` for the upgrade answer
(websockets' ``open_timeout`` is 10 s by default): the 101 comes only once a listener
has dialled the rendezvous.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Final, Self
from urllib.parse import quote, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.relay.auth import AuthFailure, EntraTrust, RelayAuthorizer
from devstack.relay.channels import ControlChannel, ControlChannels
from devstack.relay.model import AuthorizationRule, HybridConnection, RelayCall, Right
from devstack.relay.rendezvous import Join, Outcome, RendezvousBook
from devstack.relay.tokens import sas_token_for
from devstack.relay.upgrade import (
    Refusal,
    Upgrade,
    connect_headers,
    error_response,
    parse_upgrade,
    requested_action,
)
from devstack.tls import LocalCA

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE: Final = "cmremediate-dev.servicebus.windows.net"


class RelayDouble(Service):
    """An Azure Relay namespace with hybrid connections, on ``wss://localhost:<port>``.

    The namespace name (``namespace``) is what token audiences name; the double itself
    listens on 127.0.0.1 on a free port (kept across ``stop()``/``start()``), so
    clients use :meth:`endpoint`. ``rules`` and ``role_assignments`` (Entra object id
    to role names) belong to the namespace; each :class:`HybridConnection` has its
    own. ``entra`` enables Entra ID tokens. ``rendezvous_timeout`` may be changed at
    any time. ``calls`` logs every upgrade.
    """

    def __init__(
        self,
        ca: LocalCA,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        hybrid_connections: Iterable[HybridConnection] = (),
        rules: Iterable[AuthorizationRule] = (),
        role_assignments: Mapping[str, Iterable[str]] | None = None,
        entra: EntraTrust | None = None,
        rendezvous_timeout: float = 30.0,
        keepalive_interval: float = 30.0,
        max_listeners: int = 25,
        port: int | None = None,
        expire_sender_links: bool = False,
    ) -> None:
        self.namespace = namespace.lower()
        self.expire_sender_links = expire_sender_links
        self.rendezvous_timeout = rendezvous_timeout
        self.keepalive_interval = keepalive_interval
        self.max_listeners = max_listeners
        self._auth = RelayAuthorizer(ca, self.namespace, rules, role_assignments or {}, entra)
        self._context = ca.server_context()
        # websockets' sync server waits for the upgrade request with select() on the raw
        # socket; when the TLS 1.3 handshake ends with session tickets, OpenSSL may have
        # read the request into its buffer already and the upgrade hangs (about one
        # connection in 150 here). Without tickets it never did in 1500 tries.
        self._context.num_tickets = 0
        self._port = port
        self._lock = threading.Lock()
        self._hcs: dict[str, HybridConnection] = {}
        for hc in hybrid_connections:
            self.add_hybrid_connection(hc)
        self._channels = ControlChannels(self._auth)
        self._book = RendezvousBook()
        self._joins: dict[ServerConnection, tuple[str, Join]] = {}
        self._calls: list[RelayCall] = []
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (on a free port the first time, the same port afterwards)."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            server = serve(
                self._handle,
                LOOPBACK,
                self._port or 0,
                ssl=self._context,
                compression=None,
                process_request=self._process_request,
                server_header=None,
                ping_interval=self.keepalive_interval,
                ping_timeout=self.keepalive_interval,
                close_timeout=5,
                max_size=None,
                logger=log,
            )
            self._port = int(server.socket.getsockname()[1])
            thread = threading.Thread(
                target=server.serve_forever, name=f"relay:{self._port}", daemon=True
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Refuse connections and close every open one with 1001; safe to call twice.
        Held connects are answered 503."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()  # wakes held connects and waiting accepts
        server.shutdown()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the relay accepts connections right now."""
        return self._server is not None

    # -- addresses and configuration ---------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (known once started, or when given)."""
        if self._port is None:
            raise RuntimeError("the relay double has not been started")
        return self._port

    @property
    def host(self) -> str:
        """The host name clients connect to (the certificate's)."""
        return "localhost"

    def endpoint(self, path: str) -> str:
        """``wss://localhost:<port>/$hc/<path>``, the hybrid connection's address."""
        return f"wss://{self.host}:{self.port}/$hc/{quote(path, safe='/')}"

    def add_hybrid_connection(self, hc: HybridConnection) -> None:
        """Create (or replace) a hybrid connection."""
        with self._lock:
            self._hcs[hc.name.lower()] = hc

    def remove_hybrid_connection(self, name: str) -> None:
        """Delete a hybrid connection: its listeners are closed with 1001."""
        with self._lock:
            self._hcs.pop(name.lower(), None)
        self.drop_listeners(name)

    def hybrid_connection(self, name: str) -> HybridConnection:
        """The hybrid connection called ``name`` (KeyError if there is none)."""
        with self._lock:
            return self._hcs[name.lower()]

    def key(self, path: str, rule: str) -> str:
        """The primary key of ``rule`` of hybrid connection ``path`` (KeyError if none)."""
        found = self.hybrid_connection(path).rule(rule)
        if found is None:
            raise KeyError(f"{path}: no rule {rule!r}")
        return found.primary_key

    def sas_token(
        self,
        path: str | None,
        rule: str,
        *,
        expires_in: float = 3600.0,
        secondary: bool = False,
    ) -> str:
        """A SAS token signed with ``rule`` (the hybrid connection's rule of that name,
        else the namespace's) for the hybrid connection ``path``, or for the namespace
        when ``path`` is None."""
        found = self.hybrid_connection(path).rule(rule) if path is not None else None
        found = found or self._auth.rule(rule)
        if found is None:
            raise KeyError(f"no authorization rule {rule!r} for {path or 'the namespace'}")
        key = found.secondary_key if secondary else found.primary_key
        return sas_token_for(self.namespace, path, found.name, key, expires_in=expires_in)

    # -- observation and faults --------------------------------------------------------

    @property
    def calls(self) -> list[RelayCall]:
        """Every upgrade answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        """Forget the logged upgrades."""
        with self._lock:
            self._calls.clear()

    def listener_count(self, path: str) -> int:
        """Open control channels of the hybrid connection ``path``."""
        return len(self._channels.open(path))

    def wait_for_listeners(self, path: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``path`` has at least ``count`` listeners; False on timeout."""
        return self._channels.wait_for(path, count, timeout)

    def ping_listeners(self, path: str, timeout: float = 10.0) -> int:
        """Ping every control channel of ``path`` (as the service's keep-alive does);
        returns how many listeners answered with a pong within ``timeout``."""
        return self._channels.ping(path, timeout)

    @property
    def renewals(self) -> int:
        """``renewToken`` messages that renewed a listener's token."""
        return self._channels.renewals

    def drop_listeners(self, path: str) -> int:
        """Close every control channel of ``path`` with 1001 (going away), as the service
        does when the entity goes away; returns how many were closed."""
        return self._channels.drop(path, CloseCode.GOING_AWAY, "The listener was disconnected.")

    # -- the upgrade -------------------------------------------------------------------

    def _log(self, action: str, path: str, status: int, reason: str, id_: str | None) -> None:
        with self._lock:
            self._calls.append(RelayCall(action, path, status, reason, id_))

    def _refuse(self, upgrade: Upgrade, status: int, message: str, action: str = "") -> Response:
        self._log(action or upgrade.action, upgrade.path, status, message, upgrade.id)
        return error_response(status, message, namespace=self.namespace, path=upgrade.path)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            upgrade = parse_upgrade(request.path, request.headers, self._find)
        except Refusal as refusal:
            path = unquote(urlsplit(request.path).path)
            self._log(requested_action(request.path), path, refusal.status, refusal.message, None)
            return error_response(
                refusal.status, refusal.message, namespace=self.namespace, path=path
            )
        if upgrade.action == "listen":
            return self._listen(connection, upgrade)
        if upgrade.action == "connect":
            return self._connect(connection, upgrade, request.headers)
        return self._accept(connection, upgrade)

    def _find(self, path: str) -> HybridConnection | None:
        # The path may carry a suffix after the entity's name ("hyco/suffix").
        with self._lock:
            lowered = path.lower()
            candidates = [
                hc
                for key, hc in self._hcs.items()
                if lowered == key or lowered.startswith(key + "/")
            ]
        return max(candidates, key=lambda hc: len(hc.name), default=None)

    def _listen(self, connection: ServerConnection, upgrade: Upgrade) -> Response | None:
        try:
            grant = self._auth.authorize(upgrade.token, upgrade.hc, Right.LISTEN)
        except AuthFailure as failure:
            return self._refuse(upgrade, failure.status, failure.message)
        if upgrade.path.lower() != upgrade.hc.name.lower():
            return self._refuse(upgrade, 404, "EndpointNotFound: A listener has no path suffix.")
        if len(self._channels.open(upgrade.hc.name)) >= self.max_listeners:
            return self._refuse(
                upgrade, 403, f"QuotaExceeded: More than {self.max_listeners} listeners."
            )
        self._channels.pending(connection, ControlChannel(connection, upgrade.hc, grant.expires_at))
        self._log("listen", upgrade.path, 101, "", upgrade.id)
        return None

    def _connect(
        self, connection: ServerConnection, upgrade: Upgrade, headers: Headers
    ) -> Response | None:
        hc = upgrade.hc
        try:
            anonymous = not hc.requires_client_authorization
            grant = self._auth.authorize(upgrade.token, hc, Right.SEND, anonymous=anonymous)
        except AuthFailure as failure:
            return self._refuse(upgrade, failure.status, failure.message)
        sender_id = upgrade.id or str(uuid.uuid4())
        join = self._book.open(connection, upgrade.path, sender_id)
        if self.expire_sender_links:
            join.sender_expires_at = grant.expires_at
        try:
            host, port = connection.remote_address[:2]
            accept = {
                "accept": {
                    "address": upgrade.accept_address(f"wss://{self.host}:{self.port}", join.rid),
                    "id": sender_id,
                    "connectHeaders": connect_headers(headers),
                    "remoteEndpoint": {"address": str(host), "port": int(port)},
                }
            }
            if not self._channels.deliver(hc.name, json.dumps(accept)):
                return self._refuse(
                    upgrade,
                    404,
                    "EndpointNotFound: There are no listeners connected for the endpoint.",
                )
            outcome = join.wait(self.rendezvous_timeout, self._stopping)
        finally:
            self._book.close(join)  # from now on the address is refused
        if outcome is Outcome.ACCEPTED:
            with self._lock:
                self._joins[connection] = ("sender", join)
            self._log("connect", upgrade.path, 101, "", upgrade.id)
            return None
        if outcome is Outcome.REJECTED and join.rejection is not None:
            return self._refuse(upgrade, *join.rejection)
        if outcome is Outcome.TIMED_OUT:
            return self._refuse(
                upgrade,
                504,
                "GatewayTimeout: The listener did not accept the connection within "
                f"{self.rendezvous_timeout:g} seconds.",
            )
        return self._refuse(upgrade, 503, "ServiceUnavailable: The connection was abandoned.")

    def _accept(self, connection: ServerConnection, upgrade: Upgrade) -> Response | None:
        join = self._book.find(upgrade.id or "")
        code = upgrade.status_code
        action = "accept" if code is None else "reject"
        invalid = "Forbidden: The URL is not valid."
        if join is None or join.path.lower() != upgrade.path.lower():
            return self._refuse(upgrade, 403, invalid, action)
        if code is not None:
            if not code.isdigit() or not 400 <= int(code) <= 599:
                message = f"BadRequest: sb-hc-statusCode '{code}' is not an HTTP error status."
                return self._refuse(upgrade, 400, message, action)
            if not join.reject(int(code), upgrade.status_description):
                return self._refuse(upgrade, 403, invalid, action)
            # Documented: a reject "intentionally fails with an HTTP error code 410".
            return self._refuse(upgrade, 410, "Gone: The connection was rejected.", action)
        if not join.claim():
            return self._refuse(upgrade, 403, invalid, action)
        with self._lock:
            self._joins[connection] = ("listener", join)
        self._log("accept", upgrade.path, 101, "", upgrade.id)
        return None

    # -- open WebSockets ---------------------------------------------------------------

    def _handle(self, connection: ServerConnection) -> None:
        with self._lock:
            role, join = self._joins.pop(connection, (None, None))
        if join is None:
            self._channels.serve(connection)
        elif role == "sender":
            join.sender_opened()
            if join.listener is not None:
                join.relay(connection, join.listener)
        else:
            join.listener_opened(connection)
            if not join.wait_sender_open(self._stopping):
                with self._lock:  # its upgrade failed after all: never handled
                    self._joins.pop(join.sender, None)
                connection.close(CloseCode.GOING_AWAY, "The sender went away.")
                return
            join.relay(connection, join.sender)

    def __repr__(self) -> str:
        return f"RelayDouble({self.namespace!r}, port={self._port})"
