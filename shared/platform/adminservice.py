"""The ConfigMgr AdminService as a remote service: OData v4 over HTTPS, Entra ID tokens.

One instance per process, shared by whoever reads or writes through the AdminService
(the export reads status messages, the targets find devices and change rules). It
knows the protocol (the ``wmi/`` route, query options, literals, the error shape), not
what the classes mean. Every call goes through :class:`shared.platform.http.HttpPipeline`:
timeouts, retries of 429/5xx and dropped connections honouring Retry-After, one fresh
token after a 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from shared.errors import AdminServiceRefused, AdminServiceUnavailable
from shared.platform.http import DEFAULT_TIMEOUT, HttpPipeline, RemoteService, odata_error
from shared.platform.retry import RetryPolicy
from shared.platform.telemetry import telemetry
from shared.platform.tokens import TokenProvider

SERVICE = RemoteService(
    name="AdminService",
    unavailable=AdminServiceUnavailable,
    refused=AdminServiceRefused,
    url_hint="check ADMINSERVICE_URL and the cloud management gateway",
    auth_hint="check ADMINSERVICE_SCOPE (the token's audience) and ENTRA_TENANT_ID (its issuer)",
    forbidden_hint="is the service account a ConfigMgr administrative user with rights on the "
    "collection, and is it exempt from MFA?",
)

Entity = dict[str, Any]


def odata_string(value: str) -> str:
    """An OData string literal: quoted, with every ``'`` doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(value: datetime) -> str:
    """An OData DateTimeOffset literal: unquoted ISO 8601 in UTC with ``Z``."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: object) -> datetime | None:
    """A DateTimeOffset the service sent, in UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _operation(method: str, path: str) -> str:
    """The request without keys or query options, for metrics: ``GET SMS_R_System``,
    ``POST AddMembershipRule``, ``GET $metadata``."""
    resource = path.split("?", 1)[0]
    if "/AdminService." in resource:
        return f"{method} {resource.rsplit('/AdminService.', 1)[1]}"
    last = resource.rstrip("/").rsplit("/", 1)[-1]
    return f"{method} {last.split('(', 1)[0]}"


class AdminService:
    """Reads WMI classes and calls their actions through the AdminService."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        session: requests.Session,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent: int | None = None,
    ) -> None:
        self._base = base_url if base_url.endswith("/") else base_url + "/"
        self._tokens = tokens
        self._http = HttpPipeline(
            session,
            SERVICE,
            tokens=tokens,
            retry=retry,
            timeout=timeout,
            sleep=sleep,
            max_concurrent=max_concurrent,
        )

    @property
    def base_url(self) -> str:
        """The AdminService base URL (ends with a slash)."""
        return self._base

    def token(self) -> None:
        """Acquire a token (from the cache if it is fresh): proves the credentials."""
        self._tokens.token()

    def check(self) -> None:
        """Read ``v1.0/$metadata``: proves the URL, TLS and the token."""
        response = self._request("GET", "v1.0/$metadata", what="the metadata document")
        if response.status_code != 200:
            raise AdminServiceRefused(
                f"AdminService metadata answered {response.status_code}",
                status=response.status_code,
            )

    def _request(
        self, method: str, path: str, *, what: str, body: dict[str, Any] | None = None
    ) -> requests.Response:
        operation = _operation(method, path)
        started = time.monotonic()
        try:
            response = self._http.request(method, self._base + path, what=what, body=body)
        except Exception as error:  # the pipeline's typed errors, after its retries
            failure = {"operation": operation, "failure": type(error).__name__}
            telemetry.record("cmremediate.adminservice.failures", 1, failure)
            raise
        status = response.status_code
        elapsed_ms = (time.monotonic() - started) * 1000
        telemetry.record(
            "cmremediate.adminservice.duration",
            elapsed_ms,
            {"operation": operation, "status": str(status)},
        )
        # A 404 on a read is an answer (no such instance); any other 4xx/5xx a failure.
        if status >= 400 and not (status == 404 and method == "GET"):
            failure = {"operation": operation, "failure": f"HTTP {status}"}
            telemetry.record("cmremediate.adminservice.failures", 1, failure)
        return response

    def _get_json(self, path: str, what: str) -> dict[str, Any] | None:
        """The answer's JSON document; None on 404."""
        response = self._request("GET", path, what=what)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AdminServiceRefused(
                f"AdminService refused {what} ({response.status_code} {odata_error(response)})",
                status=response.status_code,
            )
        document: dict[str, Any] = response.json()
        return document

    def query(
        self,
        wmi_class: str,
        *,
        what: str,
        where: str | None = None,
        select: Sequence[str] = (),
        orderby: str | None = None,
        top: int | None = None,
    ) -> list[Entity]:
        """``wmi/<class>`` with ``$filter=<where>`` and the other query options (values
        already OData literals): the entities of ``value``."""
        options = []
        if where is not None:
            options.append("$filter=" + quote(where, safe=""))
        if select:
            options.append("$select=" + quote(",".join(select), safe=","))
        if orderby is not None:
            options.append("$orderby=" + quote(orderby, safe=""))
        if top is not None:
            options.append(f"$top={int(top)}")
        path = f"wmi/{wmi_class}" + ("?" + "&".join(options) if options else "")
        value = (self._get_json(path, what) or {}).get("value", [])
        return list(value) if isinstance(value, list) else []

    def get_by_key(self, wmi_class: str, key: str, *, what: str) -> Entity | None:
        """The key GET ``wmi/<class>('<key>')`` (lazy properties included), or None when
        there is no such instance. The service answers with the entity itself or wrapped
        in ``value`` (a missing key may also come back as an empty ``value``)."""
        document = self._get_json(f"wmi/{wmi_class}({odata_string(key)})", what)
        if document is None:
            return None
        if isinstance(document.get("value"), list):
            return document["value"][0] if document["value"] else None
        return document

    def action(self, wmi_class: str, key: str, method: str, body: Entity, *, what: str) -> None:
        """POST an action bound to one instance; raise unless it succeeded (2xx and
        ``ReturnValue`` 0 when the answer carries one)."""
        response = self._request(
            "POST",
            f"wmi/{wmi_class}({odata_string(key)})/AdminService.{method}",
            what=what,
            body=body,
        )
        if response.status_code not in (200, 201):
            raise AdminServiceRefused(
                f"AdminService refused {what} ({response.status_code} {odata_error(response)})",
                status=response.status_code,
            )
        try:
            return_value = response.json().get("ReturnValue", 0)
        except (ValueError, AttributeError):
            return_value = 0  # success without a body
        if return_value not in (0, None):
            raise AdminServiceRefused(
                f"AdminService {what} returned ReturnValue {return_value}",
                status=response.status_code,
            )
