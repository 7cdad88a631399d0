"""One request through the vault, in the order it is judged: the bearer token (401),
api-version (400), the route and the names in it (404/405/400), RBAC (403), then the
operation itself (404, 409, 400 for a bad body, 403 for a disabled secret)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from devstack.https import HttpRequest, HttpResponse
from devstack.keyvault.auth import TokenValidator
from devstack.keyvault.errors import (
    VaultError,
    bad_parameter,
    invalid_name,
    not_simulated,
    secret_disabled,
)
from devstack.keyvault.model import (
    API_VERSIONS,
    MAX_CONTENT_TYPE_CHARS,
    MAX_RESULTS,
    MAX_VALUE_BYTES,
    DataAction,
    VaultRequest,
    is_valid_name,
)
from devstack.keyvault.rbac import RoleAssignments
from devstack.keyvault.store import (
    SecretStore,
    deleted_bundle,
    secret_bundle,
    secret_item,
)

_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class _Route:
    operation: str
    action: DataAction | None  # None: a real operation the simulator does not serve
    name: str | None = None
    version: str | None = None


_LIST = _Route("GetSecrets", DataAction.READ_METADATA)


def _route(method: str, path: str) -> _Route:
    """The operation a method and path name (names not validated yet)."""
    parts = path.split("/")[1:]
    while len(parts) > 1 and parts[0] == "":  # "//secrets" as the REST samples write it
        parts.pop(0)
    collection, rest = (parts[0].lower(), parts[1:]) if parts else ("", [])
    allowed: dict[str, _Route]
    if collection == "secrets" and rest in ([], [""]):
        allowed = {"GET": _LIST}
    elif collection == "secrets" and rest == ["restore"]:
        allowed = {"POST": _Route("RestoreSecret", None)}
    elif collection == "secrets" and len(rest) == 1:
        name = unquote(rest[0])
        allowed = {
            "PUT": _Route("SetSecret", DataAction.SET, name),
            "GET": _Route("GetSecret", DataAction.GET, name),
            "DELETE": _Route("DeleteSecret", DataAction.DELETE, name),
        }
    elif collection == "secrets" and len(rest) == 2:
        name, tail = unquote(rest[0]), unquote(rest[1])
        if tail == "versions":
            allowed = {"GET": _Route("GetSecretVersions", DataAction.READ_METADATA, name)}
        elif tail == "backup":
            allowed = {"POST": _Route("BackupSecret", None, name)}
        else:  # "" is the latest version, as the SDK asks for it
            allowed = {
                "GET": _Route("GetSecret", DataAction.GET, name, tail),
                "PATCH": _Route("UpdateSecret", DataAction.UPDATE, name, tail),
            }
    elif collection == "deletedsecrets" and rest in ([], [""]):
        allowed = {"GET": _Route("GetDeletedSecrets", None)}
    elif collection == "deletedsecrets" and len(rest) == 1:
        name = unquote(rest[0])
        allowed = {
            # Reading a deleted secret's metadata: readMetadata (unverified).
            "GET": _Route("GetDeletedSecret", DataAction.READ_METADATA, name),
            "DELETE": _Route("PurgeDeletedSecret", DataAction.PURGE, name),
        }
    elif collection == "deletedsecrets" and len(rest) == 2 and rest[1] == "recover":
        allowed = {"POST": _Route("RecoverDeletedSecret", DataAction.RECOVER, unquote(rest[0]))}
    else:
        raise VaultError(404, "NotFound", f"There is no Key Vault secrets operation at {path}.")
    route = allowed.get(method)
    if route is None:
        raise VaultError(
            405,
            "MethodNotAllowed",
            f"The method {method} is not allowed on {path}; allowed: {', '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
    return route


class Dispatcher:
    """Answers requests against the store, as ``vault_url()`` names the vault."""

    def __init__(
        self,
        *,
        validator: TokenValidator,
        rbac: RoleAssignments,
        store: SecretStore,
        vault_url: Callable[[], str],
        record: Callable[[VaultRequest], None],
    ) -> None:
        self._validator = validator
        self._rbac = rbac
        self._store = store
        self._vault_url = vault_url
        self._record = record

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one request, logged."""
        state: dict[str, Any] = {}
        try:
            response = self._serve(request, state)
        except VaultError as error:
            response = error.response()
        route: _Route | None = state.get("route")
        self._record(
            VaultRequest(
                method=request.method,
                path=request.path,
                principal=state.get("principal"),
                status=response.status,
                operation=route.operation if route else None,
                secret=route.name if route else None,
            )
        )
        return response

    def _serve(self, request: HttpRequest, state: dict[str, Any]) -> HttpResponse:
        caller = self._validator.authenticate(request.header("authorization"))
        state["principal"] = caller.oid
        api_version = _single(request, "api-version")
        if api_version is None:
            raise bad_parameter("The request is missing the required query parameter api-version.")
        if api_version not in API_VERSIONS:
            raise bad_parameter(
                f"The specified version ({api_version}) is not recognized. Consider using the "
                "latest supported version (2026-04-01)."
            )
        route = _route(request.method, request.path)
        state["route"] = route
        if route.action is None:
            raise not_simulated(request.method, request.path)
        if route.name is not None and not is_valid_name(route.name):
            raise invalid_name(route.name)
        self._rbac.check(caller, route.action, route.name)
        return self._operate(route, request, api_version)

    def _operate(self, route: _Route, request: HttpRequest, api_version: str) -> HttpResponse:
        vault = self._vault_url()
        store = self._store
        name = route.name or ""
        match route.operation:
            case "SetSecret":
                fields = _set_fields(_json_object(request.body), require_value=True)
                version = store.set(name, **fields)
                return _ok(secret_bundle(version, vault))
            case "GetSecret":
                version = store.get(name, route.version)
                if not version.enabled:
                    raise secret_disabled("get")
                return _ok(secret_bundle(version, vault))
            case "UpdateSecret":
                fields = _set_fields(_json_object(request.body), require_value=False)
                fields.pop("value", None)  # a PATCH never changes the value
                changed = store.update(name, route.version, **fields)
                return _ok(secret_bundle(changed, vault, with_value=False))
            case "GetSecretVersions":
                versions = sorted(store.versions(name), key=lambda v: v.version)
                items = [secret_item(v, vault, versioned=True) for v in versions]
                return _ok(self._page(items, request, api_version))
            case "GetSecrets":
                items = [secret_item(v, vault, versioned=False) for v in store.latest_versions()]
                return _ok(self._page(items, request, api_version))
            case "DeleteSecret":
                return _ok(deleted_bundle(store.delete(name), vault))
            case "GetDeletedSecret":
                return _ok(deleted_bundle(store.deleted(name), vault))
            case "PurgeDeletedSecret":
                store.purge(name)
                return HttpResponse(204, b"", None)
            case "RecoverDeletedSecret":
                return _ok(secret_bundle(store.recover(name), vault, with_value=False))
        raise not_simulated(request.method, request.path)  # pragma: no cover

    def _page(
        self, items: list[dict[str, Any]], request: HttpRequest, api_version: str
    ) -> dict[str, Any]:
        """One page of a list and the ``nextLink`` to the next (absolute, with the
        vault's port 443 written out, as the service writes it)."""
        size = _max_results(_single(request, "maxresults"))
        start = _skip(_single(request, "$skiptoken"))
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            origin = urlsplit(self._vault_url())
            token = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
            path = request.path.rstrip("/")
            next_link = (
                f"{origin.scheme}://{origin.hostname}:{origin.port or 443}{path}"
                f"?api-version={api_version}&$skiptoken={token}&maxresults={size}"
            )
        return {"value": page, "nextLink": next_link}


