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
    """An Entra error answer: ``error``, AADSTS code and message."""

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        *,
        status: int = 400,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{code}")
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


def error_response(request: HttpRequest, refusal: Refusal, authority_host: str) -> HttpResponse:
    """The answer Entra sends for a refusal, with its trace and correlation IDs."""
    trace_id = str(uuid.uuid4())
    correlation_id = request.header("client-request-id") or str(uuid.uuid4())
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    payload: dict[str, object] = {
        "error": refusal.error,
        "error_description": f"AADSTS{refusal.code}: {refusal.message}\r\n"
        f"Trace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
        f"Timestamp: {timestamp}",
        "error_codes": [refusal.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{authority_host}/error?code={refusal.code}",
        **refusal.extra,
    }
    headers = {**NO_CACHE, "x-ms-request-id": trace_id, "client-request-id": correlation_id}
    return HttpResponse.json(refusal.status, payload, headers)
