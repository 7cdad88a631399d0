"""Entra's error answers: a refusal (OAuth error, AADSTS code, message) and its wire form."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from devstack.https import HttpRequest, HttpResponse

#: Headers of every token endpoint answer.
NO_CACHE: Final = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class Refusal(Exception):
    """An Entra error answer: ``error``, AADSTS code and message.

    ``code`` None is an answer Entra is not known to send (an RFC error behind an
    opt-in flag): it goes out without ``error_codes`` and without an AADSTS prefix.
    """

    def __init__(
        self,
        error: str,
        code: int | None,
        message: str,
        *,
        status: int = 400,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{code}" if code is not None else error)
        self.error, self.code, self.message, self.status = error, code, message, status
        self.extra = dict(extra or {})


def missing(name: str) -> Refusal:
    """The refusal of a request without a parameter it needs."""
    return Refusal(
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def unknown_tenant(tenant: str, error: str) -> Refusal:
    """The refusal of a request to a tenant this simulator is not."""
    return Refusal(
        error,
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
        "and are signing into the correct cloud. Check with your subscription "
        "administrator, this may happen if there are no active subscriptions for the "
        "tenant.",
    )


def unknown_client(client_id: str, tenant_name: str) -> Refusal:
    """The refusal of a client ID the tenant has no application for."""
    return Refusal(
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory "
        f"'{tenant_name}'. This can happen if the application has not been "
        "installed by the administrator of the tenant or consented to by any user "
        "in the tenant. You may have sent your authentication request to the wrong "
        "tenant.",
    )


def entra_time(at: float) -> str:
    """A time as Entra's messages write it: ``2018-10-19T17:26:59.8511467Z``."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def timespan(seconds: float) -> str:
    """A duration as .NET writes a TimeSpan: ``90.00:00:00`` (days.hours:minutes:seconds)."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


def error_response(
    request: HttpRequest,
    refusal: Refusal,
    authority_host: str,
    *,
    status: int | None = None,
) -> HttpResponse:
    """The answer Entra sends for a refusal, with its trace and correlation IDs
    (``status`` overrides the refusal's own, for endpoints that answer errors with 200)."""
    trace_id = str(uuid.uuid4())
    correlation_id = request.header("client-request-id") or str(uuid.uuid4())
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    prefix = f"AADSTS{refusal.code}: " if refusal.code is not None else ""
    payload: dict[str, object] = {
        "error": refusal.error,
        "error_description": f"{prefix}{refusal.message}\r\n"
        f"Trace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
        f"Timestamp: {timestamp}",
    }
    if refusal.code is not None:
        payload["error_codes"] = [refusal.code]
    payload.update(timestamp=timestamp, trace_id=trace_id, correlation_id=correlation_id)
    if refusal.code is not None:
        payload["error_uri"] = f"{authority_host}/error?code={refusal.code}"
    payload.update(refusal.extra)
    headers = {**NO_CACHE, "x-ms-request-id": trace_id, "client-request-id": correlation_id}
    return HttpResponse.json(refusal.status if status is None else status, payload, headers)
