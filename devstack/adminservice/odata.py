"""The OData v4 rules every answer keeps: the answer and error shapes, the system query
options (``$filter`` is parsed in ``filter``), and how action bodies are read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl

from devstack.adminservice.entities import _STRING

_JSON_TYPE: Final = (
    "application/json; odata.metadata=minimal; odata.streaming=true; "
    "IEEE754Compatible=false; charset=utf-8"
)
_XML_TYPE: Final = "application/xml; charset=utf-8"
#: The largest document read: a request body, or the issuer's JWKS.
_MAX_BODY: Final = 1024 * 1024


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


# -- query options -------------------------------------------------------------------------


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
        if name not in ("$filter", "$select", "$orderby", "$top", "$skip", "$format"):
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


def _count(option: str, value: str) -> int:
    """The value of ``$top`` or ``$skip``: a non-negative integer."""
    if not value.isascii() or not value.isdigit():
        raise ODataError(400, f"Invalid value '{value}' for {option} query option.")
    return int(value)


#: One ``$orderby`` item: the property, and whether it is descending.
OrderBy = tuple[tuple[str, bool], ...]


def _orderby(value: str | None, properties: Mapping[str, str], entity_set: str) -> OrderBy:
    """``Property [asc|desc]``, comma separated; strings are refused (see the package
    docstring), as are unknown and repeated properties."""
    if value is None:
        return ()
    order: list[tuple[str, bool]] = []
    for item in value.split(","):
        words = item.split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ODataError(
                400, f"The $orderby item '{item.strip()}' is not 'Property [asc|desc]'."
            )
        name = words[0]
        edm_type = properties.get(name)
        if edm_type is None:
            raise ODataError(
                400,
                f"Could not find a property named '{name}' on type "
                f"'AdminService.{entity_set}' in $orderby.",
            )
        if edm_type == _STRING:
            raise ODataError(
                400,
                f"This service does not order by the string property '{name}' in $orderby.",
            )
        if any(name == seen for seen, _ in order):
            raise ODataError(
                400, f"Duplicate property named '{name}' is not supported in $orderby."
            )
        order.append((name, words[-1] == "desc"))
    return tuple(order)


# -- action bodies -------------------------------------------------------------------------


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
