"""Reading a ``/$hc/`` WebSocket upgrade request, and the service's HTTP error answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from devstack.relay.model import HybridConnection

AUTH_HEADER: Final = "ServiceBusAuthorization"
ACTIONS: Final = ("listen", "connect", "accept")
#: A tracking id: the SDKs send a GUID (.NET) or what the caller chose (hyco-ws, e.g.
#: "hyco-ws-sender"), so any short token-like text passes; spaces, quotes and the like
#: do not (the service's exact rule is undocumented).
_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class Refusal(Exception):
    """An upgrade the service answers with an HTTP error ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A parsed upgrade: ``path`` is what follows ``$hc/`` (a suffix included), decoded."""

    action: str
    hc: HybridConnection
    path: str
    id: str | None
    query: dict[str, list[str]]
    token: str | None

    @property
    def status_code(self) -> str | None:
        """``sb-hc-statusCode`` of a rejecting accept."""
        return self.query.get("sb-hc-statusCode", [None])[0]

    @property
    def status_description(self) -> str:
        """``sb-hc-statusDescription`` of a rejecting accept."""
        return self.query.get("sb-hc-statusDescription", [""])[0]

    def accept_address(self, origin: str, rid: str) -> str:
        """The rendezvous address for the listener: the sender's path and query
        parameters other than ``sb-hc-*``, with ``sb-hc-action=accept&sb-hc-id=rid``."""
        extra = [
            (name, value)
            for name, values in self.query.items()
            for value in values
            if not name.lower().startswith("sb-hc-")
        ]
        query = urlencode([*extra, ("sb-hc-action", "accept"), ("sb-hc-id", rid)])
        return f"{origin}/$hc/{quote(self.path, safe='/')}?{query}"


def requested_action(target: str) -> str:
    """The ``sb-hc-action`` of a request target, for the log of a refused upgrade."""
    return parse_qs(urlsplit(target).query).get("sb-hc-action", ["?"])[0]


def parse_upgrade(
    target: str, headers: Headers, find: Callable[[str], HybridConnection | None]
) -> Upgrade:
    """The upgrade ``target`` (path and query) asks for, or a Refusal (400, 404).

    ``find`` looks the hybrid connection up by the requested path.
    """
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True)
    for name, values in query.items():
        if name.lower().startswith("sb-hc-") and len(values) > 1:
            raise Refusal(400, f"BadRequest: The parameter '{name}' is repeated.")
    action = query.get("sb-hc-action", [""])[0]
    if action not in ACTIONS:
        what = f"'{action}' is not a supported action" if action else "sb-hc-action is missing"
        raise Refusal(400, f"BadRequest: {what}.")
    if not split.path.startswith("/$hc/"):
        raise Refusal(404, "EndpointNotFound: Endpoint does not exist.")
    path = unquote(split.path[len("/$hc/") :]).strip("/")
    hc = find(path)
    if hc is None:
        raise Refusal(404, f"EndpointNotFound: Endpoint does not exist. '{path}'.")
    id_ = query.get("sb-hc-id", [None])[0]
    if id_ is not None and action != "accept" and not _ID.fullmatch(id_):
        raise Refusal(400, "BadRequest: sb-hc-id must be 1 to 128 letters, digits or -_.:")
    header_tokens = headers.get_all(AUTH_HEADER)
    if len(header_tokens) > 1:
        raise Refusal(400, f"BadRequest: More than one {AUTH_HEADER} header.")
    token = header_tokens[0] if header_tokens else query.get("sb-hc-token", [None])[0]
    return Upgrade(action, hc, path, id_, query, token)


def connect_headers(headers: Headers) -> dict[str, str]:
    """The sender's upgrade headers for ``connectHeaders``, without its credential."""
    return {
        name: ", ".join(headers.get_all(name))
        for name in dict.fromkeys(headers.keys())
        if name.lower() != AUTH_HEADER.lower()
    }


def _reason_phrase(text: str) -> str:
    # websockets clients accept only visible ASCII, space and tab in a reason phrase.
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:512]


def error_response(status: int, message: str, *, namespace: str, path: str) -> Response:
    """The service's answer to a refused upgrade: the description, a tracking id and
    a timestamp as the reason phrase, and the same text as a plain-text body."""
    stamp = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
    text = (
        f"{message} TrackingId:{uuid.uuid4()}, SystemTracker:{namespace}:{path}, Timestamp:{stamp}"
    )
    body = text.encode("utf-8")
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
    )
    return Response(status, _reason_phrase(text), headers, body)
