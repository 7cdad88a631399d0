"""Constants and helpers shared by several test modules."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from devstack.datagen import GeneratedDevice
from shared.domain.requests import RemediationRequest

#: AdminService settings for tests that never call it (the export): valid, unreachable.
UNREACHABLE_ADMINSERVICE = {
    "ADMINSERVICE_URL": "https://127.0.0.1:9/AdminService",
    "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:9",
    "ENTRA_TENANT_ID": "00000000-0000-0000-0000-0000000000aa",
    "ENTRA_CLIENT_ID": "00000000-0000-0000-0000-0000000000bb",
    "ADMINSERVICE_USERNAME": "svc-cmremediate@contoso.example",
    "ADMINSERVICE_PASSWORD": "not-used-by-export-tests",
}


#: The dependency checks of health and `cmremediate check` with an AdminService rule
#: (each of its collections adds one more).
DEPENDENCY_CHECKS = (
    "site database",
    "storage queue",
    "storage blobs",
    "storage tables",
    "token",
    "AdminService",
)


def own_loopback(suite: int) -> str:
    """A loopback address for one suite's Entra simulator in this process.

    MSAL asks port 443 for the user realm, and 443 is taken once per address: each
    suite (0 remediation, 1 security, 2 faults) gets its own block of 127.x, and the
    PID keeps test runs side by side apart."""
    pid = os.getpid()
    return f"127.{suite * 64 + ((pid >> 16) & 63)}.{(pid >> 8) & 255}.{(pid & 255) or 1}"


def rule(**overrides: Any) -> dict[str, Any]:
    """A rule of the rules file (the shipped "project-64bit-reinstall"), fields replaced."""
    return {
        "name": "project-64bit-reinstall",
        "match": {
            "InsertionString1": "MsgType_Office365Upgrade",
            "InsertionString2": "projectInstalled",
        },
        "collection_id": "PS100123",
        "action": "add",
        "target": "adminservice",
        **overrides,
    }


def rules_text(*rules: dict[str, Any]) -> str:
    """A rules file holding ``rules``."""
    return json.dumps({"rules": list(rules)})


def request_document(**fields: Any) -> dict[str, Any]:
    """A queue message body that keeps the contract (an add for PC01), fields replaced."""
    return {
        "schema_version": 1,
        "site_code": "PS1",
        "record_id": 2**56 + 1,
        "message_id": 39997,
        "time_utc": "2026-11-20T08:00:00Z",
        "machine_name": "PC01",
        "insertion_strings": {
            "InsertionString1": "MsgType_Office365Upgrade",
            "InsertionString2": "projectInstalled",
        },
        "rule": "project-64bit-reinstall",
        "collection_id": "PS100123",
        "action": "add",
        "target": "adminservice",
        "exported_utc": "2026-11-20T08:05:00Z",
        **fields,
    }


def make_request(**fields: Any) -> RemediationRequest:
    """The request of ``request_document(**fields)``."""
    return RemediationRequest.model_validate(request_document(**fields))


def device(resource_id: int, name: str, **fields: Any) -> GeneratedDevice:
    """The discovery record of an active, healthy client named ``name``, fields replaced."""
    values: dict[str, Any] = {
        "resource_id": resource_id,
        "name": name,
        "netbios_name": name,
        "sms_unique_identifier": f"GUID:{resource_id:08X}-0000-0000-0000-000000000000",
        "domain": "CONTOSO",
        "full_domain": "contoso.example",
        "client": 1,
        "active": 1,
        "obsolete": 0,
        "decommissioned": 0,
        "creation_date": datetime(2026, 1, 5),
        **fields,
    }
    return GeneratedDevice(**values)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``condition`` every 20 ms until it holds (True) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
