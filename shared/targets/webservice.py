"""The customer's web service as a membership target.

``configmgr-webservice``: the community ConfigMgr WebService (SOAP 1.1),
``AddCMComputerToCollection(secret, resourceName, collectionId)``. It resolves the name
itself with an unescaped LIKE and takes the last match, and it answers only true or
false. So that it can never add a wrong device, cm-remediate calls it only for a name
that has exactly one discovery record and holds no LIKE wildcard.

``rest``: a JSON POST to WEBSERVICE_URL with an app-only Entra ID token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeXml
import requests

from shared.domain.membership import ChangeResult, MembershipChange
from shared.errors import ServiceRefused, ServiceUnavailable, TargetRefused
from shared.platform.http import DEFAULT_TIMEOUT, BearerClient, ServiceErrors, retry_after
from shared.platform.retry import RetryPolicy

NAMESPACE: Final = "http://www.scconfigmgr.com"
_SOAP: Final = "http://schemas.xmlsoap.org/soap/envelope/"
_LIKE_WILDCARDS: Final = ("%", "_", "[", "]", "'")


class WebServiceUnavailable(ServiceUnavailable):
    """The web service did not answer, or was failing, after every retry."""


class WebServiceRefused(ServiceRefused):
    """The web service answered no."""


def _envelope(secret: str, resource_name: str, collection_id: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{_SOAP}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body>'
        f'<AddCMComputerToCollection xmlns="{NAMESPACE}">'
        f"<secret>{escape(secret)}</secret>"
        f"<resourceName>{escape(resource_name)}</resourceName>"
        f"<collectionId>{escape(collection_id)}</collectionId>"
        "</AddCMComputerToCollection></soap:Body></soap:Envelope>"
    )


class ConfigMgrWebServiceTarget:
    """``AddCMComputerToCollection`` of the community ConfigMgr WebService."""

    def __init__(
        self,
        url: str,
        secret: str,
        session: requests.Session,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = url
        self._secret = secret
        self._session = session
        self._retry = retry or RetryPolicy(attempts=5)
        self._timeout = timeout
        self._sleep = sleep

    def apply(self, change: MembershipChange, *, dry_run: bool) -> tuple[ChangeResult, str]:
        """Add through the web service, after the checks that keep its LIKE harmless."""
        request = change.request
        if request.action != "add":
            raise TargetRefused("the ConfigMgr WebService target can only add (no remove method)")
        if any(c in request.machine_name for c in _LIKE_WILDCARDS):
            raise TargetRefused(
                f"{request.machine_name!r} holds a character the web service's unescaped LIKE "
                "would treat as a wildcard or break on; it could add another device"
            )
        if change.named_records != 1:
            raise TargetRefused(
                f"{change.named_records} discovery records are named {request.machine_name!r}; "
                "the web service resolves names itself and takes the last match, which may "
                f"not be resource {change.resource_id}: use target 'adminservice' for it"
            )
        change.before_add()
        if dry_run:
            return "added", "dry run: would call AddCMComputerToCollection"
        if self._call(request.machine_name, request.collection_id):
            return "added", "AddCMComputerToCollection answered true"
        raise TargetRefused(
            "AddCMComputerToCollection answered false: check WEBSERVICE_SECRET, that the "
            "collection exists and that the web service's account may modify it"
        )

    def _call(self, resource_name: str, collection_id: str) -> bool:
        body = _envelope(self._secret, resource_name, collection_id).encode("utf-8")
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{NAMESPACE}/AddCMComputerToCollection"',
        }
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.post(
                    self._url, data=body, headers=headers, timeout=self._timeout
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if isinstance(error, requests.exceptions.SSLError):
                    raise WebServiceRefused(
                        f"web service TLS certificate was refused: {error}; put its CA in "
                        "TLS_CA_BUNDLE",
                        status=0,
                    ) from None
                if attempt >= self._retry.attempts:
                    raise WebServiceUnavailable(
                        f"web service unreachable after {attempt} attempts "
                        f"({type(error).__name__}); check WEBSERVICE_URL"
                    ) from None
                self._sleep(self._retry.backoff(attempt))
                continue
            if response.status_code in (401, 403):
                # IIS authentication or an IP restriction: retrying will not help.
                raise WebServiceRefused(
                    f"web service refused the call with {response.status_code}: check "
                    "WEBSERVICE_URL and the site's authentication and IP restrictions",
                    status=response.status_code,
                )
            if response.status_code in (429, 502, 503, 504):
                if attempt >= self._retry.attempts:
                    raise WebServiceUnavailable(
                        f"web service answered {response.status_code} {attempt} times"
                    )
                self._sleep(self._retry.backoff(attempt, retry_after(response)))
                continue
            return self._result(response)

    @staticmethod
    def _result(response: requests.Response) -> bool:
        try:
            document = SafeXml.fromstring(response.content)
        except SafeXml.ParseError:
            raise WebServiceUnavailable(
                f"web service answered {response.status_code} with something that is not XML"
            ) from None
        fault = document.find(f".//{{{_SOAP}}}Fault")
        if fault is not None:
            text = (fault.findtext("faultstring") or "").strip()[:300]
            raise TargetRefused(f"the web service answered a SOAP fault: {text}")
        result = document.findtext(f".//{{{NAMESPACE}}}AddCMComputerToCollectionResult")
        if result is None:
            raise WebServiceUnavailable("the web service's answer has no result element")
        return bool(result.strip().lower() == "true")

    def flush(self) -> None:
        """Nothing deferred: the web service refreshes the collection after every add."""


class RestWebServiceTarget:
    """A JSON POST per change, with an app-only token (docs/remediation.md, "REST")."""

    def __init__(self, url: str, http: BearerClient) -> None:
        self._url = url
        self._http = http

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

    def flush(self) -> None:
        """Nothing deferred."""


def rest_errors() -> ServiceErrors:
    """How the REST target's failures read."""
    return ServiceErrors(
        name="web service",
        unavailable=WebServiceUnavailable,
        refused=WebServiceRefused,
        url_hint="check WEBSERVICE_URL",
        auth_hint="check WEBSERVICE_SCOPE and the app registration's credential",
        forbidden_hint="does the app registration have the web service's app role?",
    )
