"""Listeners' control channels: registration, ``accept`` delivery in turn, ``renewToken``
and the close with 1008 when a listener's token expires unrenewed."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.sync.server import ServerConnection

from devstack.relay.auth import AuthFailure, RelayAuthorizer
from devstack.relay.model import HybridConnection, Right
from devstack.relay.rendezvous import short_reason

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class ControlChannel:
    """One listener's control channel and when its token expires."""

    connection: ServerConnection
    hc: HybridConnection
    expires_at: float | None

    @property
    def open(self) -> bool:
        """Whether accepts can still be sent on it."""
        return self.connection.protocol.state is State.OPEN


class ControlChannels:
    """Every control channel of a namespace, per hybrid connection."""

    def __init__(self, auth: RelayAuthorizer) -> None:
        self._auth = auth
        self._changed = threading.Condition()
        self._pending: dict[ServerConnection, ControlChannel] = {}
        self._channels: dict[str, list[ControlChannel]] = defaultdict(list)
        self._turn: dict[str, int] = defaultdict(int)
        self._renewals = 0

    @property
    def renewals(self) -> int:
        """Tokens renewed successfully so far."""
        with self._changed:
            return self._renewals

    def pending(self, connection: ServerConnection, channel: ControlChannel) -> None:
        """A listen upgrade was accepted. The channel counts from now on: its state is
        OPEN once the 101 goes out, before the listener can see it."""
        with self._changed:
            # An upgrade that failed after all never reaches serve(): forget it here.
            for failed in [c for c in self._pending if c.protocol.state is State.CLOSED]:
                del self._pending[failed]
            self._pending[connection] = channel
            channels = self._channels[channel.hc.name.lower()]
            channels[:] = [c for c in channels if c.connection.protocol.state is not State.CLOSED]
            channels.append(channel)
            self._changed.notify_all()

    def open(self, path: str) -> list[ControlChannel]:
        """The open channels of ``path``, in registration order."""
        with self._changed:
            return [c for c in self._channels.get(path.lower(), []) if c.open]

    def wait_for(self, path: str, count: int, timeout: float) -> bool:
        """Wait until ``path`` has ``count`` open channels; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([c for c in self._channels.get(path.lower(), []) if c.open]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
        return True

    def deliver(self, path: str, message: str) -> bool:
        """Send ``message`` to the next open channel of ``path`` in turn (round robin);
        False when no channel takes it."""
        key = path.lower()
        with self._changed:
            channels = [c for c in self._channels.get(key, []) if c.open]
            start = self._turn[key]
            self._turn[key] = start + 1
        for offset in range(len(channels)):
            channel = channels[(start + offset) % len(channels)]
            try:
                channel.connection.send(message)
            except ConnectionClosed:
                continue  # closing under our feet: the next one
            return True
        return False

    def drop(self, path: str, code: int, reason: str) -> int:
        """Close every channel of ``path`` with ``code``; how many there were."""
        channels = self.open(path)
        for channel in channels:
            channel.connection.close(code, reason)
        return len(channels)

    def ping(self, path: str, timeout: float) -> int:
        """Ping every open channel of ``path``; how many answered within ``timeout``."""
        waiting = []
        for channel in self.open(path):
            try:
                waiting.append(channel.connection.ping())
            except ConnectionClosed:
                continue
        deadline = time.monotonic() + timeout
        return sum(pong.wait(max(0.0, deadline - time.monotonic())) for pong in waiting)

    def serve(self, connection: ServerConnection) -> None:
        """Run one control channel until it closes (the connection's handler thread)."""
        with self._changed:
            channel = self._pending.pop(connection, None)
            if channel is None:
                return
        try:
            self._run(channel)
        finally:
            with self._changed:
                channels = self._channels[channel.hc.name.lower()]
                if channel in channels:
                    channels.remove(channel)
                self._changed.notify_all()

    def _run(self, channel: ControlChannel) -> None:
        connection = channel.connection
        while True:
            expires = channel.expires_at
            timeout = None if expires is None else expires - time.time()
            if timeout is not None and timeout <= 0:
                connection.close(
                    CloseCode.POLICY_VIOLATION,
                    "ExpiredToken: The listener's token expired and was not renewed.",
                )
                return
            try:
                message = connection.recv(timeout=timeout)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            self._command(channel, message)

    def _command(self, channel: ControlChannel, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return  # the listener sends no binary commands; the service ignores noise
        try:
            command = json.loads(message)
        except ValueError:
            return
        if not isinstance(command, dict) or "renewToken" not in command:
            return  # responses and commands the double does not model
        renew = command["renewToken"]
        token = renew.get("token") if isinstance(renew, dict) else None
        try:
            grant = self._auth.authorize(
                token if isinstance(token, str) else None, channel.hc, Right.LISTEN
            )
        except AuthFailure as failure:
            channel.connection.close(CloseCode.POLICY_VIOLATION, short_reason(failure.message))
            return
        with self._changed:
            channel.expires_at = grant.expires_at
            self._renewals += 1
