"""A black hole: a loopback TCP listener that accepts every connection and never answers.

The worst a dependency can do to a caller is to take the connection and stay silent
(a hung server, a firewall that drops replies): connect timeouts do not fire, only read
timeouts, if the client has any. Point a setting at :attr:`BlackHole.port` to see
what the app does then::

    with BlackHole() as hole:
        settings["ADMINSERVICE_URL"] = f"{hole.url}/AdminService"
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from devstack.lifecycle import Service
from devstack.ports import LOOPBACK


class BlackHole(Service):
    """Accepts TCP connections on a loopback port, reads nothing, sends nothing; ``stop()``
    closes the listener and every connection it took."""

    def __init__(self, host: str = LOOPBACK) -> None:
        self.host = host
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The listening port (once started)."""
        if self._port is None:
            raise RuntimeError("the black hole is not started")
        return self._port

    @property
    def url(self) -> str:
        """``https://host:port``, for a setting that wants an HTTPS endpoint."""
        return f"https://{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        """How many connections it has taken so far."""
        with self._lock:
            return len(self._connections)

    def start(self) -> Self:
        """Listen on a free port and accept in a daemon thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(128)
        # Polling accept: closing a socket does not wake a blocked accept() on Linux.
        listener.settimeout(0.1)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us
            with self._lock:
                # Kept open and never read: the client waits for an answer that never comes.
                self._connections.append(connection)

    def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.close()
            self._connections.clear()
