"""The whole local stack at once: the site database stand-in and Azurite."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

from devstack.azurite import Azurite
from devstack.lifecycle import Service
from devstack.sitedb import SiteDatabase


class LocalStack(Service):
    """Starts PostgreSQL (through ODBC) and Azurite side by side; stops both."""

    def __init__(self) -> None:
        self.site_db = SiteDatabase()
        self.azurite = Azurite()

    def start(self) -> Self:
        """Start both servers in parallel (each takes about a second)."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures: list[Future[object]] = [
                pool.submit(self.site_db.start),
                pool.submit(self.azurite.start),
            ]
            errors = [f.exception() for f in futures]
        failure = next((e for e in errors if e is not None), None)
        if failure is not None:
            self.stop()
            raise failure
        return self

    def stop(self) -> None:
        """Stop both servers; safe to call twice."""
        self.azurite.cleanup()
        self.site_db.stop()

    def settings_values(self, **overrides: str) -> dict[str, str]:
        """App settings that point cm-remediate at this stack."""
        return {
            "SITE_DB_CONNECTION": self.site_db.reader_connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            # Until the stack runs the AdminService and Entra ID simulators, the export
            # alone runs here; these point nowhere and are never called by it.
            "ADMINSERVICE_URL": "https://127.0.0.1:9/AdminService",
            "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:9",
            "ENTRA_TENANT_ID": "00000000-0000-0000-0000-0000000000aa",
            "ENTRA_CLIENT_ID": "00000000-0000-0000-0000-0000000000bb",
            "ADMINSERVICE_USERNAME": "svc-cmremediate@contoso.example",
            "ADMINSERVICE_PASSWORD": "demo-placeholder",
            **overrides,
        }
