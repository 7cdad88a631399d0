"""What a Relay namespace holds: hybrid connections, their authorization rules and Entra
role assignments, and the log line of each WebSocket upgrade the double answered."""

from __future__ import annotations

import base64
import enum
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final


class Right(enum.Enum):
    """A right a SAS rule or an Entra role grants on a hybrid connection."""

    LISTEN = "Listen"
    SEND = "Send"
    MANAGE = "Manage"


#: Entra built-in roles of Azure Relay and the rights each grants (Owner: both).
SENDER_ROLE: Final = "Azure Relay Sender"
LISTENER_ROLE: Final = "Azure Relay Listener"
OWNER_ROLE: Final = "Azure Relay Owner"
ROLE_RIGHTS: Final[Mapping[str, frozenset[Right]]] = {
    SENDER_ROLE: frozenset({Right.SEND}),
    LISTENER_ROLE: frozenset({Right.LISTEN}),
    OWNER_ROLE: frozenset({Right.SEND, Right.LISTEN, Right.MANAGE}),
}


def new_key() -> str:
    """A shared access key as the portal generates one: 32 random bytes in base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """A shared access authorization rule: a name, two keys and its rights.

    ``Manage`` implies ``Listen`` and ``Send``, as on the real service (which refuses a
    Manage rule without both; here ``grants`` simply treats Manage as all three).
    """

    name: str
    rights: frozenset[Right]
    primary_key: str = field(default_factory=new_key, repr=False)
    secondary_key: str = field(default_factory=new_key, repr=False)

    @classmethod
    def create(
        cls,
        name: str,
        *rights: Right | str,
        primary_key: str | None = None,
        secondary_key: str | None = None,
    ) -> AuthorizationRule:
        """A rule with these rights (``Right`` or their names: "Listen", "Send", "Manage")
        and new random keys unless given."""
        return cls(
            name,
            frozenset(r if isinstance(r, Right) else Right(r) for r in rights),
            primary_key or new_key(),
            secondary_key or new_key(),
        )

    def grants(self, right: Right) -> bool:
        """Whether the rule gives ``right``."""
        return right in self.rights or Right.MANAGE in self.rights

    def signing_keys(self) -> tuple[str, str]:
        """The primary and the secondary key; a token signed with either is valid."""
        return (self.primary_key, self.secondary_key)


def roles_by_principal(assignments: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Role assignments keyed by lower-case object id; unknown role names are refused."""
    normalized: dict[str, frozenset[str]] = {}
    for object_id, roles in assignments.items():
        role_set = frozenset(roles)
        unknown = role_set - ROLE_RIGHTS.keys()
        if unknown:
            raise ValueError(f"unknown Azure Relay role(s) {sorted(unknown)}")
        normalized[object_id.lower()] = role_set
    return normalized


@dataclass(slots=True)
class HybridConnection:
    """One hybrid connection of the namespace.

    ``rules`` are the entity's own authorization rules (the namespace has others);
    ``role_assignments`` maps an Entra object id to role names scoped to this entity.
    ``user_metadata`` is free text; App Service writes ``[{"key":"endpoint",
    "value":"host:port"}]`` there for Hybrid Connection Manager.
    """

    name: str
    requires_client_authorization: bool = True
    user_metadata: str = ""
    rules: tuple[AuthorizationRule, ...] = ()
    role_assignments: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.role_assignments = roles_by_principal(self.role_assignments)

    def rule(self, name: str) -> AuthorizationRule | None:
        """The entity's rule called ``name`` (names compare case-insensitively)."""
        return next((r for r in self.rules if r.name.lower() == name.lower()), None)


def metadata_endpoint(user_metadata: str) -> tuple[str, int]:
    """``host, port`` of the ``endpoint`` item of App Service's user metadata (the first
    one), as Hybrid Connection Manager reads it; ValueError when there is none."""
    try:
        items = json.loads(user_metadata)
    except ValueError:
        raise ValueError("the user metadata is not JSON") from None
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and str(item.get("key", "")).lower() == "endpoint":
                host, sep, port = str(item.get("value", "")).rpartition(":")
                if sep and host and port.isdigit() and 0 < int(port) < 65536:
                    return host, int(port)
                raise ValueError(f"the endpoint {item.get('value')!r} is not host:port")
    raise ValueError("the user metadata has no 'endpoint' item")


@dataclass(frozen=True, slots=True)
class RelayCall:
    """One WebSocket upgrade as the double answered it.

    ``action`` is listen, connect, accept or reject (a rejecting accept); ``status`` is
    101 for a WebSocket that opened, else the HTTP status sent; ``reason`` the status
    description (empty on 101). ``id`` is the ``sb-hc-id`` the client sent, if any.
    """

    action: str
    path: str
    status: int
    reason: str
    id: str | None
