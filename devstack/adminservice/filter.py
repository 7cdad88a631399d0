"""OData ``$filter``: a strict lexer and parser for the subset the project uses, so a
badly escaped literal fails or matches nothing instead of matching everything; and the
collection key literal, read by the same lexer."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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
