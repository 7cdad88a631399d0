"""The remediation scenario of tests/fixtures/queue/README.md, for both simulators."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers import device

FIXED_NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SERVICE_ACCOUNT = "svc-cmremediate@contoso.example"
SERVICE_PASSWORD = "Corr3ct-H0rse-Battery!"  # a known secret the log tests search for
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
COLLECTIONS = {
    "PS100123": "Reinstall Project 64-bit",
    "PS100124": "Reinstall Visio 64-bit",
    "PS100125": "Reinstall Outlook room plug-in",
    "PS100126": "Project cleanup",
}


DEVICES = [
    device(16777301, "PC-ADD01"),
    device(16777302, "PC-MEMBER01"),
    device(16777303, "PC-AMBIG01"),
    device(16777304, "PC-AMBIG01"),
    device(16777305, "PC-REIMAGED01", obsolete=1, active=0, creation_date=datetime(2025, 2, 1)),
    device(16777306, "PC-REIMAGED01", creation_date=datetime(2026, 10, 30)),
    device(16777307, "PC-REMOVE01"),
    device(16777308, "ÑANDÚ-PC"),
    device(16777310, "PC01"),  # a LIKE 'PC%' or an injected filter would find it
    device(16777311, "PC02"),
]
DISCOVERED_LATER = device(16777309, "PC-NEW01", creation_date=datetime(2026, 11, 20))
INITIAL_MEMBERS = {"PS100123": {16777302}, "PS100126": {16777307}}
EXPECTED_RESOURCE = {
    "PC-ADD01": 16777301,
    "PC-MEMBER01": 16777302,
    "PC-REIMAGED01": 16777306,
    "PC-REMOVE01": 16777307,
    "ÑANDÚ-PC": 16777308,
    "PC-NEW01": 16777309,
}
