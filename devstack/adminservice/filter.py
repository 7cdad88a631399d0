"""OData ``$filter``: a strict lexer and parser for the subset the project uses, so a
badly escaped literal fails or matches nothing instead of matching everything; and the
collection key literal, read by the same lexer.

A filter compiles to a tree of ``Comparison`` and ``Junction`` nodes: each node is the
predicate itself (call it with an entity), and ``conjuncts`` lists what every match
must satisfy, so a query can push those parts down to SQL."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, NoReturn

from devstack.adminservice.entities import (
    _BOOL,
    _DATE,
    _ENTITY_SETS,
    _INT32,
    _INT64,
    _STRING,
    Entity,
)
from devstack.adminservice.odata import ODataError

_MAX_FILTER_DEPTH: Final = 50
_INT64_MAX: Final = 2**63 - 1


class _Token(NamedTuple):
    kind: Literal["ident", "string", "int", "datetime", "lparen", "rparen", "comma"]
    value: Any
    pos: int


# OData's dateTimeOffsetValue: unquoted, seconds and fraction optional, Z or an offset.
_DATETIME: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,12})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_TOKEN_RE: Final = re.compile(
    rf"""
    (?P<ws>[ \t]+)
    |(?P<string>'(?:[^']|'')*')
    |(?P<quote>')
    |(?P<datetime>{_DATETIME})
    |(?P<int>-?[0-9]+)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<lparen>\()
    |(?P<rparen>\))
    |(?P<comma>,)
    """,
    re.VERBOSE,
)


def _datetime_literal(raw: str, pos: int) -> datetime:
    # A fraction past microseconds is cut: datetime holds no more, and the site
    # database's datetime (3 ms) far less.
    whole, dot, rest = raw.partition(".")
    fraction = ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, whole = rest[:digits], whole + rest[digits:]
    try:
        value = datetime.fromisoformat(whole)
    except ValueError:
        raise ODataError(
            400, f"The literal '{raw}' at position {pos} is not a valid Edm.DateTimeOffset."
        ) from None
    micro = int((fraction + "000000")[:6])
    return value.astimezone(UTC) + timedelta(microseconds=micro)


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
        elif kind == "datetime":
            tokens.append(_Token("datetime", _datetime_literal(raw, pos), pos))
        elif kind == "int":
            value = int(raw)
            if abs(value) > _INT64_MAX:
                raise ODataError(400, f"The integer literal at position {pos} is out of range.")
            tokens.append(_Token("int", value, pos))
        elif kind != "ws":  # ident, lparen, rparen, comma
            tokens.append(_Token(kind, raw, pos))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


# -- the compiled filter -------------------------------------------------------------------

Operator = Literal["eq", "ne", "gt", "ge", "lt", "le"]
_Literal = str | int | bool | datetime | None
#: OData's names of the operators, as its error messages quote them.
_OPERATOR_KINDS: Final[dict[str, str]] = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
#: The types every operator applies to; strings and booleans take ``eq`` only.
_ORDERED_TYPES: Final = frozenset({_INT32, _INT64, _DATE})


@dataclass(frozen=True, slots=True)
class Comparison:
    """``property operator literal``; ``function`` is tolower/toupper on the property."""

    name: str
    operator: Operator
    value: _Literal
    edm_type: str
    function: Callable[[str], str] | None = None

    def __call__(self, entity: Entity) -> bool:
        actual = entity.get(self.name)
        if self.value is None:  # the parser allows only eq and ne with null
            return (actual is None) == (self.operator == "eq")
        if actual is None:  # null is unequal to a value and not ordered against it
            return self.operator == "ne"
        if isinstance(self.value, str):
            # WQL compares strings case-insensitively, so a function on the property
            # changes nothing but must still parse.
            if not isinstance(actual, str):
                return False
            if self.function is not None:
                actual = self.function(actual)
            return bool(actual.casefold() == self.value.casefold())
        if isinstance(self.value, datetime):
            if not isinstance(actual, str):
                return False
            actual = datetime.fromisoformat(actual)
        elif type(actual) is not type(self.value):
            # bool is an int in Python: keep true from matching 1.
            return self.operator == "ne"
        return _COMPARE[self.operator](actual, self.value)


@dataclass(frozen=True, slots=True)
class Junction:
    """``and`` (every part) or ``or`` (any part)."""

    kind: Literal["and", "or"]
    parts: tuple[Filter, ...]

    def __call__(self, entity: Entity) -> bool:
        if self.kind == "and":
            return all(part(entity) for part in self.parts)
        return any(part(entity) for part in self.parts)


Filter = Comparison | Junction


def conjuncts(node: Filter) -> list[Filter]:
    """The parts every match satisfies: the node, or its ``and`` parts at any depth."""
    if isinstance(node, Junction) and node.kind == "and":
        return [leaf for part in node.parts for leaf in conjuncts(part)]
    return [node]


def equality_scope(node: Filter, name: str) -> frozenset[Any] | None:
    """The literals property ``name`` can equal in any entity ``node`` matches, or None
    when the filter does not pin it down. From ``name eq literal`` (no function, not
    null), an ``or`` whose every part pins it, or any one part of an ``and``. Strings
    keep their case: compare them case-insensitively, as the filter does. A superset:
    an entity whose value lies outside it never matches, so a query may build only the
    entities inside it and still run the whole filter on them."""
    if isinstance(node, Comparison):
        pinned = (
            node.name == name and node.operator == "eq"
            and node.function is None and node.value is not None
        )  # fmt: skip
        return frozenset((node.value,)) if pinned else None
    if node.kind == "and":
        for part in node.parts:
            scope = equality_scope(part, name)
            if scope is not None:
                return scope
        return None
    scopes = [equality_scope(part, name) for part in node.parts]
    if any(scope is None for scope in scopes):
        return None
    return frozenset().union(*(scope for scope in scopes if scope is not None))


def node_count(node: Filter) -> int:
    """The nodes of the filter's syntax tree, counted roughly as ASP.NET OData's query
    validator counts them against ``MaxNodeCount``: a comparison is its operator, the
    property access, the range variable and the literal (plus the function call of
    tolower/toupper, and the conversion of an integer literal to an Int64 property);
    each ``and``/``or`` joining two parts is one more node."""
    if isinstance(node, Comparison):
        count = 4 + (node.function is not None)
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            count += node.edm_type == _INT64
        return count
    return len(node.parts) - 1 + sum(node_count(part) for part in node.parts)


# -- the parser ----------------------------------------------------------------------------

_KEYWORDS: Final = frozenset({*_OPERATOR_KINDS, "and", "or", "true", "false", "null", "not"})
_UNSUPPORTED_OPERATORS: Final = frozenset({"has", "in", "add", "sub", "mul", "div", "mod"})
_STRING_FUNCTIONS: Final = {"tolower": str.lower, "toupper": str.upper}


class _FilterParser:
    """``or`` of ``and`` of ``(expr)`` or ``operand operator literal``; operand is a
    property or ``tolower``/``toupper`` of one. Anything else is a 400, as the real
    parser answers."""

    def __init__(self, text: str, entity_set: str, properties: Mapping[str, str]) -> None:
        self.text = text
        self.entity_set = entity_set
        self.properties = properties
        self.tokens = _lex(text)
        self.pos = 0
        self.depth = 0

    def parse(self) -> Filter:
        if not self.tokens:
            raise ODataError(400, "The $filter expression is empty.")
        node = self._or()
        if self.pos < len(self.tokens):
            self._syntax_error(self.tokens[self.pos])
        return node

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

    def _or(self) -> Filter:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Junction("or", tuple(parts))

    def _and(self) -> Filter:
        parts = [self._primary()]
        while self._keyword("and"):
            parts.append(self._primary())
        return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))

    def _primary(self) -> Filter:
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

    def _comparison(self) -> Comparison:
        name, function = self._operand()
        token = self._next("an operator")
        if token.kind != "ident" or token.value not in _OPERATOR_KINDS:
            if token.kind == "ident" and token.value in _UNSUPPORTED_OPERATORS:
                raise ODataError(
                    400, f"The operator '{token.value}' is not supported by this service."
                )
            self._syntax_error(token, "'eq', 'ne', 'gt', 'ge', 'lt' or 'le'")
        op: Operator = token.value
        literal = self._literal()
        edm_type = self.properties[name]
        self._check_types(name, edm_type, function is not None, op, literal)
        return Comparison(name, op, literal, edm_type, function)

    def _check_types(
        self, name: str, edm_type: str, function: bool, op: Operator, literal: _Literal
    ) -> None:
        if function and edm_type != _STRING:
            raise ODataError(
                400, f"No function signature matches the argument '{name}' ({edm_type})."
            )
        if op != "eq" and edm_type not in _ORDERED_TYPES:
            raise ODataError(
                400,
                f"The operator '{op}' is not supported by this service on the property "
                f"'{name}' ({edm_type}); it takes 'eq' only.",
            )
        if literal is None:
            if op not in ("eq", "ne"):
                raise ODataError(400, f"The operator '{op}' cannot compare '{name}' with null.")
            return
        literal_type = (
            _BOOL if isinstance(literal, bool)
            else _STRING if isinstance(literal, str)
            else _DATE if isinstance(literal, datetime)
            else _INT64
        )  # fmt: skip
        compatible = literal_type == edm_type or (
            literal_type == _INT64 and edm_type in (_INT32, _INT64)
        )
        if not compatible:
            raise ODataError(
                400,
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{edm_type}' and '{literal_type}' for operator kind '{_OPERATOR_KINDS[op]}'.",
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
        if token.kind in ("string", "int", "datetime"):
            value: str | int | datetime = token.value
            return value
        if token.kind == "ident" and token.value in ("true", "false"):
            return bool(token.value == "true")
        if token.kind == "ident" and token.value == "null":
            return None
        self._syntax_error(token, "a literal")


def parse_filter(text: str, entity_set: str) -> Filter:
    """Compile an OData ``$filter`` for one of the simulated entity sets (400 on error);
    the result is the predicate on an entity."""
    return _FilterParser(text, entity_set, _ENTITY_SETS[entity_set]).parse()


def _read_key(text: str) -> str:
    """The collection key ``'PS100123'`` (a single OData string literal)."""
    tokens = _lex(text, what="the key")
    if len(tokens) != 1 or tokens[0].kind != "string":
        raise ODataError(
            400, f"The key value '{text}' is not a valid string literal for CollectionID."
        )
    return str(tokens[0].value)
