"""Loading rows: status messages and discovery records as the site database stores them.

A batch becomes a ``Payload`` (rows per table, with the columns the export never reads
filled in plausibly), then one ``json_to_recordset`` insert per table. Text and
datetimes are checked first, so a value PostgreSQL cannot hold fails with a clear
message.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import pyodbc

from devstack.datagen.model import (
    ATTRIBUTE_GENERIC,
    GENERIC_ATTRIBUTE_VALUE,
    GENERIC_MESSAGE_IDS,
    INSERTION_STRING_COUNT,
    GeneratedDevice,
    GeneratedStatusMessage,
)

_INSERT_MESSAGES: Final = """
INSERT INTO status_messages (record_id, module_name, message_id, severity, message_type,
    component, machine_name, site_code, time_utc, process_id, thread_id, per_client,
    win32_error, top_level_site_code)
SELECT r.record_id, r.module_name, r.message_id, r.severity, r.message_type, r.component,
       r.machine_name, r.site_code, r.time_utc, r.process_id, r.thread_id, r.per_client,
       r.win32_error, r.top_level_site_code
FROM json_to_recordset(CAST(? AS json)) AS r(record_id bigint, module_name text,
    message_id integer, severity integer, message_type integer, component text,
    machine_name text, site_code text, time_utc timestamp, process_id integer,
    thread_id integer, per_client integer, win32_error integer, top_level_site_code text)
"""
_INSERT_STRINGS: Final = """
INSERT INTO status_message_ins_strings (record_id, ins_str_index, ins_str_value)
SELECT r.record_id, r.ins_str_index, r.ins_str_value
FROM json_to_recordset(CAST(? AS json))
     AS r(record_id bigint, ins_str_index integer, ins_str_value text)
"""
_INSERT_ATTRIBUTES: Final = """
INSERT INTO status_message_attributes (record_id, attribute_id, attribute_value,
    attribute_time)
SELECT r.record_id, r.attribute_id, r.attribute_value, r.attribute_time
FROM json_to_recordset(CAST(? AS json))
     AS r(record_id bigint, attribute_id integer, attribute_value text,
          attribute_time timestamp)
"""
_INSERT_DEVICES: Final = """
INSERT INTO systems (resource_id, name, netbios_name, sms_unique_identifier,
    resource_domain_or_workgr, full_domain_name, client, active, obsolete, decommissioned,
    creation_date, client_version, operating_system)
SELECT r.resource_id, r.name, r.netbios_name, r.sms_unique_identifier, r.domain,
       r.full_domain, r.client, r.active, r.obsolete, r.decommissioned, r.creation_date,
       r.client_version, r.operating_system
FROM json_to_recordset(CAST(? AS json)) AS r(resource_id integer, name text,
    netbios_name text, sms_unique_identifier text, domain text, full_domain text,
    client integer, active integer, obsolete integer, decommissioned integer,
    creation_date timestamp, client_version text, operating_system text)
"""


def _check_text(value: str | None, what: str) -> None:
    # SQL Server can store U+0000; PostgreSQL text cannot. Say so instead of failing deep
    # inside the JSON loader.
    if value is not None and "\x00" in value:
        raise ValueError(f"{what} contains NUL (U+0000), which PostgreSQL text cannot hold")


def _iso(value: datetime) -> str:
    if value.tzinfo is not None:
        raise ValueError(f"{value!r}: the site database stores naive UTC datetimes")
    return value.isoformat(sep=" ", timespec="microseconds")


@dataclass
class Payload:
    """The rows of a batch of status messages, one list per table."""

    messages: list[dict[str, object]] = field(default_factory=list)
    strings: list[dict[str, object]] = field(default_factory=list)
    attributes: list[dict[str, object]] = field(default_factory=list)


def build_payload(
    messages: Sequence[GeneratedStatusMessage],
    ids: Sequence[int],
    *,
    top_level_site_code: str | None,
) -> Payload:
    """The rows of ``messages`` numbered ``ids``; TopLevelSiteCode is
    ``top_level_site_code``, else each message's own site."""
    payload = Payload()
    for message, record_id in zip(messages, ids, strict=True):
        _check_text(message.machine_name, "MachineName")
        when = _iso(message.time_utc)
        code = message.site_code.upper()
        generic = message.message_id in GENERIC_MESSAGE_IDS
        # Stable, plausible process/thread IDs (the export never reads them).
        seed = zlib.crc32(f"{message.machine_name}|{message.component}".encode())
        payload.messages.append({
            "record_id": record_id,
            "module_name": message.module_name,
            "message_id": message.message_id,
            "severity": message.severity,  # set by GeneratedStatusMessage itself
            "message_type": message.message_type,
            "component": message.component,
            "machine_name": message.machine_name,
            "site_code": code,
            "time_utc": when,
            "process_id": 1000 + seed % 30000,
            "thread_id": 100 + (seed >> 16) % 9000,
            "per_client": 1 if message.module_name == "SMS Client" else 0,
            "win32_error": 0,
            "top_level_site_code": top_level_site_code or code,
        })  # fmt: skip
        for index, value in enumerate(message.insertion_strings[:INSERTION_STRING_COUNT]):
            if value is None:
                continue  # no such string: no row, like ConfigMgr
            _check_text(value, f"InsertionString{index + 1}")
            payload.strings.append(
                {"record_id": record_id, "ins_str_index": index, "ins_str_value": value}
            )
        if generic:
            payload.attributes.append({
                "record_id": record_id,
                "attribute_id": ATTRIBUTE_GENERIC,
                "attribute_value": GENERIC_ATTRIBUTE_VALUE,
                "attribute_time": when,
            })  # fmt: skip
    return payload


def write_payload(cursor: pyodbc.Cursor, payload: Payload) -> None:
    """Insert the payload's rows, one statement per table."""
    # One bound JSON parameter per table: a single round trip each, no SQL text built
    # from values, and far faster than row-by-row executes through ODBC.
    for sql, rows in (
        (_INSERT_MESSAGES, payload.messages),
        (_INSERT_STRINGS, payload.strings),
        (_INSERT_ATTRIBUTES, payload.attributes),
    ):
        if rows:
            cursor.execute(sql, json.dumps(rows, ensure_ascii=False))


def device_rows(devices: Iterable[GeneratedDevice]) -> list[dict[str, object]]:
    """``v_R_System`` rows for ``devices`` (checked; ready for :func:`write_devices`)."""
    rows: list[dict[str, object]] = []
    for device in devices:
        for value, what in ((device.name, "Name0"), (device.netbios_name, "Netbios_Name0")):
            _check_text(value, what)
        rows.append({
            "resource_id": device.resource_id,
            "name": device.name,
            "netbios_name": device.netbios_name,
            "sms_unique_identifier": device.sms_unique_identifier,
            "domain": device.domain,
            "full_domain": device.full_domain,
            "client": device.client,
            "active": device.active,
            "obsolete": device.obsolete,
            "decommissioned": device.decommissioned,
            "creation_date": _iso(device.creation_date),
            "client_version": "5.00.9128.1000" if device.client == 1 else None,
            "operating_system": "Microsoft Windows NT Workstation 10.0",
        })  # fmt: skip
    return rows


def write_devices(cursor: pyodbc.Cursor, rows: list[dict[str, object]]) -> None:
    """Insert rows made by :func:`device_rows`."""
    cursor.execute(_INSERT_DEVICES, json.dumps(rows, ensure_ascii=False))
