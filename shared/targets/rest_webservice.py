"""A customer's REST web service as a membership target: a JSON POST per change to
WEBSERVICE_URL, with an app-only Entra ID token (docs/remediation.md, "REST")."""

from __future__ import annotations

from typing import Any, Final

import requests

from shared.domain.membership import ChangeResult, MembershipChange
from shared.errors import TargetRefused, WebServiceRefused, WebServiceUnavailable
from shared.platform.http import HttpPipeline, RemoteService
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import TokenProvider

_SERVICE: Final = RemoteService(
    name="web service",
    unavailable=WebServiceUnavailable,
    refused=WebServiceRefused,
    url_hint="check WEBSERVICE_URL",
    auth_hint="check WEBSERVICE_SCOPE and the app registration's credential",
    forbidden_hint="does the app registration have the web service's app role?",
)


class RestWebServiceTarget:
    """A JSON POST per change, with an app-only token."""

    def __init__(
        self,
        url: str,
        session: requests.Session,
        tokens: TokenProvider,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._url = url
        self._http = HttpPipeline(session, _SERVICE, tokens=tokens, retry=retry)

    def apply(self, change: MembershipChange, *, dry_run: bool) -> tuple[ChangeResult, str]:
        """POST the change; the answer's ``result`` says what happened."""
        request = change.request
        if request.action == "add":
            change.before_add()
        done: ChangeResult = "added" if request.action == "add" else "removed"
        if dry_run:
            return done, f"dry run: would POST the change to {self._url}"
        payload: dict[str, Any] = {
            "action": request.action,
            "collection_id": request.collection_id,
            "resource_id": change.resource_id,
            "machine_name": request.machine_name,
            "rule": request.rule,
            "site_code": request.site_code,
            # A string: RecordIDs pass 2^53, where JSON numbers lose precision elsewhere.
            "record_id": str(request.record_id),
        }
        what = f"{request.action} of {change.resource_id} on {request.collection_id}"
        response = self._http.request("POST", self._url, what=what, body=payload)
        if response.status_code not in (200, 201, 204):
            raise TargetRefused(
                f"the web service refused {what}: {response.status_code} {response.text[:200]}"
            )
        try:
            result = response.json().get("result", done) if response.content else done
        except ValueError:
            result = done
        allowed = (
            ("added", "already-member") if request.action == "add" else ("removed", "not-member")
        )
        if result not in allowed:
            raise TargetRefused(f"the web service answered result {result!r} for {what}")
        return result, f"web service answered {result}"

    def run_deferred(self) -> None:
        """Nothing deferred."""
