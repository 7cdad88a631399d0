"""A small threaded HTTPS server for the simulators, and their common base class.

TLS handshakes run off the accept loop, connections keep alive, bodies are size-limited,
and "down" is real: the listening socket and every open connection are closed, so a
stopped server refuses connections the way a dead one does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Self, cast
from urllib.parse import parse_qs, urlsplit

from devstack.lifecycle import Service
from devstack.ports import LOOPBACK

log = logging.getLogger(__name__)

_MAX_BODY: Final = 1 << 20
_HANDSHAKE_TIMEOUT: Final = 10.0
_IDLE_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request as the application sees it; header names are lower case."""

    method: str
    target: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str

    def header(self, name: str) -> str | None:
        """A request header, or None."""
        return self.headers.get(name.lower())


@dataclass(slots=True)
class HttpResponse:
    """What the application answers; Content-Length is added by the server."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """A JSON answer."""
        return cls(status, json.dumps(payload).encode("utf-8"), headers=dict(headers or {}))

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Self:
        """A text answer."""
        return cls(status, text.encode("utf-8"), content_type)


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """One line of a server's access log (the target includes the query string)."""

    method: str
    target: str
    status: int


class PortInUse(OSError):
    """The port a server must listen on is taken."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as MSAL's requests session expects
    server_version = "devstack"
    sys_version = ""
    timeout = _IDLE_TIMEOUT

    def _dispatch(self) -> None:
        cast(_Server, self.server).owner._dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.client_address[0], *args)


# BaseHTTPRequestHandler looks methods up as do_<METHOD>: all go to the application.
for _method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
    setattr(_Handler, f"do_{_method}", _Handler._dispatch)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # set_down(False) must get the same port back at once
    request_queue_size = 64

    def __init__(self, owner: LocalHttpsServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's thread: a client that never
        # finishes it must not block the accept loop.
        self.owner._serve_connection(self, request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class LocalHttpsServer:
    """A threaded HTTPS server on a loopback address that hands requests to ``app``.

    ``port=None`` binds a free port (chosen by the kernel, no race) on the first
    ``start()`` and keeps it for later starts. ``stop()`` closes the listening socket
    *and* the open keep-alive connections, so a stopped server refuses connections
    the way a dead one does.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        app: Callable[[HttpRequest], HttpResponse],
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        name: str = "https server",
        max_body: int = _MAX_BODY,
    ) -> None:
        self._context = context
        self._app = app
        self._port = port
        self.host = host
        self.name = name
        self.max_body = max_body
        #: Seconds to wait before answering each request (a slow network or service).
        self.latency_seconds = 0.0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[ssl.SSLSocket] = set()
        self._log: list[HttpExchange] = []

    @property
    def port(self) -> int:
        """The TCP port (known once started, or when given)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has no port before its first start()")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server listens right now."""
        return self._server is not None

    @property
    def http_log(self) -> list[HttpExchange]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._log)

    def start(self) -> None:
        """Listen (again) on the port; a no-op when already listening."""
        with self._lock:
            if self._server is not None:
                return
            try:
                server = _Server(self, (self.host, self._port or 0))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise PortInUse(
                        error.errno, f"{self.name}: {self.host}:{self._port} is already in use"
                    ) from error
                raise
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # shutdown() waits up to one interval
                name=f"{self.name}:{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()

    def stop(self) -> None:
        """Close the listening socket and every open connection; safe to call twice."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            connections = list(self._connections)
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for connection in connections:
            # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the TLS
            # state under the feet of the thread still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    # -- connection and request handling (server threads) --------------------------

    def _serve_connection(self, server: _Server, raw: socket.socket, address: Any) -> None:
        raw.settimeout(_HANDSHAKE_TIMEOUT)
        # Headers and body go out as two TLS records: without TCP_NODELAY, Nagle holds
        # the body back until the client's delayed ACK (~40 ms a request on Linux).
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection = self._context.wrap_socket(raw, server_side=True)
        except OSError as error:  # ssl.SSLError included: untrusted CA, plain HTTP, ...
            log.debug("%s: TLS handshake with %s failed: %s", self.name, address, error)
            with contextlib.suppress(OSError):
                raw.close()
            return
        with self._lock:
            if self._server is not server:  # stopped while this one was handshaking
                connection.close()
                return
            self._connections.add(connection)
        try:
            _Handler(connection, address, server)
        except Exception as error:  # a client that vanishes mid-request is no failure
            log.debug("%s: connection from %s ended: %r", self.name, address, error)
        finally:
            with self._lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                connection.close()

    def _dispatch(self, handler: _Handler) -> None:
        if handler.headers.get("Transfer-Encoding"):
            self._send(handler, HttpResponse.text(411, "Length Required"), close=True)
            return
        length_header = handler.headers.get("Content-Length")
        body = b""
        if length_header is not None:
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError(length_header)
            except ValueError:
                self._send(handler, HttpResponse.text(400, "Bad Content-Length"), close=True)
                return
            if length > self.max_body:
                self._send(handler, HttpResponse.text(413, "Request Too Large"), close=True)
                return
            body = handler.rfile.read(length)
            if len(body) < length:  # the client went away mid-body
                handler.close_connection = True
                return
        split = urlsplit(handler.path)
        request = HttpRequest(
            method=handler.command,
            target=handler.path,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
            client=str(handler.client_address[0]),
        )
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        try:
            response = self._app(request)
        except Exception:
            log.exception("%s: %s %s failed", self.name, request.method, request.target)
            response = HttpResponse.text(500, "Internal Server Error")
        with self._lock:  # before sending: a client that has the answer sees it logged
            self._log.append(HttpExchange(request.method, request.target, response.status))
        self._send(handler, response, head=request.method == "HEAD")

    @staticmethod
    def _send(
        handler: _Handler, response: HttpResponse, *, close: bool = False, head: bool = False
    ) -> None:
        handler.send_response(response.status)
        if response.content_type:
            handler.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        if close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if not head:
            handler.wfile.write(response.body)


class HttpsSimulator(Service):
    """A simulated service on a :class:`LocalHttpsServer` (set ``self._server``):
    start/stop, a real outage, latency and the port, written once."""

    _server: LocalHttpsServer

    def start(self) -> Self:
        """Listen (on a free port the first time, the same port afterwards)."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop listening; safe to call twice."""
        self._server.stop()

    def set_down(self, down: bool) -> None:
        """Refuse connections for real (socket and open connections closed), or listen
        again on the same port."""
        if down:
            self._server.stop()
        else:
            self._server.start()

    @property
    def latency_seconds(self) -> float:
        """Seconds every answer is delayed by."""
        return self._server.latency_seconds

    @latency_seconds.setter
    def latency_seconds(self, value: float) -> None:
        self._server.latency_seconds = value

    @property
    def port(self) -> int:
        """The HTTPS port."""
        return self._server.port