def _ok(payload: dict[str, Any]) -> HttpResponse:
    return HttpResponse(200, json.dumps(payload, separators=(",", ":")).encode("utf-8"), _JSON)


def _single(request: HttpRequest, name: str) -> str | None:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_parameter(f"The query parameter {name} is given more than once.")
    return values[0]


def _max_results(raw: str | None) -> int:
    if raw is None:
        return MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RESULTS:
        raise bad_parameter(f"Invalid maxresults: {raw}. It must be between 1 and {MAX_RESULTS}.")
    return value


def _skip(token: str | None) -> int:
    if token is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_parameter("The $skiptoken is invalid.") from None
    if offset < 0:
        raise bad_parameter("The $skiptoken is invalid.")
    return offset


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return document


def _set_fields(document: dict[str, Any], *, require_value: bool) -> dict[str, Any]:
    """SetSecret/UpdateSecret parameters: value, contentType, tags, attributes."""
    fields: dict[str, Any] = {}
    value = document.get("value")
    if require_value:
        if not isinstance(value, str):
            raise bad_parameter("The request body must have a string property 'value'.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise bad_parameter(
                f"The secret value is {len(value.encode('utf-8'))} bytes; the maximum size "
                f"of a secret value is {MAX_VALUE_BYTES} bytes."
            )
        fields["value"] = value
    content_type = document.get("contentType")
    if content_type is not None:
        if not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE_CHARS:
            raise bad_parameter(
                f"contentType must be a string of at most {MAX_CONTENT_TYPE_CHARS} characters."
            )
        fields["content_type"] = content_type
    tags = document.get("tags")
    if tags is not None:
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise bad_parameter("tags must be an object of string values.")
        fields["tags"] = tags
    attributes = document.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise bad_parameter("attributes must be an object.")
        enabled = attributes.get("enabled")
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise bad_parameter("attributes.enabled must be a boolean.")
            fields["enabled"] = enabled
        for wire, field_name in (("nbf", "not_before"), ("exp", "expires")):
            stamp = attributes.get(wire)
            if stamp is not None:
                if not isinstance(stamp, int) or isinstance(stamp, bool):
                    raise bad_parameter(f"attributes.{wire} must be a number of seconds.")
                fields[field_name] = stamp
    return fields
