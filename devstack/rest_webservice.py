"""A customer's REST web service behind Entra ID: the ``WEBSERVICE_KIND=rest`` target.

It accepts app-only tokens only (``roles`` claim with the required role), checked
against the Entra ID simulator's keys, and keeps direct members per collection.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from devstack.entra import EntraSimulator
from devstack.https import HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.tls import LocalCA

PATH = "/api/remediation"


@dataclass(frozen=True, slots=True)
class RestCall:
    """One POST as the service saw it."""

    status: int
    action: str | None
    collection_id: str | None
    resource_id: int | None
    result: str | None


class RestWebServiceSimulator(HttpsSimulator):
    """``POST /api/remediation`` with ``{action, collection_id, resource_id, ...}``."""

    def __init__(
        self,
        ca: LocalCA,
        entra: EntraSimulator,
        *,
        audience: str,
        role: str = "Remediation.Write",
        collections: Iterable[str] = (),
    ) -> None:
        self._entra = entra
        self._audience = audience
        self._role = role
        self._lock = threading.Lock()
        self._members: dict[str, set[int]] = {c.upper(): set() for c in collections}
        self._calls: list[RestCall] = []
        self._server = LocalHttpsServer(ca.server_context(), self._handle, name="rest webservice")

    @property
    def url(self) -> str:
        """The endpoint to put in WEBSERVICE_URL."""
        return f"https://localhost:{self.port}{PATH}"

    def members(self, collection_id: str) -> set[int]:
        """Direct members of a collection."""
        with self._lock:
            return set(self._members.get(collection_id.upper(), set()))

    @property
    def calls(self) -> list[RestCall]:
        """Every POST, in order."""
        with self._lock:
            return list(self._calls)

    def _answer(self, status: int, payload: dict[str, Any], body: dict[str, Any]) -> HttpResponse:
        resource = body.get("resource_id")
        with self._lock:
            self._calls.append(
                RestCall(
                    status,
                    body.get("action"),
                    body.get("collection_id"),
                    resource if isinstance(resource, int) else None,
                    payload.get("result"),
                )
            )
        return HttpResponse.json(status, payload)

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.path != PATH:
            return HttpResponse.json(404, {"error": "not found"})
        if request.method != "POST":
            return HttpResponse.json(405, {"error": "method not allowed"})
        authorization = request.header("authorization") or ""
        if not authorization.startswith("Bearer "):
            return HttpResponse.json(401, {"error": "no bearer token"})
        try:
            claims = self._entra.verify(authorization.removeprefix("Bearer "), self._audience)
        except jwt.InvalidTokenError as error:
            return HttpResponse.json(401, {"error": f"invalid token: {error}"})
        if self._role not in claims.get("roles", []) or "scp" in claims:
            return HttpResponse.json(403, {"error": f"an app-only token with role {self._role}"})
        try:
            body = json.loads(request.body)
        except ValueError:
            return HttpResponse.json(400, {"error": "not JSON"})
        collection = str(body.get("collection_id", "")).upper()
        resource = body.get("resource_id")
        action = body.get("action")
        if collection not in self._members:
            return self._answer(404, {"error": f"no collection {collection}"}, body)
        if not isinstance(resource, int) or action not in ("add", "remove"):
            return self._answer(400, {"error": "resource_id and action are required"}, body)
        with self._lock:
            members = self._members[collection]
            if action == "add":
                result = "already-member" if resource in members else "added"
                members.add(resource)
            else:
                result = "removed" if resource in members else "not-member"
                members.discard(resource)
        return self._answer(200, {"result": result}, body)
