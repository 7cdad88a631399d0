"""The HTTPS plumbing: a threading HTTP server that does TLS handshakes off the accept
loop and can drop its connections, and the handler that reads a request (bodies by
Content-Length only) and writes the dispatcher's answer, or resets the connection."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from devstack.adminservice.dispatch import Dispatcher
from devstack.adminservice.odata import _MAX_BODY, ODataError, _Answer, _code_for

log = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT: Final = 10.0
_IDLE_TIMEOUT: Final = 30.0


class _AdminServer(ThreadingHTTPServer):
    """A threading HTTP server doing the TLS handshake in the connection's own thread,
    so a slow or refusing client never blocks ``accept``; tracks connections so a stop
    or restart can end kept-alive ones."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], dispatcher: Dispatcher, context: ssl.SSLContext
    ) -> None:
        self.dispatcher = dispatcher
        self.context = context
        self._open: set[ssl.SSLSocket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _AdminHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can hang for
        # seconds on machines without DNS: the name is known anyway.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(_HANDSHAKE_TIMEOUT)
        # Headers and body go out as two TLS records: without TCP_NODELAY, Nagle holds
        # the body back until the client's delayed ACK (~40 ms a request on Linux).
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return  # the client refused our certificate or went away mid-handshake
        with self._open_lock:
            self._open.add(connection)
        try:
            _AdminHandler(connection, client_address, self)
        except (OSError, ValueError):
            pass  # the connection broke; nothing left to answer
        finally:
            with self._open_lock:
                self._open.discard(connection)
            with contextlib.suppress(OSError):
                connection.close()

    def drop_connections(self) -> None:
        """Shut down every open connection (their threads then end)."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError, ValueError):
                # The plain socket's shutdown: SSLSocket's would unwrap under a reader.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _AdminHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _AdminServer

    def version_string(self) -> str:
        return "Microsoft-IIS/10.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            self.close_connection = True  # the client went away or was dropped on purpose

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, oversized headers): OData shape
        # too, and logged.
        self.close_connection = True
        text = message or explain or _code_for(code)
        answer = ODataError(code, text).answer()
        self.server.dispatcher.refused(self.command or "", self.path or "", answer)
        self._write(answer)

    def _write(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)
        self.wfile.flush()

    def _dispatch(self) -> None:
        dispatcher = self.server.dispatcher
        try:
            body = self._read_body()
        except ODataError as error:
            self.close_connection = True  # the body was not read: the stream is out of step
            answer = error.answer()
            dispatcher.refused(self.command, self.path, answer)
            self._write(answer)
            return
        result = dispatcher.serve(self.command, self.path, self.headers, body)
        if result is None:
            self._reset()
            return
        self._write(result)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ODataError(411, "Chunked request bodies are not accepted: send Content-Length.")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(lengths) > 1 or not lengths[0].strip().isdigit() or not lengths[0].isascii():
            raise ODataError(400, "The Content-Length header is invalid.")
        length = int(lengths[0])
        if length > _MAX_BODY:
            raise ODataError(413, f"The request body is larger than {_MAX_BODY} bytes.")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError("the client sent less than Content-Length")
        return body

    def _reset(self) -> None:
        # Linger 0: closing the socket sends a TCP RST, no TLS close_notify, no answer.
        self.close_connection = True
        # The socket is closed once this handler returns (see _AdminServer.finish_request).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
