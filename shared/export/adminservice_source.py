"""Status messages through the AdminService (``EXPORT_SOURCE=adminservice``).

The SMS Provider exposes the status messages the site database holds as WMI classes;
``wmi/SMS_StatMsgWithInsStrings`` carries a message with its ten insertion strings in
one entity. No server-driven paging is documented, so the pages are the client's:
keyset on ``RecordID`` (``RecordID gt N``, ``$orderby=RecordID``, ``$top``), the same
paging as the SQL reader, and every query names the message ID and the site, so each is
selective and bounded however large the status message tables are. Sites come from
``wmi/SMS_Site``. What the exporter does with the pages (the overlap window, the
examined RecordIDs, the lease) does not depend on the source. A message's ``ResourceID``
travels on as ``message_resource_id``: the remediation side checks it against the name.
"""

from __future__ import annotations

from datetime import datetime

from shared.domain.requests import RESOURCE_ID_MAX
from shared.domain.status_messages import (
    GENERIC_INFO,
    INSERTION_STRING_COUNT,
    SiteSummary,
    StatusMessage,
)
from shared.errors import AdminServiceUnavailable
from shared.export.paging import KeysetPaged
from shared.platform.adminservice import (
    AdminService,
    Entity,
    odata_datetime,
    odata_string,
    parse_datetime,
)

STATUS_MESSAGES = "SMS_StatMsgWithInsStrings"
_STRINGS = tuple(f"InsString{n}" for n in range(1, INSERTION_STRING_COUNT + 1))
_COLUMNS = ("RecordID", "MessageID", "SiteCode", "Time", "MachineName", "ResourceID", *_STRINGS)


class AdminServiceStatusMessages(KeysetPaged):
    """Reads generic (39997) status messages per site through the AdminService."""

    def __init__(self, service: AdminService) -> None:
        self._service = service

    def _selection(self, site_code: str, *conditions: str) -> str:
        return " and ".join(
            (f"MessageID eq {GENERIC_INFO}", f"SiteCode eq {odata_string(site_code)}", *conditions)
        )

    def sites(self) -> list[SiteSummary]:
        """Every site of ``SMS_Site`` that has generic status messages, with its newest
        one (one bounded query per site: the newest by RecordID)."""
        codes = sorted(
            {
                str(entity.get("SiteCode") or "").strip().upper()
                for entity in self._service.query(
                    "SMS_Site", select=("SiteCode",), what="the list of sites"
                )
            }
            - {""}
        )
        summaries = []
        for code in codes:
            newest = self._service.query(
                STATUS_MESSAGES,
                where=self._selection(code),
                select=("RecordID", "Time"),
                orderby="RecordID desc",
                top=1,
                what=f"the newest status message of site {code}",
            )
            if newest:
                summaries.append(
                    SiteSummary(
                        site_code=code,
                        newest_record_id=int(newest[0]["RecordID"]),
                        newest_time_utc=_time(newest[0], code),
                    )
                )
        return summaries

    def read_page(
        self,
        site_code: str,
        *,
        after_record_id: int,
        limit: int,
        since: datetime | None = None,
    ) -> list[StatusMessage]:
        """Up to ``limit`` generic messages of a site with RecordID above
        ``after_record_id`` (and from ``since``), oldest first, with their strings."""
        conditions = [f"RecordID gt {int(after_record_id)}"]
        if since is not None:
            conditions.append(f"Time ge {odata_datetime(since)}")
        entities = self._service.query(
            STATUS_MESSAGES,
            where=self._selection(site_code, *conditions),
            select=_COLUMNS,
            orderby="RecordID",
            top=limit,
            what=f"status messages of site {site_code}",
        )
        return [_message(entity, site_code) for entity in entities]

    def ping(self) -> None:
        """One bounded read of the status messages and of the sites: proves the route,
        both classes and the account's right to read them."""
        self._service.query(
            STATUS_MESSAGES,
            where=f"MessageID eq {GENERIC_INFO}",
            select=("RecordID",),
            top=1,
            what="a test read of the status messages",
        )
        self._service.query(
            "SMS_Site", select=("SiteCode",), top=1, what="a test read of the sites"
        )


def _time(entity: Entity, site_code: str) -> datetime:
    value = parse_datetime(entity.get("Time"))
    if value is None:
        # Without a time the overlap window cannot be kept: nothing is guessed.
        raise AdminServiceUnavailable(
            f"site={site_code} record={entity.get('RecordID')}: the AdminService sent a status "
            f"message without a readable Time ({entity.get('Time')!r})"
        )
    return value


def _resource_id(entity: Entity, site_code: str) -> int | None:
    value = entity.get("ResourceID")
    if value is None or value == 0:
        return None  # "may be NULL"; 0 names no device either
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= RESOURCE_ID_MAX:
        raise AdminServiceUnavailable(
            f"site={site_code} record={entity.get('RecordID')}: the AdminService sent a status "
            f"message whose ResourceID is not a ResourceID ({str(value)[:40]!r})"
        )
    return value


def _message(entity: Entity, site_code: str) -> StatusMessage:
    strings = tuple(None if entity.get(name) is None else str(entity[name]) for name in _STRINGS)
    return StatusMessage(
        site_code=str(entity.get("SiteCode") or site_code).strip().upper(),
        record_id=int(entity["RecordID"]),
        message_id=int(entity["MessageID"]),
        time_utc=_time(entity, site_code),
        machine_name=str(entity.get("MachineName") or ""),
        insertion_strings=strings,
        resource_id=_resource_id(entity, site_code),
    )
