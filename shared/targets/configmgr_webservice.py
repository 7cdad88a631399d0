"""The community ConfigMgr WebService (SOAP 1.1) as a membership target.

``AddCMComputerToCollection(secret, resourceName, collectionId)`` resolves the name
itself with an unescaped LIKE and takes the last match, and it answers only true or
false. So that it can never add a wrong device, cm-remediate calls it only for a name
that has exactly one discovery record and holds no LIKE wildcard.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeXml
import requests

from shared.domain.membership import ChangeResult, MembershipChange
from shared.errors import TargetRefused, WebServiceRefused, WebServiceUnavailable
from shared.platform.http import HttpPipeline, RemoteService
from shared.platform.retry import RetryPolicy

NAMESPACE: Final = "http://www.scconfigmgr.com"
_SOAP: Final = "http://schemas.xmlsoap.org/soap/envelope/"
_LIKE_WILDCARDS: Final = ("%", "_", "[", "]", "'")
_HEADERS: Final = {
    "Content-Type": "text/xml; charset=utf-8",
    "SOAPAction": f'"{NAMESPACE}/AddCMComputerToCollection"',
}

#: IIS authentication or an IP restriction refuses with 401 or 403: no token to refresh.
_ACCESS_HINT: Final = "check WEBSERVICE_URL and the site's authentication and IP restrictions"
_SERVICE: Final = RemoteService(
    name="web service",
    unavailable=WebServiceUnavailable,
    refused=WebServiceRefused,
    url_hint="check WEBSERVICE_URL",
    auth_hint=_ACCESS_HINT,
    forbidden_hint=_ACCESS_HINT,
    protocol="soap",
)


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
        self, url: str, secret: str, session: requests.Session, *, retry: RetryPolicy | None = None
    ) -> None:
        self._url = url
        self._secret = secret
        self._http = HttpPipeline(session, _SERVICE, retry=retry)

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
        response = self._http.request(
            "POST", self._url, what="the call", data=body, headers=_HEADERS
        )
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

    def run_deferred(self) -> None:
        """Nothing deferred: the web service refreshes the collection after every add."""
