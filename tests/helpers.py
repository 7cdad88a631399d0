"""Constants and helpers shared by several test modules."""

import os

#: AdminService settings for tests that never call it (the export): valid, unreachable.
UNREACHABLE_ADMINSERVICE = {
    "ADMINSERVICE_URL": "https://127.0.0.1:9/AdminService",
    "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:9",
    "ENTRA_TENANT_ID": "00000000-0000-0000-0000-0000000000aa",
    "ENTRA_CLIENT_ID": "00000000-0000-0000-0000-0000000000bb",
    "ADMINSERVICE_USERNAME": "svc-cmremediate@contoso.example",
    "ADMINSERVICE_PASSWORD": "not-used-by-export-tests",
}


def own_loopback(suite: int) -> str:
    """A loopback address for one suite's Entra simulator in this process.

    MSAL asks port 443 for the user realm, and 443 is taken once per address: each
    suite (0 remediation, 1 security, 2 faults) gets its own block of 127.x, and the
    PID keeps test runs side by side apart."""
    pid = os.getpid()
    return f"127.{suite * 64 + ((pid >> 16) & 63)}.{(pid >> 8) & 255}.{(pid & 255) or 1}"
