"""The ConfigMgr AdminService (OData v4 over HTTPS, Entra ID bearer token).

One client per process. Every value in a filter is an escaped OData literal. Every
call goes through :class:`shared.platform.http.HttpPipeline`: timeouts, retries of
429/5xx and dropped connections honouring Retry-After, one fresh token after a 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from shared.domain.devices import DeviceRecord, flag, is_text
from shared.errors import AdminServiceRefused, AdminServiceUnavailable
from shared.platform.http import DEFAULT_TIMEOUT, HttpPipeline, RemoteService, odata_error
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import TokenProvider

_DEVICE_PROPERTIES = (
    "ResourceId,Name,NetbiosName,Client,Active,Obsolete,Decommissioned,CreationDate"
)


_SERVICE = RemoteService(
    name="AdminService",
    unavailable=AdminServiceUnavailable,
    refused=AdminServiceRefused,
    url_hint="check ADMINSERVICE_URL and the cloud management gateway",
    auth_hint="check ADMINSERVICE_SCOPE (the token's audience) and ENTRA_TENANT_ID (its issuer)",
    forbidden_hint="is the service account a ConfigMgr administrative user with rights on the "
    "collection, and is it exempt from MFA?",
)


def odata_string(value: str) -> str:
    """An OData string literal: quoted, with every ``'`` doubled."""
    return "'" + value.replace("'", "''") + "'"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None)


class AdminServiceClient:
    """Finds devices and changes direct membership rules through the AdminService."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        session: requests.Session,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base = base_url if base_url.endswith("/") else base_url + "/"
        self._tokens = tokens
        self._http = HttpPipeline(
            session, _SERVICE, tokens=tokens, retry=retry, timeout=timeout, sleep=sleep
        )

    @property
    def base_url(self) -> str:
        """The AdminService base URL (ends with a slash)."""
        return self._base

    def _request(
        self, method: str, path: str, *, what: str, body: dict[str, Any] | None = None
    ) -> requests.Response:
        return self._http.request(method, self._base + path, what=what, body=body)

    def _get_json(self, path: str, what: str) -> dict[str, Any] | None:
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

    def find_devices(self, netbios_name: str) -> list[DeviceRecord]:
        """SMS_R_System records whose NetbiosName equals the name (an escaped literal)."""
        if not is_text(netbios_name):
            return []  # no URL can carry it, and no record is named with it
        query = (
            "$filter="
            + quote(f"NetbiosName eq {odata_string(netbios_name)}", safe="")
            + "&$select="
            + quote(_DEVICE_PROPERTIES, safe=",")
        )
        document = self._get_json(f"wmi/SMS_R_System?{query}", f"devices named {netbios_name!r}")
        return [
            DeviceRecord(
                resource_id=int(item["ResourceId"]),
                name=item.get("Name"),
                netbios_name=item.get("NetbiosName"),
                client=flag(item.get("Client")),
                active=flag(item.get("Active")),
                obsolete=flag(item.get("Obsolete")),
                decommissioned=flag(item.get("Decommissioned")),
                creation_date=_parse_time(item.get("CreationDate")),
            )
            for item in (document or {}).get("value", [])
        ]

    def collection_rules(self, collection_id: str) -> list[dict[str, Any]] | None:
        """The collection's membership rules (the lazy property of the key GET), or
        None when the collection does not exist."""
        document = self._get_json(
            f"wmi/SMS_Collection({odata_string(collection_id)})", f"collection {collection_id}"
        )
        if document is None:
            return None
        # The key GET answers with the entity itself or wrapped in "value" (a missing
        # key may also come back as an empty "value").
        if isinstance(document.get("value"), list):
            if not document["value"]:
                return None
            entity = document["value"][0]
        else:
            entity = document
        rules: list[dict[str, Any]] = entity.get("CollectionRules") or []
        return rules

    def is_member(self, collection_id: str, resource_id: int) -> bool:
        """True when the device is in the collection by any rule."""
        query = "$filter=" + quote(
            f"CollectionID eq {odata_string(collection_id)} and ResourceID eq {int(resource_id)}",
            safe="",
        )
        document = self._get_json(
            f"wmi/SMS_FullCollectionMembership?{query}",
            f"membership of {resource_id} in {collection_id}",
        )
        return bool((document or {}).get("value"))

    def _rule_call(self, collection_id: str, method: str, resource_id: int, rule_name: str) -> None:
        body = {
            "collectionRule": {
                "@odata.type": "#AdminService.SMS_CollectionRuleDirect",
                "ResourceClassName": "SMS_R_System",
                "RuleName": rule_name,
                "ResourceID": int(resource_id),
            }
        }
        what = f"{method} of {resource_id} on {collection_id}"
        response = self._request(
            "POST",
            f"wmi/SMS_Collection({odata_string(collection_id)})/AdminService.{method}",
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
        except ValueError:
            return_value = 0  # success without a body
        if return_value not in (0, None):
            raise AdminServiceRefused(
                f"AdminService {what} returned ReturnValue {return_value}",
                status=response.status_code,
            )

    def add_direct_rule(self, collection_id: str, resource_id: int, rule_name: str) -> None:
        """AddMembershipRule with a direct rule for the device."""
        self._rule_call(collection_id, "AddMembershipRule", resource_id, rule_name)

    def delete_direct_rule(self, collection_id: str, resource_id: int, rule_name: str) -> None:
        """DeleteMembershipRule for the device's direct rule."""
        self._rule_call(collection_id, "DeleteMembershipRule", resource_id, rule_name)

    def request_refresh(self, collection_id: str) -> None:
        """Ask the site to evaluate the collection (expensive: once per batch at most)."""
        response = self._request(
            "POST",
            f"wmi/SMS_Collection({odata_string(collection_id)})/AdminService.RequestRefresh",
            what=f"refresh of {collection_id}",
            body={},
        )
        if response.status_code not in (200, 201):
            raise AdminServiceRefused(
                f"AdminService refused a refresh of {collection_id} ({response.status_code})",
                status=response.status_code,
            )
