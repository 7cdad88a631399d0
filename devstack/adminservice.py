"""A local stand-in for the ConfigMgr AdminService (OData v4 over HTTPS, Entra ID tokens).

Built from the documented API shapes (``/work/shared/reference/configmgr.md`` §3-4) and
strict where the real service is strict: every call needs a delegated RS256 bearer token
of a ConfigMgr administrative user, checked against a JWKS fetched over HTTPS; ``$filter``
is parsed by a real (small) OData grammar, so a badly escaped literal fails or matches
nothing instead of matching everything; action bodies are validated like OData does.

Typical use::

    with AdminServiceSimulator(ca, jwks_uri=entra.jwks_uri, issuer=entra.issuer,
                               admins=["svc-cm@contoso.com"], devices=workload.devices,
                               collections={"PS100123": "Project reinstall"}) as admin:
        client = AdminServiceClient(admin.cmg_url, ...)

Answers this simulator chose where the real service is unverified (each one switchable
where it matters, so tests can run both answers):

- Re-adding an existing direct rule: ``duplicate_add="error"`` answers **500**
  ``{"error": {"code": "InternalServerError", "message": "... already exists ...
  (0x80041019) ..."}}`` and adds nothing; ``"ok"`` answers 201 ``ReturnValue`` 0 and adds
  nothing.
- Deleting a rule that does not exist: ``delete_missing="error"`` answers **500** with a
  WMI "Not found (0x80041002)" message; ``"ok"`` answers 201 ``ReturnValue`` 0.
- Other WMI method failures (ResourceID that is no SMS_R_System record, a class name
  other than SMS_R_System, a built-in ``SMS*`` collection) are 500 with a WBEM code in
  the message; malformed bodies are 400 (the OData layer); an unknown collection is 404.
- App-only tokens (``roles``, no ``scp``) and delegated tokens without the
  ``user_impersonation`` scope: **403** with ``WWW-Authenticate: Bearer
  error="insufficient_scope"`` (RFC 6750 §3.1; no retry with a new token helps), or 401
  ``invalid_token`` with ``app_only_status=401``.
- The key GET ``wmi/SMS_Collection('ID')`` answers ``{"value": [entity]}`` as community
  code reads it (``key_get_shape="value"``) or the bare entity (``"entity"``); an unknown
  key is 404 (``missing_key="404"``) or an empty ``value`` list (``"empty"``).
- Every action answers 201 (AddMembershipRule's documented status, used for all).

Also decided here: all three base URLs take bearer tokens (the real ``/AdminService/``
uses Windows authentication); membership follows the direct rules at once, or only after
``RequestRefresh`` with ``membership_needs_refresh=True``; string comparisons in
``$filter`` are case-insensitive like WQL; property names are case-sensitive.

Fault injection (``fail_next``, ``storm``, ``reset_connections_next``, latency) acts in
front of authentication, as a throttling gateway (the CMG) would. ``slow_next`` delays
the next answers only and then carries the request out, so a client that gave up
waiting still changed something (an add can land after the client's timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import socket
import socketserver
import ssl
import struct
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, NamedTuple, NoReturn, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.datagen import GeneratedDevice
from devstack.https import HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.tls import LocalCA

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE: Final = "https://ConfigMgrService"
#: The numeric id in the CMG path; any 64-bit number, this one is a typical value.
DEFAULT_CMG_ID: Final = 72057594037927939
REQUIRED_SCOPE: Final = "user_impersonation"

_ACTIONS: Final = (
    "AddMembershipRule",
    "DeleteMembershipRule",
    "RequestRefresh",
    "AddMembershipRules",
)
#: Route names, for per-route latency and faults and for ``Call.route``.
ROUTES: Final = (
    "metadata",
    "SMS_R_System",
    "SMS_FullCollectionMembership",
    "SMS_Collection",
    *_ACTIONS,
)

_JSON_TYPE: Final = (
    "application/json; odata.metadata=minimal; odata.streaming=true; "
    "IEEE754Compatible=false; charset=utf-8"
)
_XML_TYPE: Final = "application/xml; charset=utf-8"
_MAX_BODY: Final = 1024 * 1024
_MAX_FILTER_DEPTH: Final = 50
_JWKS_TIMEOUT: Final = 5.0
_HANDSHAKE_TIMEOUT: Final = 10.0
_IDLE_TIMEOUT: Final = 30.0
_DIRECT_RULE_TYPE: Final = "#AdminService.SMS_CollectionRuleDirect"
_UINT32_MAX: Final = 2**32 - 1
_INT64_MAX: Final = 2**63 - 1

# WMI error codes the method failures quote (as the SMS Provider reports them).
_WBEM_NOT_FOUND: Final = "0x80041002"
_WBEM_INVALID_PARAMETER: Final = "0x80041008"
_WBEM_ALREADY_EXISTS: Final = "0x80041019"
_WBEM_FAILED: Final = "0x80041001"

# -- the entity types: WMI property name -> EDM type -----------------------------------

_STRING: Final = "Edm.String"
_INT32: Final = "Edm.Int32"
_INT64: Final = "Edm.Int64"
_BOOL: Final = "Edm.Boolean"
_DATE: Final = "Edm.DateTimeOffset"

_SYSTEM_PROPERTIES: Final[dict[str, str]] = {
    "ResourceId": _INT64,
    "Name": _STRING,
    "NetbiosName": _STRING,
    "SMSUniqueIdentifier": _STRING,
    "ResourceDomainORWorkgroup": _STRING,
    "FullDomainName": _STRING,
    "Client": _INT32,
    "Active": _INT32,
    "Obsolete": _INT32,
    "Decommissioned": _INT32,
    "CreationDate": _DATE,
}
_MEMBERSHIP_PROPERTIES: Final[dict[str, str]] = {
    "CollectionID": _STRING,
    "ResourceID": _INT64,
    "Name": _STRING,
    "IsDirect": _BOOL,
}
_COLLECTION_PROPERTIES: Final[dict[str, str]] = {
    "CollectionID": _STRING,
    "Name": _STRING,
    "MemberCount": _INT32,
    "CollectionType": _INT32,
    "LimitToCollectionID": _STRING,
}
_ENTITY_SETS: Final[dict[str, dict[str, str]]] = {
    "SMS_R_System": _SYSTEM_PROPERTIES,
    "SMS_FullCollectionMembership": _MEMBERSHIP_PROPERTIES,
    "SMS_Collection": _COLLECTION_PROPERTIES,
}
_KEYS: Final = {
    "SMS_R_System": "ResourceId",
    "SMS_FullCollectionMembership": "ResourceID",
    "SMS_Collection": "CollectionID",
}


# -- answers and errors --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = _JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return str(status)


def _json_answer(
    status: int, document: Mapping[str, Any], headers: Sequence[tuple[str, str]] = ()
) -> _Answer:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Answer(status, body, _JSON_TYPE, (("OData-Version", "4.0"), *headers))


class ODataError(Exception):
    """An error answer in the OData shape ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _code_for(status)
        self.message = message
        self.headers = tuple(headers)

    def answer(self) -> _Answer:
        """The HTTP answer for this error."""
        document = {"error": {"code": self.code, "message": self.message}}
        return _json_answer(self.status, document, self.headers)


