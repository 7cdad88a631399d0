"""The whole local stack at once: site database stand-in, Azurite, and the Entra ID
and AdminService simulators, wired together as a deployment would be."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

from devstack.adminservice import AdminServiceSimulator, StatusMessageReader
from devstack.azurite import Azurite
from devstack.datagen import M365_RULES, Workload
from devstack.entra import EntraSimulator
from devstack.lifecycle import Service
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA

SERVICE_ACCOUNT = "svc-cmremediate@contoso.example"
CLIENT_ID = "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
M365_COLLECTIONS = {
    str(rule["collection_id"]): f"Remediation: {rule['name']}" for rule in M365_RULES
}


class LocalStack(Service):
    """Everything cm-remediate talks to, on this machine, over the real protocols."""

    def __init__(
        self, *, collections: Mapping[str, str] = M365_COLLECTIONS, ca: LocalCA | None = None
    ) -> None:
        # Simulators running at the same time in one process must share one CA: they
        # share the user realm responder on port 443.
        self.ca = ca or LocalCA()
        self.site_db = SiteDatabase(ca=self.ca)  # its TLS certificate, too, from the one CA
        self.azurite = Azurite()
        self.entra = EntraSimulator(self.ca)
        self._collections = dict(collections)
        self._password = secrets.token_urlsafe(18)
        self._adminservice: AdminServiceSimulator | None = None

    @property
    def adminservice(self) -> AdminServiceSimulator:
        """The AdminService simulator (exists once the stack has started)."""
        if self._adminservice is None:
            raise RuntimeError("the local stack is not started")
        return self._adminservice

    def start(self) -> Self:
        """Start the servers (in parallel where they are independent)."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures: list[Future[object]] = [
                pool.submit(self.site_db.start),
                pool.submit(self.azurite.start),
                pool.submit(self.entra.start),
            ]
            failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            self.stop()
            raise failure
        self.entra.add_user(SERVICE_ACCOUNT, self._password)
        self.entra.add_client(CLIENT_ID, public=True)
        self.entra.add_api("https://ConfigMgrService", scopes=("user_impersonation",))
        self._adminservice = AdminServiceSimulator(
            self.ca,
            jwks_uri=self.entra.jwks_uri,
            issuer=self.entra.issuer_v1,  # the ConfigMgr server app gets v1.0 tokens
            admins=[SERVICE_ACCOUNT],
            collections=self._collections,
            # The site database runs by now: status messages through the AdminService too.
            status_messages=StatusMessageReader.for_site_database(self.site_db),
            # ... and the evaluated membership in v_FullCollectionMembership.
            site_database=self.site_db,
        ).start()
        return self

    def load(self, workload: Workload) -> list[int]:
        """Status messages and devices into the site database; devices behind the
        AdminService too. Returns the RecordIDs."""
        record_ids = self.site_db.load_workload(workload)
        for device in workload.devices:
            self.adminservice.add_device(device)
        return record_ids

    def stop(self) -> None:
        """Stop every server; safe to call twice."""
        if self._adminservice is not None:
            self._adminservice.stop()
        self.entra.stop()
        self.azurite.cleanup()
        self.site_db.stop()

    def settings_values(self, *, export_source: str = "sitedb", **overrides: str) -> dict[str, str]:
        """App settings that point cm-remediate at this stack; with
        ``export_source="adminservice"`` the export (and identity) use the AdminService
        and no SITE_DB_CONNECTION is given at all."""
        values = {
            "SITE_DB_CONNECTION": self.site_db.reader_connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "ADMINSERVICE_URL": self.adminservice.cmg_url,
            "ENTRA_AUTHORITY_HOST": self.entra.authority_host,
            "ENTRA_TENANT_ID": self.entra.tenant_id,
            "ENTRA_CLIENT_ID": CLIENT_ID,
            "ADMINSERVICE_USERNAME": SERVICE_ACCOUNT,
            "ADMINSERVICE_PASSWORD": self._password,
            "TLS_CA_BUNDLE": str(self.ca.bundle_path),
        }
        if export_source == "adminservice":
            del values["SITE_DB_CONNECTION"]
            values["EXPORT_SOURCE"] = "adminservice"
        return {**values, **overrides}
