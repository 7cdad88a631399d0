"""What every on-premises relay agent does: hold a control channel to the hybrid
connection, renew its token in time, reconnect with backoff when the channel drops,
and dial the rendezvous of each ``accept``. The two agents differ only in what they do
with an accepted WebSocket (``devstack.relay.listeners``)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Self

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from devstack.lifecycle import Service
from devstack.relay.tokens import token_expiry
from devstack.relay.upgrade import AUTH_HEADER

log = logging.getLogger(__name__)

#: Microsoft.Azure.Relay's reconnect delays after a control channel is lost.
DEFAULT_RECONNECT_DELAYS: Final = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A channel that lived less than this and dropped counts as a failed attempt, so a
#: relay that accepts and closes at once is not hammered.
_STABLE_AFTER: Final = 1.0
_MIN_RENEW_WAIT: Final = 0.5


class RelayAgent(Service):
    """A listener on ``endpoint`` (``wss://host:port/$hc/<path>``) that authenticates
    with the tokens ``token()`` returns (a SAS token or an Entra JWT) and trusts the
    CA in ``ca_bundle``.

    ``start()`` waits up to ``start_timeout`` for the control channel (it keeps trying
    in the background either way); ``online`` tells whether it is open now. The token
    is renewed (``renewToken``) when half of its remaining lifetime has passed.
    ``accepted`` counts rendezvous WebSockets opened.
    """

    def __init__(
        self,
        endpoint: str,
        token: Callable[[], str],
        *,
        ca_bundle: Path | str,
        reconnect_delays: Sequence[float] = DEFAULT_RECONNECT_DELAYS,
        connect_timeout: float = 10.0,
        start_timeout: float = 10.0,
        name: str = "relay agent",
    ) -> None:
        if not reconnect_delays:
            raise ValueError("reconnect_delays must not be empty")
        self.endpoint = endpoint.split("?")[0]
        self.name = name
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self._token = token
        self._delays = tuple(reconnect_delays)
        self._context = ssl.create_default_context(cafile=str(ca_bundle))
        self._id = str(uuid.uuid4())
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._online = threading.Event()
        self._thread: threading.Thread | None = None
        self._control: ClientConnection | None = None
        self._sessions: set[ClientConnection] = set()
        self._workers: set[threading.Thread] = set()
        self._accepted = 0
        self._connects = 0
        #: The last failure to connect or the close of the last control channel.
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Open the control channel (in the background; waits up to ``start_timeout``)."""
        with self._lock:
            if self._thread is not None:
                return self
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._online.wait(self.start_timeout)
        return self

    def stop(self) -> None:
        """Close the control channel and every relayed connection (1001); safe twice."""
        with self._lock:
            thread, self._thread = self._thread, None
            control = self._control
            sessions = list(self._sessions)
            workers = list(self._workers)
        if thread is None:
            return
        self._stopping.set()
        if control is not None:
            control.close()
        for session in sessions:
            session.close(CloseCode.GOING_AWAY, "The listener is shutting down.")
        thread.join(timeout=10)
        for worker in workers:
            worker.join(timeout=10)

    @property
    def online(self) -> bool:
        """Whether the control channel is open."""
        return self._online.is_set()

    def wait_online(self, timeout: float = 10.0) -> bool:
        """Wait until the control channel is open; False on timeout."""
        return self._online.wait(timeout)

    @property
    def accepted(self) -> int:
        """Rendezvous WebSockets opened so far."""
        with self._lock:
            return self._accepted

    @property
    def connects(self) -> int:
        """Control channels opened so far (reconnects included)."""
        with self._lock:
            return self._connects

    # -- the control channel -------------------------------------------------------------

    def _websocket(self, url: str, headers: dict[str, str] | None = None) -> ClientConnection:
        return connect(
            url,
            ssl=self._context,
            additional_headers=headers,
            compression=None,  # the service does not offer permessage-deflate
            proxy=None,
            open_timeout=self.connect_timeout,
            max_size=None,
            legacy=True,  # closed by this class, not by a with block
        )

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            token = ""
            try:
                token = self._token()
                control = self._websocket(
                    f"{self.endpoint}?sb-hc-action=listen&sb-hc-id={self._id}",
                    {AUTH_HEADER: token},
                )
            except Exception as error:  # a real agent keeps trying, whatever failed
                self.last_error = f"listen failed: {error!r}"
                log.debug("%s: %s", self.name, self.last_error)
                self._stopping.wait(self._delays[min(failures, len(self._delays) - 1)])
                failures += 1
                continue
            opened = time.monotonic()
            with self._lock:
                self._control = control
                self._connects += 1
            self._online.set()
            try:
                self._serve_control(control, token)
            finally:
                self._online.clear()
                with self._lock:
                    self._control = None
                control.close()  # stop() may have come before _control was set
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - opened >= _STABLE_AFTER else failures + 1
            self._stopping.wait(self._delays[min(failures, len(self._delays) - 1)])

    def _serve_control(self, control: ClientConnection, token: str) -> None:
        expiry = token_expiry(token)
        while not self._stopping.is_set():
            wait = None
            if expiry is not None:
                wait = max(_MIN_RENEW_WAIT, (expiry - time.time()) / 2)
            try:
                message = control.recv(timeout=wait)
            except TimeoutError:
                try:
                    token = self._token()
                except Exception as error:  # no new token now: the next try comes soon
                    self.last_error = f"no token to renew with: {error!r}"
                    continue
                expiry = token_expiry(token)
                with contextlib.suppress(ConnectionClosed):
                    control.send(json.dumps({"renewToken": {"token": token}}))
                continue
            except ConnectionClosed as closed:
                frame = closed.rcvd
                self.last_error = f"control channel closed: {frame or 'no close frame'}"
                return
            if isinstance(message, str):
                self._command(message)

    def _command(self, message: str) -> None:
        try:
            command = json.loads(message)
        except ValueError:
            return
        accept = command.get("accept") if isinstance(command, dict) else None
        if isinstance(accept, dict) and isinstance(accept.get("address"), str):
            worker = threading.Thread(
                target=self._rendezvous, args=(accept,), name=f"{self.name} accept", daemon=True
            )
            with self._lock:
                self._workers.add(worker)
            worker.start()

    def _rendezvous(self, accept: dict[str, Any]) -> None:
        try:
            if self._stopping.is_set():
                return
            try:
                session = self._websocket(accept["address"])
            except (OSError, InvalidHandshake, TimeoutError) as error:
                log.info("%s: the rendezvous failed: %s", self.name, error)
                return
            with self._lock:
                self._accepted += 1
                self._sessions.add(session)
            try:
                self.serve(session, accept)
            except Exception:
                log.exception("%s: a relayed connection failed", self.name)
                session.close(CloseCode.INTERNAL_ERROR, "The listener failed.")
            finally:
                session.close()
                with self._lock:
                    self._sessions.discard(session)
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def serve(self, session: ClientConnection, accept: dict[str, Any]) -> None:
        """Handle one accepted WebSocket until it closes (the agent's own behaviour)."""
        raise NotImplementedError


def open_target(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to the target, Nagle off (OSError when it cannot be reached)."""
    connection = socket.create_connection((host, port), timeout=timeout)
    connection.settimeout(None)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def pump(session: ClientConnection, target: socket.socket, initial: bytes = b"") -> None:
    """Bytes both ways until either side closes: WebSocket messages (binary; text as
    UTF-8) to the TCP stream, TCP reads to binary messages. TCP end of stream closes
    the WebSocket with 1000, a TCP error with 1011; a WebSocket close shuts the TCP
    connection down. Returns when both directions have ended."""

    def upstream() -> None:
        try:
            while True:
                data = target.recv(65536)
                if not data:
                    session.close(CloseCode.NORMAL_CLOSURE)
                    return
                session.send(data)
        except ConnectionClosed:
            return
        except OSError as error:
            session.close(CloseCode.INTERNAL_ERROR, f"The target connection failed: {error}"[:120])

    reader = threading.Thread(target=upstream, name="relay pump", daemon=True)
    try:
        if initial:
            target.sendall(initial)
        reader.start()
        while True:
            message = session.recv()
            target.sendall(message.encode("utf-8") if isinstance(message, str) else message)
    except ConnectionClosed:
        pass
    except OSError as error:
        session.close(CloseCode.INTERNAL_ERROR, f"The target connection failed: {error}"[:120])
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_RDWR)
        if reader.is_alive():
            reader.join(timeout=10)
        target.close()
