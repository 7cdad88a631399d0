"""Devices and direct membership rules through the ConfigMgr AdminService.

What ``SMS_R_System``, ``SMS_Collection`` and ``SMS_FullCollectionMembership`` mean to
cm-remediate, and what ``check`` reads about the rules' collections
(``SMS_DeploymentSummary``, ``SMS_CollectionSettings``; judged in
:mod:`shared.targets.adminservice_review`); the protocol itself (query options,
literals, errors, retries) is :class:`shared.platform.adminservice.AdminService`. Every
value in a filter is an escaped OData literal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from shared.domain.devices import DeviceRecord, flag, is_text
from shared.domain.membership import Membership
from shared.platform.adminservice import AdminService, Entity, odata_string, parse_datetime
from shared.platform.http import DEFAULT_TIMEOUT
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import TokenProvider
from shared.targets.adminservice_batches import MAX_PER_QUERY

_DEVICE_PROPERTIES = (
    "ResourceId",
    "Name",
    "NetbiosName",
    "Client",
    "Active",
    "Obsolete",
    "Decommissioned",
    "CreationDate",
)

#: What ``check`` reads of a collection (``LimitToCollectionName``: the documented
#: data type says DateTime, a documentation slip; it is the name).
COLLECTION_PROPERTIES = (
    "CollectionID",
    "Name",
    "MemberCount",
    "LimitToCollectionID",
    "LimitToCollectionName",
    "ServiceWindowsCount",
)
#: What ``check`` reads of a deployment.
DEPLOYMENT_PROPERTIES = (
    "DeploymentID",
    "CollectionID",
    "SoftwareName",
    "ApplicationName",
    "PackageID",
    "ProgramName",
    "FeatureType",
    "DeploymentIntent",
)


def _by_collection(collection_ids: Sequence[str]) -> list[str]:
    """``CollectionID eq 'A' or ...`` filters for the distinct IDs, at most
    ``MAX_PER_QUERY`` a filter (within ASP.NET OData's default node limit)."""
    wanted = sorted({c.upper() for c in collection_ids})
    return [
        " or ".join(f"CollectionID eq {odata_string(c)}" for c in wanted[i : i + MAX_PER_QUERY])
        for i in range(0, len(wanted), MAX_PER_QUERY)
    ]


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
        max_concurrent: int | None = None,
    ) -> None:
        self.service = AdminService(
            base_url,
            tokens,
            session,
            retry=retry,
            timeout=timeout,
            sleep=sleep,
            max_concurrent=max_concurrent,
        )

    @property
    def base_url(self) -> str:
        """The AdminService base URL (ends with a slash)."""
        return self.service.base_url

    def token(self) -> None:
        """Acquire a token (from the cache if it is fresh): proves the credentials."""
        self.service.token()

    def check(self) -> None:
        """Read ``v1.0/$metadata``: proves the URL, TLS and the token."""
        self.service.check()

    def find_devices(self, netbios_name: str) -> list[DeviceRecord]:
        """SMS_R_System records whose NetbiosName equals the name (an escaped literal)."""
        return self.find_devices_named([netbios_name]).get(netbios_name.casefold(), [])

    def find_devices_named(self, names: Sequence[str]) -> dict[str, list[DeviceRecord]]:
        """SMS_R_System records of several machines in one query, by casefolded name
        (``NetbiosName eq 'a' or NetbiosName eq 'b' ...``, escaped literals)."""
        # A name no URL can carry has no record either.
        wanted = sorted({name for name in names if is_text(name)})
        if not wanted:
            return {}
        entities = self.service.query(
            "SMS_R_System",
            where=" or ".join(f"NetbiosName eq {odata_string(name)}" for name in wanted),
            select=_DEVICE_PROPERTIES,
            what=f"devices named {wanted[0]!r}"
            + (f" and {len(wanted) - 1} more" if len(wanted) > 1 else ""),
        )
        found: dict[str, list[DeviceRecord]] = {}
        for item in entities:
            created = parse_datetime(item.get("CreationDate"))
            record = DeviceRecord(
                resource_id=int(item["ResourceId"]),
                name=item.get("Name"),
                netbios_name=item.get("NetbiosName"),
                client=flag(item.get("Client")),
                active=flag(item.get("Active")),
                obsolete=flag(item.get("Obsolete")),
                decommissioned=flag(item.get("Decommissioned")),
                # Compared with the site database's naive UTC times.
                creation_date=created.replace(tzinfo=None) if created else None,
            )
            found.setdefault(str(record.netbios_name or "").casefold(), []).append(record)
        return found

    def collection_rules(self, collection_id: str) -> list[dict[str, Any]] | None:
        """The collection's membership rules (the lazy property of the key GET), or
        None when the collection does not exist."""
        entity = self.service.get_by_key(
            "SMS_Collection", collection_id, what=f"collection {collection_id}"
        )
        if entity is None:
            return None
        rules: list[dict[str, Any]] = entity.get("CollectionRules") or []
        return rules

    def memberships(self, collection_id: str, resource_ids: Sequence[int]) -> dict[int, Membership]:
        """How each device is in the collection (absent: not at all), in one targeted
        query: its cost depends on the devices asked about, not on the collection."""
        wanted = sorted({int(r) for r in resource_ids})
        if not wanted:
            return {}
        devices = " or ".join(f"ResourceID eq {r}" for r in wanted)
        rows = self.service.query(
            "SMS_FullCollectionMembership",
            where=f"CollectionID eq {odata_string(collection_id)} and ({devices})",
            select=("ResourceID", "IsDirect"),
            what=f"membership of {len(wanted)} device(s) in {collection_id}",
        )
        asked = set(wanted)
        found: dict[int, Membership] = {}
        for row in rows:
            rid = int(row["ResourceID"])
            if rid in asked and found.get(rid) != "direct":
                found[rid] = "direct" if flag(row.get("IsDirect")) else "other"
        return found

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
        self.service.action("SMS_Collection", collection_id, method, body, what=what)

    def add_direct_rule(self, collection_id: str, resource_id: int, rule_name: str) -> None:
        """AddMembershipRule with a direct rule for the device."""
        self._rule_call(collection_id, "AddMembershipRule", resource_id, rule_name)

    def delete_direct_rule(self, collection_id: str, resource_id: int, rule_name: str) -> None:
        """DeleteMembershipRule for the device's direct rule."""
        self._rule_call(collection_id, "DeleteMembershipRule", resource_id, rule_name)

    def request_refresh(self, collection_id: str) -> None:
        """Ask the site to evaluate the collection (expensive: once per batch at most)."""
        self.service.action(
            "SMS_Collection",
            collection_id,
            "RequestRefresh",
            {},
            what=f"refresh of {collection_id}",
        )

    def collections(self, collection_ids: Sequence[str]) -> dict[str, Entity]:
        """The collections that exist among ``collection_ids``, by upper-case ID, with
        ``COLLECTION_PROPERTIES``: one query per ``MAX_PER_QUERY`` IDs (no lazy property,
        so no rule list, however long)."""
        found: dict[str, Entity] = {}
        for where in _by_collection(collection_ids):
            for entity in self.service.query(
                "SMS_Collection",
                where=where,
                select=COLLECTION_PROPERTIES,
                what=f"{where.count(' or ') + 1} collection(s) by ID",
            ):
                found[str(entity.get("CollectionID") or "").upper()] = entity
        return found

    def deployments(self, collection_ids: Sequence[str]) -> list[Entity]:
        """Every deployment (``SMS_DeploymentSummary``: applications, programs, software
        updates, task sequences, baselines...) aimed at one of the collections, with
        ``DEPLOYMENT_PROPERTIES``: one query per ``MAX_PER_QUERY`` IDs."""
        found: list[Entity] = []
        for where in _by_collection(collection_ids):
            found += self.service.query(
                "SMS_DeploymentSummary",
                where=where,
                select=DEPLOYMENT_PROPERTIES,
                what=f"deployments to {where.count(' or ') + 1} collection(s)",
            )
        return found

    def service_windows(self, collection_id: str) -> list[Entity]:
        """The collection's maintenance windows (``SMS_ServiceWindow`` objects): the
        lazy ``ServiceWindows`` of ``SMS_CollectionSettings``, which only the key GET
        answers; a collection without settings (404) has none."""
        entity = self.service.get_by_key(
            "SMS_CollectionSettings", collection_id, what=f"settings of {collection_id}"
        )
        windows = (entity or {}).get("ServiceWindows") or []
        return [w for w in windows if isinstance(w, dict)] if isinstance(windows, list) else []