def _wmi_failure(method: str, what: str, wbem: str) -> ODataError:
    # The SMS Provider's method failed: the AdminService passes it on as a 500.
    return ODataError(
        500,
        f"WMI method SMS_Collection.{method} failed: {what} ({wbem})",
        code="InternalServerError",
    )


def _header_safe(text: str, limit: int = 300) -> str:
    # A WWW-Authenticate quoted-string: no quotes, backslashes or control characters.
    cleaned = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "?" for ch in text)
    return cleaned[:limit]


# -- the call log --------------------------------------------------------------------------


class Call(NamedTuple):
    """One request as the simulator saw it (status 0: reset on purpose)."""

    method: str
    path: str
    status: int
    upn: str | None
    route: str | None = None
    collection_id: str | None = None
    resource_id: int | None = None


@dataclass(slots=True)
class _CallInfo:
    method: str
    path: str
    upn: str | None = None
    route: str | None = None
    collection_id: str | None = None
    resource_id: int | None = None


# -- OData $filter: a strict parser for the subset the project uses -----------------------


class _Token(NamedTuple):
    kind: Literal["ident", "string", "int", "lparen", "rparen", "comma"]
    value: Any
    pos: int


_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>[ \t]+)
    |(?P<string>'(?:[^']|'')*')
    |(?P<quote>')
    |(?P<int>-?[0-9]+)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<lparen>\()
    |(?P<rparen>\))
    |(?P<comma>,)
    """,
    re.VERBOSE,
)


def _lex(text: str, what: str = "$filter") -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise ODataError(
                400,
                f"Syntax error: character {text[pos]!r} is not valid at position {pos} in {what}.",
            )
        kind = match.lastgroup
        raw = match.group()
        if kind == "quote":
            raise ODataError(
                400, f"There is an unterminated string literal at position {pos} in {what}."
            )
        if kind == "string":
            tokens.append(_Token("string", raw[1:-1].replace("''", "'"), pos))
        elif kind == "int":
            value = int(raw)
            if abs(value) > _INT64_MAX:
                raise ODataError(400, f"The integer literal at position {pos} is out of range.")
            tokens.append(_Token("int", value, pos))
        elif kind != "ws":  # ident, lparen, rparen, comma
            tokens.append(_Token(kind, raw, pos))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


Entity = dict[str, Any]
_Predicate = Callable[[Entity], bool]
_Literal = str | int | bool | None
_KEYWORDS: Final = frozenset({"eq", "and", "or", "true", "false", "null", "not"})
_UNSUPPORTED_OPERATORS: Final = frozenset({"ne", "gt", "ge", "lt", "le", "has", "in", "add", "sub"})
_STRING_FUNCTIONS: Final = {"tolower": str.lower, "toupper": str.upper}


class _FilterParser:
    """``or`` of ``and`` of ``(expr)`` or ``operand eq literal``; operand is a property or
    ``tolower``/``toupper`` of one. Anything else is a 400, as the real parser answers."""

    def __init__(self, text: str, entity_set: str, properties: Mapping[str, str]) -> None:
        self.text = text
        self.entity_set = entity_set
        self.properties = properties
        self.tokens = _lex(text)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Predicate:
        if not self.tokens:
            raise ODataError(400, "The $filter expression is empty.")
        predicate = self._or()
        if self.pos < len(self.tokens):
            self._syntax_error(self.tokens[self.pos])
        return predicate

    def _syntax_error(self, token: _Token | None, expected: str = "") -> NoReturn:
        where = f"at position {token.pos}" if token else "at the end"
        found = f" near {str(token.value)!r}" if token else ""
        hint = f": expected {expected}" if expected else ""
        raise ODataError(400, f"Syntax error {where}{found} in $filter '{self.text}'{hint}.")

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            self._syntax_error(None, expected)
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "ident" and token.value == word:
            self.pos += 1
            return True
        return False

    def _or(self) -> _Predicate:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda entity: any(part(entity) for part in parts)

    def _and(self) -> _Predicate:
        parts = [self._primary()]
        while self._keyword("and"):
            parts.append(self._primary())
        if len(parts) == 1:
            return parts[0]
        return lambda entity: all(part(entity) for part in parts)

    def _primary(self) -> _Predicate:
        token = self._peek()
        if token is not None and token.kind == "lparen":
            self.pos += 1
            self.depth += 1
            if self.depth > _MAX_FILTER_DEPTH:
                raise ODataError(400, "The $filter expression is nested too deeply.")
            inner = self._or()
            closing = self._next("')'")
            if closing.kind != "rparen":
                self._syntax_error(closing, "')'")
            self.depth -= 1
            return inner
        return self._comparison()

    def _comparison(self) -> _Predicate:
        name, transform = self._operand()
        operator = self._next("'eq'")
        if operator.kind != "ident" or operator.value != "eq":
            if operator.kind == "ident" and operator.value in _UNSUPPORTED_OPERATORS:
                raise ODataError(
                    400, f"The operator '{operator.value}' is not supported by this service."
                )
            self._syntax_error(operator, "'eq'")
        literal = self._literal()
        edm_type = self.properties[name]
        self._check_types(name, edm_type, transform is not None, literal)
        if literal is None:
            return lambda entity: entity.get(name) is None
        if isinstance(literal, str):
            # WQL compares strings case-insensitively, so a function on the property
            # changes nothing but must still parse.
            wanted = literal.casefold()

            def match_string(entity: Entity) -> bool:
                value = entity.get(name)
                if not isinstance(value, str):
                    return False
                if transform is not None:
                    value = transform(value)
                return value.casefold() == wanted

            return match_string
        expected = literal

        def match_value(entity: Entity) -> bool:
            value = entity.get(name)
            # bool is an int in Python: keep true from matching 1.
            return value is not None and type(value) is type(expected) and value == expected

        return match_value

    def _check_types(self, name: str, edm_type: str, function: bool, literal: _Literal) -> None:
        if edm_type == _DATE:
            raise ODataError(400, f"This service does not filter on the date property '{name}'.")
        if function and edm_type != _STRING:
            raise ODataError(
                400, f"No function signature matches the argument '{name}' ({edm_type})."
            )
        if literal is None:
            return
        literal_type = (
            _BOOL if isinstance(literal, bool)
            else _STRING if isinstance(literal, str)
            else _INT64
        )  # fmt: skip
        compatible = literal_type == edm_type or (
            literal_type == _INT64 and edm_type in (_INT32, _INT64)
        )
        if not compatible:
            raise ODataError(
                400,
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{edm_type}' and '{literal_type}' for operator kind 'Equal'.",
            )

    def _operand(self) -> tuple[str, Callable[[str], str] | None]:
        token = self._next("a property name")
        if token.kind != "ident":
            self._syntax_error(token, "a property name")
        following = self._peek()
        if following is not None and following.kind == "lparen":
            function = _STRING_FUNCTIONS.get(token.value)
            if function is None:
                raise ODataError(400, f"An unknown function with name '{token.value}' was found.")
            self.pos += 1
            name = self._property(self._next("a property name"))
            closing = self._next("')'")
            if closing.kind != "rparen":
                self._syntax_error(closing, "')'")
            return name, function
        return self._property(token), None

    def _property(self, token: _Token) -> str:
        if token.kind != "ident" or token.value in _KEYWORDS:
            self._syntax_error(token, "a property name")
        if token.value not in self.properties:
            raise ODataError(
                400,
                f"Could not find a property named '{token.value}' on type "
                f"'AdminService.{self.entity_set}'.",
            )
        return str(token.value)

    def _literal(self) -> _Literal:
        token = self._next("a literal")
        if token.kind == "string":
            return str(token.value)
        if token.kind == "int":
            return int(token.value)
        if token.kind == "ident" and token.value in ("true", "false"):
            return bool(token.value == "true")
        if token.kind == "ident" and token.value == "null":
            return None
        self._syntax_error(token, "a literal")


def parse_filter(text: str, entity_set: str) -> Callable[[Entity], bool]:
    """Compile an OData ``$filter`` for one of the simulated entity sets (400 on error)."""
    return _FilterParser(text, entity_set, _ENTITY_SETS[entity_set]).parse()


def _read_key(text: str) -> str:
    """The collection key ``'PS100123'`` (a single OData string literal)."""
    tokens = _lex(text, what="the key")
    if len(tokens) != 1 or tokens[0].kind != "string":
        raise ODataError(
            400, f"The key value '{text}' is not a valid string literal for CollectionID."
        )
    return str(tokens[0].value)


# -- the metadata document ----------------------------------------------------------------


def _csdl() -> bytes:
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        '<Schema Namespace="AdminService" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    for entity_set, properties in _ENTITY_SETS.items():
        lines.append(f'<EntityType Name="{entity_set}">')
        lines.append(f'<Key><PropertyRef Name="{_KEYS[entity_set]}"/></Key>')
        lines.extend(f'<Property Name="{n}" Type="{t}"/>' for n, t in properties.items())
        if entity_set == "SMS_Collection":
            lines.append(
                '<Property Name="CollectionRules" '
                'Type="Collection(AdminService.SMS_CollectionRule)"/>'
            )
        lines.append("</EntityType>")
    lines += [
        '<ComplexType Name="SMS_CollectionRule" Abstract="true">',
        '<Property Name="RuleName" Type="Edm.String"/></ComplexType>',
        '<ComplexType Name="SMS_CollectionRuleDirect" BaseType="AdminService.SMS_CollectionRule">',
        '<Property Name="ResourceClassName" Type="Edm.String"/>',
        '<Property Name="ResourceID" Type="Edm.Int64"/></ComplexType>',
    ]
    for action in _ACTIONS:
        lines.append(f'<Action Name="{action}" IsBound="true">')
        lines.append('<Parameter Name="bindingParameter" Type="AdminService.SMS_Collection"/>')
        if action in ("AddMembershipRule", "DeleteMembershipRule"):
            lines.append(
                '<Parameter Name="collectionRule" Type="AdminService.SMS_CollectionRule"/>'
            )
        elif action == "AddMembershipRules":
            lines.append(
                '<Parameter Name="collectionRules" '
                'Type="Collection(AdminService.SMS_CollectionRule)"/>'
            )
        else:
            lines.append('<Parameter Name="IncludeSubcollections" Type="Edm.Boolean"/>')
        lines.append("</Action>")
    lines.append('<EntityContainer Name="Container">')
    lines.extend(
        f'<EntitySet Name="{name}" EntityType="AdminService.{name}"/>' for name in _ENTITY_SETS
    )
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines).encode("utf-8")


_METADATA: Final = _csdl()


# -- tokens --------------------------------------------------------------------------------


class _KeysUnavailable(Exception):
    """The JWKS could not be fetched or parsed."""


class _SigningKeys:
    """The issuer's signing keys, fetched over HTTPS and cached; an unknown kid refetches."""

    def __init__(self, uri: str, context: ssl.SSLContext, timeout: float, cooldown: float) -> None:
        self._uri = uri
        self._cooldown = cooldown
        self._fetched_at = float("-inf")
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler(
                {}
            ),  # a proxy from the environment must not catch localhost
            urllib.request.HTTPSHandler(context=context),
        )
        self._timeout = timeout
        self._keys: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def for_kid(self, kid: str | None) -> list[Any]:
        """The keys a token with this ``kid`` may be signed with (all of them without one)."""
        with self._lock:
            unknown = kid is not None and self._keys is not None and kid not in self._keys
            # Microsoft's validator refreshes on an unknown kid at most every few minutes;
            # the cooldown (0 by default, for tests) models that.
            if self._keys is None or (
                unknown and time.monotonic() - self._fetched_at >= self._cooldown
            ):
                self._keys = self._fetch()  # a failed fetch keeps the old cache
            if kid is None:
                return list(self._keys.values())
            key = self._keys.get(kid)
            return [] if key is None else [key]

    def _fetch(self) -> dict[str, Any]:
        self.fetches += 1
        self._fetched_at = time.monotonic()
        try:
            request = urllib.request.Request(self._uri, headers={"Accept": "application/json"})  # noqa: S310 (https only, checked)
            with self._opener.open(request, timeout=self._timeout) as response:
                document = json.loads(response.read(_MAX_BODY))
        except (OSError, ValueError, urllib.error.URLError) as error:
            raise _KeysUnavailable(f"the signing keys could not be fetched ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _KeysUnavailable("the JWKS document has no 'keys' list")
        keys: dict[str, Any] = {}
        for index, entry in enumerate(document["keys"]):
            if not isinstance(entry, dict) or entry.get("kty") != "RSA":
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry, algorithm="RS256").key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else f"#{index}"] = key
        return keys


