"""The rendezvous: a sender's held upgrade, the one-time accept address the listener
dials, and the two WebSockets joined message for message once both are open."""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.sync.server import ServerConnection

log = logging.getLogger(__name__)

#: How long an opened listener side waits for the sender's 101 to go out, and how long
#: a sender waits past the timeout for a listener whose accept upgrade is under way.
_OPEN_GRACE: Final = 10.0
#: Close codes a server may not send (RFC 6455 §7.4.1) and what is sent instead.
_UNSENDABLE: Final = frozenset({1004, 1005, 1006, 1015})
_MAX_REASON: Final = 123  # a close frame carries at most 125 bytes, 2 for the code


def short_reason(text: str) -> str:
    """``text`` cut to fit a close frame (UTF-8 safe)."""
    data = text.encode("utf-8")[:_MAX_REASON]
    return data.decode("utf-8", errors="ignore")


class Outcome(enum.Enum):
    """How a held connect ended."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMED_OUT = "timed out"
    ABANDONED = "abandoned"  # the sender went away or the relay stopped


class _State(enum.Enum):
    PENDING = "pending"
    CLAIMED = "claimed"  # the listener's accept upgrade is under way
    OPEN = "open"
    REJECTED = "rejected"
    DEAD = "dead"


@dataclass(eq=False)
class Join:
    """One sender's rendezvous, from the held connect to the joined WebSockets.

    ``rid`` (the ``sb-hc-id`` of the accept address) is the sender's id with a random
    suffix: the address is the listener's one-time credential, so it must not be
    guessable from the id the sender chose.
    """

    sender: ServerConnection
    path: str
    sender_id: str
    rid: str = field(init=False)
    listener: ServerConnection | None = None
    rejection: tuple[int, str] | None = None
    _state: _State = _State.PENDING
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _sender_open: threading.Event = field(default_factory=threading.Event)
    _closing: bool = False
    #: When the sender's token expires, if the relay ends the joined link then.
    sender_expires_at: float | None = None

    def __post_init__(self) -> None:
        self.rid = f"{self.sender_id}_{secrets.token_hex(12)}"

    # -- the listener's side of the handshake --------------------------------------

    def claim(self) -> bool:
        """The listener dials the address to accept: True the first time, while the
        sender still waits."""
        with self._changed:
            if self._state is not _State.PENDING:
                return False
            self._state = _State.CLAIMED
            return True

    def reject(self, status: int, description: str) -> bool:
        """The listener dials the address to reject: True while the sender waits."""
        with self._changed:
            if self._state is not _State.PENDING:
                return False
            self._state = _State.REJECTED
            self.rejection = (status, description)
            self._changed.notify_all()
            return True

    def listener_opened(self, connection: ServerConnection) -> None:
        """The listener's accept WebSocket is open: the sender's 101 may go out."""
        with self._changed:
            self.listener = connection
            self._state = _State.OPEN
            self._changed.notify_all()

    def wait_sender_open(self, stopping: threading.Event) -> bool:
        """Wait until the sender's WebSocket is open too; False if it never will be."""
        deadline = time.monotonic() + _OPEN_GRACE
        while not self._sender_open.wait(0.05):
            gone = self.sender.protocol.state is State.CLOSED
            if gone or stopping.is_set() or time.monotonic() > deadline:
                return False
        return True

    # -- the sender's side -------------------------------------------------------------

    def wait(self, timeout: float, stopping: threading.Event) -> Outcome:
        """Hold the sender until the listener accepts or rejects, the timeout passes,
        the sender goes away or the relay stops."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._state is _State.OPEN:
                    return Outcome.ACCEPTED
                if self._state is _State.REJECTED:
                    return Outcome.REJECTED
                now = time.monotonic()
                gone = self.sender.protocol.state is State.CLOSED
                if gone or stopping.is_set():
                    self._state = _State.DEAD
                    return Outcome.ABANDONED
                # An accept already dialled gets a little longer to finish.
                grace = self._state is _State.CLAIMED and now < deadline + _OPEN_GRACE
                if now >= deadline and not grace:
                    self._state = _State.DEAD
                    return Outcome.TIMED_OUT
                self._changed.wait(0.05)

    def sender_opened(self) -> None:
        """The sender's 101 went out: the listener side may forward to it."""
        self._sender_open.set()

    # -- the joined WebSockets -----------------------------------------------------------

    def relay(self, source: ServerConnection, target: ServerConnection) -> None:
        """Forward every message of ``source`` to ``target`` as it is (text or binary,
        same boundaries) until ``source`` closes; then close ``target`` with the same
        code and reason, unless ``target`` closed first. Runs in ``source``'s handler.
        The sender's side ends both with 1008 at ``sender_expires_at``, if set."""
        deadline = self.sender_expires_at if source is self.sender else None
        while True:
            try:
                wait = None if deadline is None else max(0.0, deadline - time.time())
                message = source.recv(timeout=wait)
            except TimeoutError:
                self._expire()
                continue  # the closes come back to both handlers as ConnectionClosed
            except ConnectionClosed as closed:
                self._propagate(closed, target)
                return
            try:
                target.send(message)
            except ConnectionClosed:
                # target's own handler closes source with target's code; keep reading
                # until that happens, so source is not closed twice.
                continue

    def _expire(self) -> None:
        with self._changed:
            if self._closing:
                return
            self._closing = True
        reason = "ExpiredToken: The sender's token expired."
        for side in (self.sender, self.listener):
            if side is not None:
                side.close(int(CloseCode.POLICY_VIOLATION), reason)

    def _propagate(self, closed: ConnectionClosed, target: ServerConnection) -> None:
        with self._changed:
            if self._closing:
                return  # the other side closed first and closed this one
            self._closing = True
        frame = closed.rcvd
        if frame is None:
            code, reason = int(CloseCode.GOING_AWAY), "The peer connection was lost."
        elif frame.code == CloseCode.NO_STATUS_RCVD:
            code, reason = int(CloseCode.NORMAL_CLOSURE), ""
        elif frame.code in _UNSENDABLE:
            code, reason = int(CloseCode.INTERNAL_ERROR), frame.reason
        else:
            code, reason = int(frame.code), frame.reason
        target.close(code, short_reason(reason))


class RendezvousBook:
    """The pending rendezvous of a namespace, by accept id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._joins: dict[str, Join] = {}

    def open(self, sender: ServerConnection, path: str, sender_id: str) -> Join:
        """A new rendezvous for ``sender``."""
        join = Join(sender, path, sender_id)
        with self._lock:
            self._joins[join.rid] = join
        return join

    def find(self, rid: str) -> Join | None:
        """The rendezvous with this accept id, if it is still known."""
        with self._lock:
            return self._joins.get(rid)

    def close(self, join: Join) -> None:
        """Forget a rendezvous: its address no longer works."""
        with self._lock:
            self._joins.pop(join.rid, None)
