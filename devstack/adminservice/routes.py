"""Which route a request is for: the three base paths, the entity sets, one collection
or its settings by key, and the actions bound to a collection."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from devstack.adminservice.entities import _ACTIONS, _ENTITY_SETS
from devstack.adminservice.filter import _read_key
from devstack.adminservice.odata import ODataError

#: Route names, for per-route latency and faults and for ``Call.route``.
ROUTES: Final = ("metadata", *_ENTITY_SETS, *_ACTIONS)
#: The classes whose instances a key GET reads (both keyed by CollectionID).
_KEYED: Final = ("SMS_Collection", "SMS_CollectionSettings")


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    methods: tuple[str, ...]
    entity_set: str | None = None
    collection_key: str | None = None
    action: str | None = None


def _prefixes(cmg_id: int) -> tuple[str, ...]:
    """The base paths: on premises, on premises with token authentication, through the CMG."""
    return (
        "/AdminService/",
        "/AdminService_TokenAuth/",
        f"/CCM_Proxy_ServerAuth/{cmg_id}/AdminService/",
    )


def _match_base(path: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """The base path ``path`` starts with, and the rest of it."""
    lowered = path.lower()
    for prefix in prefixes:
        # IIS matches the application path case-insensitively.
        if lowered.startswith(prefix.lower()):
            return prefix, path[len(prefix) :]
    raise ODataError(404, f"No AdminService application at '{path}'.")


def _route(rest: str) -> _Route | ODataError:
    """The route of the path below the base; an error is raised only after auth."""
    if rest in ("v1.0/$metadata", "wmi/$metadata"):
        return _Route("metadata", ("GET",))
    if rest.startswith("wmi/") and rest[4:] in _ENTITY_SETS:
        name = rest[4:]
        return _Route(name, ("GET",), entity_set=name)
    for keyed in _KEYED:
        prefix = f"wmi/{keyed}"
        if not (rest.startswith(prefix + "(") or rest.startswith(prefix + "/")):
            continue
        try:
            key, tail = _split_key(rest[len(prefix) :], keyed)
        except ODataError as error:
            return error
        if tail == "":
            return _Route(keyed, ("GET",), keyed, key)
        action = tail[len("/AdminService.") :]
        if keyed == "SMS_Collection" and tail.startswith("/AdminService.") and action in _ACTIONS:
            return _Route(action, ("POST",), keyed, key, action)
        return ODataError(404, f"No resource matches '{rest}' (unknown action or segment).")
    if rest.startswith("wmi/"):
        return ODataError(404, f"The simulator has no WMI class for '{rest[4:]}'.")
    return ODataError(404, f"No resource matches '{rest}'.")


def _split_key(after: str, entity_set: str) -> tuple[str, str]:
    """``('PS100123')/tail`` (parentheses) or ``/PS100123/tail`` (key as segment)."""
    if after.startswith("/"):
        segment, _, tail = after[1:].partition("/")
        if not re.fullmatch(r"[A-Za-z0-9]{1,16}", segment):
            raise ODataError(400, f"'{segment}' is not a valid CollectionID key segment.")
        return segment, ("/" + tail) if tail else ""
    # Find the ')' that closes the key: skip over quoted literals ('' is a quote).
    in_string = False
    for close, ch in enumerate(after):
        if ch == "'":
            in_string = not in_string
        elif ch == ")" and not in_string:
            return _read_key(after[1:close]), after[close + 1 :]
    raise ODataError(400, f"The key of {entity_set} is not closed by ')'.")