@dataclass(frozen=True, slots=True)
class _Principal:
    upn: str


def _timestamp(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).strftime("%m/%d/%Y %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            pass
    return str(value)


# -- the simulator ---------------------------------------------------------------------


@dataclass(slots=True)
class _Collection:
    collection_id: str
    name: str
    rules: dict[int, str] = field(default_factory=dict)  # ResourceID -> RuleName, in order
    members: set[int] = field(default_factory=set)  # as last evaluated


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    retry_after: int | None
    route: str | None


def _check_route(route: str | None) -> None:
    if route is not None and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; one of {ROUTES}")


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    methods: tuple[str, ...]
    entity_set: str | None = None
    collection_key: str | None = None
    action: str | None = None


class AdminServiceSimulator(Service):
    """The AdminService on ``https://localhost:<port>`` under its three base URLs.

    State (devices, collections, rules) and fault settings are thread-safe and may be
    changed while it serves. ``calls`` logs every request for assertions.
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        jwks_uri: str,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        extra_audiences: Iterable[str] = (),
        admins: Iterable[str] = (),
        devices: Iterable[GeneratedDevice] = (),
        collections: Mapping[str, str] | None = None,
        port: int | None = None,
        duplicate_add: Literal["error", "ok"] = "error",
        delete_missing: Literal["error", "ok"] = "error",
        membership_needs_refresh: bool = False,
        mfa_required: bool = False,
        app_only_status: Literal[401, 403] = 403,
        key_get_shape: Literal["value", "entity"] = "value",
        missing_key: Literal["404", "empty"] = "404",
        cmg_id: int = DEFAULT_CMG_ID,
        jwks_refresh_cooldown: float = 0.0,
    ) -> None:
        if urlsplit(jwks_uri).scheme != "https":
            raise ValueError("jwks_uri must be an https:// URL (metadata is only fetched over TLS)")
        self.ca = ca
        self.issuer = issuer
        self.audiences = (audience, *extra_audiences)
        self.duplicate_add = duplicate_add
        self.delete_missing = delete_missing
        self.membership_needs_refresh = membership_needs_refresh
        self.mfa_required = mfa_required
        self.app_only_status = app_only_status
        self.key_get_shape = key_get_shape
        self.missing_key = missing_key
        self.cmg_id = cmg_id
        client_context = ssl.create_default_context(cafile=str(ca.bundle_path))
        self._keys = _SigningKeys(jwks_uri, client_context, _JWKS_TIMEOUT, jwks_refresh_cooldown)
        self._admins = {upn.casefold() for upn in admins}

        self._lock = threading.RLock()
        self._devices: dict[int, GeneratedDevice] = {}
        self._system_rows: list[Entity] | None = None  # built on demand, dropped on change
        self._collections: dict[str, _Collection] = {}
        for device in devices:
            self._devices[device.resource_id] = device
        for collection_id, name in (collections or {}).items():
            self.add_collection(collection_id, name)
        self._calls: list[Call] = []
        self._errors: list[str] = []

        self._faults: deque[_Fault] = deque()
        self._resets: deque[str | None] = deque()
        self._slow: deque[tuple[str | None, float]] = deque()
        self._latency: dict[str | None, float] = {}
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._expired_before: int | None = None

        self._port = port
        self._context = ca.server_context()
        self._untrusted_context: ssl.SSLContext | None = None
        self._untrusted = False
        self._down = False
        self._running = False
        self._server: _AdminServer | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # set on stop: cuts injected latency short
        self._service_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 (a free port unless one was given; kept across restarts)."""
        with self._service_lock:
            self._running = True
            self._wake.clear()
            if not self._down:
                self._listen()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections; state is kept. Safe to call twice."""
        with self._service_lock:
            self._running = False
            self._wake.set()
            self._close()

    def _listen(self) -> None:
        if self._server is not None:
            return
        context = self._context
        if self._untrusted:
            if self._untrusted_context is None:
                self._untrusted_context = self.ca.untrusted_server_context()
            context = self._untrusted_context
        server = _AdminServer((LOOPBACK, self._port or 0), self, context)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"adminservice-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.debug("AdminService simulator listening on %s", self.base_url)

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()  # a restart also ends kept-alive connections
        if thread is not None:
            thread.join(timeout=5.0)

    # -- addresses ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host name the certificate is valid for."""
        return "localhost"

    @property
    def port(self) -> int:
        """The TCP port (known once started, or when given)."""
        if self._port is None:
            raise RuntimeError("the AdminService simulator has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``https://localhost:<port>/AdminService/`` (on premises)."""
        return f"https://{self.host}:{self.port}/AdminService/"

    @property
    def token_auth_url(self) -> str:
        """``https://localhost:<port>/AdminService_TokenAuth/`` (on premises, Entra token)."""
        return f"https://{self.host}:{self.port}/AdminService_TokenAuth/"

    @property
    def cmg_url(self) -> str:
        """The AdminService through the cloud management gateway."""
        return f"https://{self.host}:{self.port}/CCM_Proxy_ServerAuth/{self.cmg_id}/AdminService/"

    @property
    def base_urls(self) -> tuple[str, str, str]:
        """All three base URLs; each serves the same routes."""
        return (self.base_url, self.token_auth_url, self.cmg_url)

    def _prefixes(self) -> tuple[str, ...]:
        return (
            "/AdminService/",
            "/AdminService_TokenAuth/",
            f"/CCM_Proxy_ServerAuth/{self.cmg_id}/AdminService/",
        )

    # -- scenario ----------------------------------------------------------------------

    def add_device(self, device: GeneratedDevice) -> None:
        """Add (or replace) an SMS_R_System record."""
        with self._lock:
            self._devices[device.resource_id] = device
            self._system_rows = None

    def add_collection(self, collection_id: str, name: str) -> None:
        """Add an empty device collection (IDs are case-insensitive, like WMI keys)."""
        with self._lock:
            key = collection_id.upper()
            if key not in self._collections:
                self._collections[key] = _Collection(collection_id.upper(), name)

    def set_direct_members(self, collection_id: str, resource_ids: Iterable[int]) -> None:
        """Replace the collection's direct rules; membership follows at once."""
        with self._lock:
            collection = self._collection(collection_id)
            collection.rules = {
                rid: self._devices[rid].name if rid in self._devices else str(rid)
                for rid in resource_ids
            }
            collection.members = set(collection.rules)

    def direct_members(self, collection_id: str) -> set[int]:
        """ResourceIDs with a direct rule in the collection."""
        with self._lock:
            return set(self._collection(collection_id).rules)

    def members(self, collection_id: str) -> set[int]:
        """The evaluated membership (what SMS_FullCollectionMembership shows)."""
        with self._lock:
            return set(self._collection(collection_id).members)

    def _collection(self, collection_id: str) -> _Collection:
        try:
            return self._collections[collection_id.upper()]
        except KeyError:
            raise KeyError(f"no collection {collection_id!r} in the simulator") from None

    # -- the call log ----------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        """Forget the logged calls."""
        with self._lock:
            self._calls.clear()

    def count_calls(
        self,
        route: str | None = None,
        *,
        collection_id: str | None = None,
        resource_id: int | None = None,
        status: int | None = None,
    ) -> int:
        """How many logged calls match every given criterion."""
        wanted = collection_id.upper() if collection_id else None
        return sum(
            1
            for call in self.calls
            if (route is None or call.route == route)
            and (wanted is None or call.collection_id == wanted)
            and (resource_id is None or call.resource_id == resource_id)
            and (status is None or call.status == status)
        )

    def successful_adds(self) -> Counter[tuple[str, int]]:
        """Successful AddMembershipRule calls per (collection, ResourceID)."""
        return Counter(
            (call.collection_id, call.resource_id)
            for call in self.calls
            if call.route == "AddMembershipRule"
            and call.status in (200, 201)
            and call.collection_id is not None
            and call.resource_id is not None
        )

    @property
    def in_flight(self) -> int:
        """Requests being served right now (a slow one may still change state)."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of simulator bugs (each answered 500); tests assert it stays empty."""
        with self._lock:
            return list(self._errors)

    @property
    def jwks_fetches(self) -> int:
        """How often the signing keys were fetched."""
        return self._keys.fetches

    def _record(self, info: _CallInfo, status: int) -> None:
        with self._lock:
            self._calls.append(
                Call(info.method, info.path, status, info.upn, info.route,
                     info.collection_id, info.resource_id)
            )  # fmt: skip

    # -- fault injection ---------------------------------------------------------------

    @property
    def latency_seconds(self) -> float:
        """Delay before every answer (a per-route ``set_latency`` overrides it)."""
        return self._latency.get(None, 0.0)

    @latency_seconds.setter
    def latency_seconds(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Delay answers of one route (see ROUTES) or, with ``route=None``, of all."""
        _check_route(route)
        with self._lock:
            self._latency[route] = max(0.0, seconds)

    def fail_next(
        self,
        n: int = 1,
        status: Literal[429, 500, 502, 503, 504] = 503,
        retry_after: int | None = None,
        *,
        route: str | None = None,
    ) -> None:
        """The next ``n`` requests (of ``route``, if given) fail with ``status``; queued
        after faults already pending."""
        _check_route(route)
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, route) for _ in range(n))

    def storm(
        self, status: Literal[429, 500, 502, 503, 504], count: int, retry_after: int | None = None
    ) -> None:
        """The next ``count`` requests, whatever the route, fail with ``status``; replaces
        faults still pending."""
        with self._lock:
            self._faults = deque(_Fault(status, retry_after, None) for _ in range(count))

    def reset_connections_next(self, n: int = 1, *, route: str | None = None) -> None:
        """Close the connection of the next ``n`` requests with a TCP reset, unanswered."""
        with self._lock:
            self._resets.extend([route] * n)

    def slow_next(self, n: int = 1, seconds: float = 1.0, *, route: str | None = None) -> None:
        """Delay the answers of the next ``n`` requests (of ``route``, if given) by
        ``seconds`` on top of any latency, then serve them as usual: past a client's
        timeout, the request still takes effect, as on a slow real server."""
        _check_route(route)
        with self._lock:
            self._slow.extend([(route, max(0.0, seconds))] * n)

    def clear_faults(self) -> None:
        """Drop pending faults, resets and slow answers, and all latency."""
        with self._lock:
            self._faults.clear()
            self._resets.clear()
            self._slow.clear()
            self._latency.clear()

    def expire_tokens_issued_before(self, when: datetime | None) -> None:
        """Treat tokens issued (``iat``) before ``when`` as expired; None undoes it.

        Compared in whole seconds, as ``iat`` is; a naive ``when`` is UTC.
        """
        with self._lock:
            if when is None:
                self._expired_before = None
            else:
                aware = when if when.tzinfo else when.replace(tzinfo=UTC)
                self._expired_before = int(aware.timestamp())

    def set_untrusted_certificate(self, untrusted: bool = True) -> None:
        """Serve a certificate from another CA (restarts on the same port)."""
        with self._service_lock:
            if untrusted == self._untrusted:
                return
            self._untrusted = untrusted
            if self._server is not None:
                self._close()
                self._listen()

    def set_down(self, down: bool = True) -> None:
        """Stop listening (connections are refused) or listen again on the same port."""
        with self._service_lock:
            self._down = down
            if down:
                self._close()
            elif self._running:
                self._listen()

    def _take_fault(self, route: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.route is None or fault.route == route:
                    del self._faults[index]
                    return fault
        return None

    # -- serving -------------------------------------------------------------------------

    def _serve(self, method: str, target: str, headers: Message, body: bytes) -> _Answer | None:
        """Answer one request; None means: reset the connection."""
        info = _CallInfo(method=method, path=target)
        answer: _Answer | None
        with self._lock:
            self._in_flight += 1
        try:
            try:
                answer = self._serve_checked(method, target, headers, body, info)
            except ODataError as error:
                answer = error.answer()
            except Exception:  # a simulator bug: answer like a failing server, keep it
                log.exception("AdminService simulator failed on %s %s", method, target)
                with self._lock:
                    self._errors.append(traceback.format_exc())
                answer = ODataError(500, "An error has occurred (simulator bug).").answer()
            self._record(info, 0 if answer is None else answer.status)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
        return answer

    def _serve_checked(
        self, method: str, target: str, headers: Message, body: bytes, info: _CallInfo
    ) -> _Answer | None:
        split = urlsplit(target)
        try:
            path = unquote(split.path, errors="strict")
        except UnicodeDecodeError:
            raise ODataError(400, "The request URL is not valid UTF-8.") from None
        info.path = path
        base, rest = self._match_base(path)
        route = self._route(rest)
        if isinstance(route, _Route):
            info.route = route.name
            if route.collection_key is not None:
                info.collection_id = route.collection_key.upper()
        route_name = info.route or ""

        if self._take_reset(route_name):
            return None
        self._delay(route_name)
        fault = self._take_fault(route_name)
        if fault is not None:
            return self._fault_answer(fault)

        info.upn = self._authenticate(headers).upn
        if isinstance(route, ODataError):
            raise route
        if method not in route.methods:
            raise ODataError(
                405,
                f"The requested resource does not support http method '{method}'.",
                headers=(("Allow", ", ".join(route.methods)),),
            )
        options = _query_options(split.query)
        context = f"https://{self.host}:{self.port}{base}wmi/$metadata"
        if route.name == "metadata":
            if options.keys() - {"$format"}:
                raise ODataError(400, "The $metadata document takes no query options.")
            return _Answer(200, _METADATA, _XML_TYPE, (("OData-Version", "4.0"),))
        if route.action is not None:
            return self._action(route, headers, body, info, context, options)
        assert route.entity_set is not None
        if route.collection_key is not None:
            return self._collection_by_key(route.collection_key, options, context)
        return self._list(route.entity_set, options, context)

    def _take_reset(self, route_name: str) -> bool:
        with self._lock:
            for index, wanted in enumerate(self._resets):
                if wanted is None or wanted == route_name:
                    del self._resets[index]
                    return True
        return False

    def _delay(self, route_name: str) -> None:
        with self._lock:
            seconds = self._latency.get(route_name, self._latency.get(None, 0.0))
            for index, (wanted, extra) in enumerate(self._slow):
                if wanted is None or wanted == route_name:
                    del self._slow[index]
                    seconds += extra
                    break
        if seconds > 0:
            self._wake.wait(seconds)

    def _fault_answer(self, fault: _Fault) -> _Answer:
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", str(fault.retry_after)),)
        messages = {
            429: "Too many requests: the gateway is throttling this client.",
            503: "The service is unavailable.",
            500: "An error has occurred.",
        }
        message = messages.get(fault.status, f"Injected failure {fault.status}.")
        return ODataError(fault.status, message, headers=headers).answer()

    def _match_base(self, path: str) -> tuple[str, str]:
        lowered = path.lower()
        for prefix in self._prefixes():
            # IIS matches the application path case-insensitively.
            if lowered.startswith(prefix.lower()):
                return prefix, path[len(prefix) :]
        raise ODataError(404, f"No AdminService application at '{path}'.")

    def _route(self, rest: str) -> _Route | ODataError:
        """The route of the path below the base; an error is raised only after auth."""
        if rest in ("v1.0/$metadata", "wmi/$metadata"):
            return _Route("metadata", ("GET",))
        if rest in ("wmi/SMS_R_System", "wmi/SMS_FullCollectionMembership", "wmi/SMS_Collection"):
            name = rest[4:]
            return _Route(name, ("GET",), entity_set=name)
        prefix = "wmi/SMS_Collection"
        if rest.startswith(prefix + "(") or rest.startswith(prefix + "/"):
            try:
                key, tail = self._split_key(rest[len(prefix) :])
            except ODataError as error:
                return error
            if tail == "":
                return _Route("SMS_Collection", ("GET",), "SMS_Collection", key)
            if tail.startswith("/AdminService.") and tail[len("/AdminService.") :] in _ACTIONS:
                action = tail[len("/AdminService.") :]
                return _Route(action, ("POST",), "SMS_Collection", key, action)
            return ODataError(404, f"No resource matches '{rest}' (unknown action or segment).")
        if rest.startswith("wmi/"):
            return ODataError(404, f"The simulator has no WMI class for '{rest[4:]}'.")
        return ODataError(404, f"No resource matches '{rest}'.")

    @staticmethod
    def _split_key(after: str) -> tuple[str, str]:
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
        raise ODataError(400, "The key of SMS_Collection is not closed by ')'.")

    # -- authentication --------------------------------------------------------------------

    def _authenticate(self, headers: Message) -> _Principal:
        values = headers.get_all("Authorization") or []
        if not values:
            # RFC 6750 §3.1: no error code when the request carries no credentials.
            raise ODataError(
                401,
                "Authorization has been denied for this request: no bearer token.",
                headers=(("WWW-Authenticate", "Bearer"),),
            )
        if len(values) > 1:
            raise self._invalid_token("More than one Authorization header")
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer":
            raise ODataError(
                401,
                f"Authorization has been denied for this request: scheme '{scheme}' is not Bearer.",
                headers=(("WWW-Authenticate", "Bearer"),),
            )
        if not token or any(ch.isspace() for ch in token):
            raise self._invalid_token("The token is malformed")
        claims = self._verify(token)
        self._check_fresh(claims)

        scopes = claims.get("scp")
        scope_list = scopes.split() if isinstance(scopes, str) else []
        if REQUIRED_SCOPE not in scope_list:
            what = (
                "an app-only token (roles, no scp) is not accepted: the AdminService needs a "
                "delegated token of a ConfigMgr administrative user"
                if not scope_list
                else f"the token lacks the '{REQUIRED_SCOPE}' scope"
            )
            if self.app_only_status == 401:
                raise self._invalid_token(what[0].upper() + what[1:])
            raise ODataError(
                403,
                f"Forbidden: {what}.",
                headers=(
                    (
                        "WWW-Authenticate",
                        f'Bearer error="insufficient_scope", scope="{REQUIRED_SCOPE}", '
                        f'error_description="{_header_safe(what)}"',
                    ),
                ),
            )
        if self.mfa_required:
            raise ODataError(
                403,
                "Forbidden: the site requires multi-factor authentication for SMS Provider "
                "calls, which token authentication cannot satisfy.",
            )
        upn = claims.get("upn")
        if not isinstance(upn, str) or not upn:
            raise ODataError(
                403, "Forbidden: the token has no 'upn' to map to a ConfigMgr administrative user."
            )
        if upn.casefold() not in self._admins:
            raise ODataError(403, f"Forbidden: '{upn}' is not a ConfigMgr administrative user.")
        return _Principal(upn)

    def _invalid_token(self, description: str) -> ODataError:
        return ODataError(
            401,
            f"Authorization has been denied for this request: {description}.",
            headers=(
                (
                    "WWW-Authenticate",
                    'Bearer error="invalid_token", '
                    f'error_description="{_header_safe(description)}"',
                ),
            ),
        )

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._invalid_token("The token is malformed") from None
        if header.get("alg") != "RS256":
            raise self._invalid_token(
                f"The signature algorithm '{header.get('alg')}' is not accepted"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._invalid_token("The token is malformed (kid)")
        try:
            keys = self._keys.for_kid(kid)
        except _KeysUnavailable as error:
            raise self._invalid_token(f"The signature key was not found: {error}") from None
        if not keys:
            raise self._invalid_token("The signature key was not found")
        unverified = self._unverified_claims(token)
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    audience=list(self.audiences),
                    issuer=self.issuer,
                    leeway=0,
                    # iat is checked by expire_tokens_issued_before only: Microsoft's
                    # validator ignores it, so a skewed clock must not fail here.
                    options={"require": ["exp", "iss", "aud"], "verify_iat": False},
                )
            except jwt.InvalidSignatureError:
                continue  # without a kid, another key may fit
            except jwt.ExpiredSignatureError:
                raise self._invalid_token(
                    f"The token expired at '{_timestamp(unverified.get('exp'))}'"
                ) from None
            except jwt.ImmatureSignatureError:
                raise self._invalid_token(
                    f"The token is not valid before '{_timestamp(unverified.get('nbf'))}'"
                ) from None
            except jwt.InvalidAudienceError:
                raise self._invalid_token(
                    f"The audience '{unverified.get('aud')}' is invalid"
                ) from None
            except jwt.InvalidIssuerError:
                raise self._invalid_token(
                    f"The issuer '{unverified.get('iss')}' is invalid"
                ) from None
            except jwt.MissingRequiredClaimError as error:
                raise self._invalid_token(f"The token has no '{error.claim}' claim") from None
            except jwt.PyJWTError:
                raise self._invalid_token("The token is malformed") from None
        raise self._invalid_token("The signature is invalid")

    @staticmethod
    def _unverified_claims(token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return {}
        return claims

    def _check_fresh(self, claims: Mapping[str, Any]) -> None:
        with self._lock:
            cutoff = self._expired_before
        if cutoff is None:
            return
        issued = claims.get("iat", claims.get("nbf"))
        if not isinstance(issued, int | float) or isinstance(issued, bool) or int(issued) < cutoff:
            raise self._invalid_token(f"The token expired at '{_timestamp(cutoff)}'")

    # -- queries -------------------------------------------------------------------------

    def _entities(self, entity_set: str) -> list[Entity]:
        with self._lock:
            if entity_set == "SMS_R_System":
                if self._system_rows is None:
                    self._system_rows = [
                        _system_entity(self._devices[rid]) for rid in sorted(self._devices)
                    ]
                return self._system_rows  # never mutated: $select builds new rows
            if entity_set == "SMS_Collection":
                return [_collection_entity(c) for _, c in sorted(self._collections.items())]
            rows: list[Entity] = []
            for key, collection in sorted(self._collections.items()):
                for rid in sorted(collection.members):
                    device = self._devices.get(rid)
                    rows.append({
                        "CollectionID": key,
                        "ResourceID": rid,
                        "Name": device.name if device else None,
                        "IsDirect": rid in collection.rules,
                    })  # fmt: skip
            return rows

    def _list(self, entity_set: str, options: Mapping[str, str], context: str) -> _Answer:
        properties = _ENTITY_SETS[entity_set]
        select = _select(options.get("$select"), properties, entity_set)
        rows = self._entities(entity_set)
        if "$filter" in options:
            predicate = parse_filter(options["$filter"], entity_set)
            rows = [row for row in rows if predicate(row)]
        if "$top" in options:
            rows = rows[: _top(options["$top"])]
        if select is not None:
            rows = [{name: row[name] for name in select} for row in rows]
            context += f"#{entity_set}({','.join(select)})"
        else:
            context += f"#{entity_set}"
        return _json_answer(200, {"@odata.context": context, "value": rows})

    def _collection_by_key(self, key: str, options: Mapping[str, str], context: str) -> _Answer:
        if options.keys() - {"$select"}:
            raise ODataError(400, "Only $select applies to a single entity.")
        properties = {**_COLLECTION_PROPERTIES, "CollectionRules": "Collection"}
        select = _select(options.get("$select"), properties, "SMS_Collection")
        with self._lock:
            collection = self._collections.get(key.upper())
            entity = None
            if collection is not None:
                entity = _collection_entity(collection)
                entity["CollectionRules"] = [
                    {
                        "@odata.type": _DIRECT_RULE_TYPE,
                        "RuleName": rule_name,
                        "ResourceID": rid,
                        "ResourceClassName": "SMS_R_System",
                    }
                    for rid, rule_name in collection.rules.items()
                ]
        if entity is None:
            if self.missing_key == "empty":
                return _json_answer(
                    200, {"@odata.context": f"{context}#SMS_Collection", "value": []}
                )
            raise ODataError(404, f"No SMS_Collection instance with key '{key}' was found.")
        if select is not None:
            entity = {name: entity[name] for name in select}
        if self.key_get_shape == "entity":
            return _json_answer(
                200, {"@odata.context": f"{context}#SMS_Collection/$entity", **entity}
            )
        return _json_answer(200, {"@odata.context": f"{context}#SMS_Collection", "value": [entity]})

    # -- actions -------------------------------------------------------------------------

    def _action(
        self,
        route: _Route,
        headers: Message,
        body: bytes,
        info: _CallInfo,
        context: str,
        options: Mapping[str, str],
    ) -> _Answer:
        assert route.action is not None and route.collection_key is not None
        if options:
            raise ODataError(400, "An action takes no query options.")
        action = route.action
        params = _json_body(headers, body)
        key = route.collection_key.upper()
        with self._lock:
            if key not in self._collections:
                raise ODataError(
                    404, f"No SMS_Collection instance with key '{route.collection_key}' was found."
                )
        result_context = f"{context}#AdminService.{action}_Result"

        if action == "RequestRefresh":
            _only_parameters(params, {"IncludeSubcollections"}, action)
            if not isinstance(params.get("IncludeSubcollections", False), bool):
                raise ODataError(400, "IncludeSubcollections must be a Boolean.")
            with self._lock:
                collection = self._collections[key]
                collection.members = set(collection.rules)
            return _json_answer(201, {"@odata.context": result_context, "ReturnValue": 0})

        if action == "AddMembershipRules":
            _only_parameters(params, {"collectionRules"}, action)
            # Reported broken over REST (reference §3): never adds anything.
            raise _wmi_failure(action, "Generic failure", _WBEM_FAILED)

        resource_id, rule_name = self._direct_rule(params, action, info)
        if key.startswith("SMS"):
            raise _wmi_failure(
                action, f"the built-in collection {key} cannot have membership rules changed",
                _WBEM_INVALID_PARAMETER,
            )  # fmt: skip
        with self._lock:
            if resource_id not in self._devices:
                raise _wmi_failure(
                    action,
                    f"ResourceID {resource_id} is not an SMS_R_System resource",
                    _WBEM_NOT_FOUND,
                )
            collection = self._collections[key]
            if action == "AddMembershipRule":
                if resource_id in collection.rules:
                    if self.duplicate_add == "error":
                        raise _wmi_failure(
                            action,
                            f"a direct membership rule for ResourceID {resource_id} already "
                            f"exists in collection {key}",
                            _WBEM_ALREADY_EXISTS,
                        )
                else:
                    collection.rules[resource_id] = rule_name
            else:
                if resource_id not in collection.rules:
                    if self.delete_missing == "error":
                        raise _wmi_failure(
                            action,
                            f"Not found: collection {key} has no direct membership rule for "
                            f"ResourceID {resource_id}",
                            _WBEM_NOT_FOUND,
                        )
                else:
                    del collection.rules[resource_id]
            if not self.membership_needs_refresh:
                collection.members = set(collection.rules)
        document: dict[str, Any] = {"@odata.context": result_context, "ReturnValue": 0}
        if action == "AddMembershipRule":
            document["QueryID"] = 0  # direct rules have no query
        return _json_answer(201, document)

    def _direct_rule(
        self, params: Mapping[str, Any], action: str, info: _CallInfo
    ) -> tuple[int, str]:
        _only_parameters(params, {"collectionRule"}, action)
        rule = params.get("collectionRule")
        if not isinstance(rule, dict):
            raise ODataError(
                400, f"The parameter 'collectionRule' of '{action}' is missing or not an object."
            )
        resource_id = rule.get("ResourceID")
        if isinstance(resource_id, int) and not isinstance(resource_id, bool):
            info.resource_id = resource_id  # logged even when the rest is refused
        odata_type = rule.get("@odata.type")
        if odata_type is None:
            raise ODataError(
                400,
                "The collectionRule needs an '@odata.type': "
                "AdminService.SMS_CollectionRule is abstract.",
            )
        if odata_type != _DIRECT_RULE_TYPE:
            raise ODataError(
                400,
                f"The type '{odata_type}' is not supported here; only "
                f"'{_DIRECT_RULE_TYPE}' is simulated.",
            )
        extra = sorted(rule.keys() - {"@odata.type", "ResourceClassName", "RuleName", "ResourceID"})
        if extra:
            raise ODataError(
                400,
                f"The property '{extra[0]}' does not exist on type "
                "'AdminService.SMS_CollectionRuleDirect'.",
            )
        rule_name = rule.get("RuleName", "")
        if rule_name is None:
            rule_name = ""
        if not isinstance(rule_name, str):
            raise ODataError(400, "RuleName must be a string (Edm.String).")
        class_name = rule.get("ResourceClassName")
        if not isinstance(class_name, str):
            raise ODataError(
                400, "ResourceClassName is required and must be a string (Edm.String)."
            )
        if resource_id is None:
            raise ODataError(400, "ResourceID is required.")
        if isinstance(resource_id, bool) or not isinstance(resource_id, int):
            raise ODataError(
                400,
                f"Cannot convert the literal '{json.dumps(resource_id)}' to the expected "
                "type 'Edm.Int64'.",
            )
        if not 0 < resource_id <= _UINT32_MAX:
            raise ODataError(400, f"ResourceID {resource_id} is out of range.")
        if class_name.casefold() != "sms_r_system":
            raise _wmi_failure(
                action,
                f"ResourceClassName '{class_name}' is not SMS_R_System",
                _WBEM_INVALID_PARAMETER,
            )
        return resource_id, rule_name


# -- entity mapping and request parsing --------------------------------------------------


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _system_entity(device: GeneratedDevice) -> Entity:
    return {
        "ResourceId": device.resource_id,
        "Name": device.name,
        "NetbiosName": device.netbios_name,
        "SMSUniqueIdentifier": device.sms_unique_identifier,
        "ResourceDomainORWorkgroup": device.domain,
        "FullDomainName": device.full_domain,
        "Client": device.client,
        "Active": device.active,
        "Obsolete": device.obsolete,
        "Decommissioned": device.decommissioned,
        "CreationDate": _iso(device.creation_date),
    }


def _collection_entity(collection: _Collection) -> Entity:
    return {
        "CollectionID": collection.collection_id,
        "Name": collection.name,
        "MemberCount": len(collection.members),
        "CollectionType": 2,  # device collection
        "LimitToCollectionID": "" if collection.collection_id.startswith("SMS") else "SMS00001",
    }


def _query_options(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ODataError(400, "The query string is not valid UTF-8.") from None
    except ValueError as error:
        raise ODataError(400, f"The query string is malformed ({error}).") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if not name.startswith("$"):
            continue  # custom query options are allowed and ignored, as in OData
        if name not in ("$filter", "$select", "$top", "$format"):
            raise ODataError(400, f"The query parameter '{name}' is not supported.")
        if name in options:
            raise ODataError(
                400,
                f"Query option '{name}' was specified more than once, but it must be "
                "specified at most once.",
            )
        options[name] = value
    if options.get("$format", "json") not in ("json", "application/json"):
        raise ODataError(400, "Only $format=json is supported.")
    options.pop("$format", None)
    return options


def _select(value: str | None, properties: Mapping[str, str], entity_set: str) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",")]
    if not names or any(not name for name in names):
        raise ODataError(400, f"The $select '{value}' is empty or has an empty item.")
    if names == ["*"]:
        return None
    for name in names:
        if name not in properties:
            raise ODataError(
                400,
                f"Could not find a property named '{name}' on type 'AdminService.{entity_set}'.",
            )
    return list(dict.fromkeys(names))


def _top(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ODataError(400, f"Invalid value '{value}' for $top query option.")
    return int(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"duplicate property '{name}'")
        document[name] = value
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"'{name}' is not valid JSON")


def _json_body(headers: Message, body: bytes) -> dict[str, Any]:
    content_type = headers.get("Content-Type")
    if content_type is None:
        if body.strip():
            raise ODataError(415, "The request has a body but no Content-Type.")
        return {}
    mime, *params = (part.strip() for part in content_type.split(";"))
    if mime.lower() != "application/json":
        raise ODataError(415, f"The content type '{mime}' is not supported; use application/json.")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise ODataError(415, f"The charset '{value}' is not supported; use utf-8.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ODataError(400, "The request body is not valid UTF-8.") from None
    if not text.strip():
        return {}
    try:
        document = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as error:
        raise ODataError(400, f"The request body is not valid JSON: {error}.") from None
    if not isinstance(document, dict):
        raise ODataError(400, "The request body must be a JSON object of action parameters.")
    return document


def _only_parameters(params: Mapping[str, Any], allowed: set[str], action: str) -> None:
    unknown = sorted(params.keys() - allowed)
    if unknown:
        raise ODataError(
            400,
            f"The parameter '{unknown[0]}' in the request payload is not a valid parameter "
            f"for the operation '{action}'.",
        )


# -- HTTPS plumbing ------------------------------------------------------------------------


class _AdminServer(ThreadingHTTPServer):
    """A threading HTTP server doing the TLS handshake in the connection's own thread,
    so a slow or refusing client never blocks ``accept``; tracks connections so a stop
    or restart can end kept-alive ones."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], simulator: AdminServiceSimulator, context: ssl.SSLContext
    ) -> None:
        self.simulator = simulator
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
        self.server.simulator._record(_CallInfo(self.command or "", self.path or ""), int(code))
        self.close_connection = True
        text = message or explain or _code_for(code)
        self._write(ODataError(code, text).answer())

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
        simulator = self.server.simulator
        try:
            body = self._read_body()
        except ODataError as error:
            self.close_connection = True  # the body was not read: the stream is out of step
            answer = error.answer()
            simulator._record(_CallInfo(self.command, self.path), answer.status)
            self._write(answer)
            return
        result = simulator._serve(self.command, self.path, self.headers, body)
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


# -- tokens for tests and standalone use ------------------------------------------------


class TokenSigner:
    """An RSA key that signs Entra-like RS256 access tokens, and its public JWK.

    For the simulator's own tests and standalone runs; ``devstack.entra`` is the Entra
    stand-in the stack uses.
    """

    def __init__(self, kid: str | None = None) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid or uuid.uuid4().hex

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with ``kid``, ``use`` and ``alg``."""
        jwk = dict(RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return jwk

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """Sign ``claims`` as they are (no claim is added)."""
        header = {"typ": "JWT", "kid": self.kid, **(headers or {})}
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers=header)

    def token(
        self,
        *,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        upn: str | None = None,
        scp: str | None = REQUIRED_SCOPE,
        roles: Sequence[str] | None = None,
        issued_at: float | None = None,
        lifetime: float = 3600.0,
        **extra: Any,
    ) -> str:
        """A v1-style access token; ``scp=None, roles=[...]`` makes an app-only one."""
        now = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "ver": "1.0",
            "tid": "00000000-0000-0000-0000-000000000000",
            "appid": "11111111-1111-1111-1111-111111111111",
            "oid": str(uuid.uuid4()),
        }
        if upn is not None:
            claims["upn"] = upn
        if scp is not None:
            claims["scp"] = scp
        if roles is not None:
            claims["roles"] = list(roles)
        claims.update(extra)
        return self.sign(claims)


class JwksServer(HttpsSimulator):
    """Publishes the signers' keys as a JWKS over HTTPS (LocalCA) at ``url``.

    ``signers`` may be replaced while it serves (key rotation); ``fetches`` counts GETs.
    """

    PATH: Final = "/discovery/keys"

    def __init__(self, ca: LocalCA, signers: Iterable[TokenSigner] = ()) -> None:
        self.signers = list(signers)
        self.fetches = 0
        self._lock = threading.Lock()
        self._server = LocalHttpsServer(ca.server_context(), self._handle, name="jwks")

    @property
    def url(self) -> str:
        """The JWKS URL (``jwks_uri`` for the simulator)."""
        return f"https://localhost:{self.port}{self.PATH}"

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return HttpResponse.json(501, {"error": "not implemented"})
        if request.path != self.PATH:
            return HttpResponse.json(404, {"error": "not found"})
        with self._lock:
            self.fetches += 1
            document = {"keys": [signer.jwk() for signer in self.signers]}
        return HttpResponse.json(200, document)


# -- standalone ----------------------------------------------------------------------------

_DEMO_TENANT: Final = "8d5c7a5e-0000-4000-8000-00000000c0de"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the simulator with the M365 demo devices until interrupted."""
    from devstack.datagen import M365_RULES, m365_demo_scenario

    parser = argparse.ArgumentParser(
        prog="python -m devstack.adminservice", description=main.__doc__
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument("--admin", default="cm-svc@contoso.com", help="administrative user's UPN")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    ca = LocalCA()
    signer = TokenSigner()
    issuer = f"https://sts.windows.net/{_DEMO_TENANT}/"
    collections = {rule["collection_id"]: rule["name"] for rule in M365_RULES}
    with (
        JwksServer(ca, [signer]) as jwks,
        AdminServiceSimulator(
            ca,
            jwks_uri=jwks.url,
            issuer=issuer,
            admins=[args.admin],
            devices=m365_demo_scenario().devices,
            collections=collections,
            port=args.port,
        ) as simulator,
    ):
        token = signer.token(issuer=issuer, upn=args.admin, lifetime=8 * 3600)
        print(f"AdminService (on premises): {simulator.base_url}")
        print(f"AdminService (token auth):  {simulator.token_auth_url}")
        print(f"AdminService (through CMG): {simulator.cmg_url}")
        print(f"JWKS:      {jwks.url}")
        print(f"Issuer:    {issuer}")
        print(f"Audience:  {DEFAULT_AUDIENCE}")
        print(f"CA bundle: {ca.bundle_path}")
        print(f"Token for {args.admin} (8 hours):\n{token}")
        print(
            f"Try: curl --cacert {ca.bundle_path} -H 'Authorization: Bearer <token>' "
            f"'{simulator.cmg_url}v1.0/$metadata'"
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_CMG_ID",
    "REQUIRED_SCOPE",
    "ROUTES",
    "AdminServiceSimulator",
    "Call",
    "JwksServer",
    "ODataError",
    "TokenSigner",
    "parse_filter",
]

if __name__ == "__main__":
    raise SystemExit(main())
