"""The export's tests run against either status message source (``EXPORT_SOURCE``).

A module opts in with ``pytestmark = SOURCES``; every other test of the folder reads the
site database as before. With ``adminservice`` the settings carry no
SITE_DB_CONNECTION at all, so the export cannot reach SQL by accident (and a tripwire in
place of the reader's ``pyodbc`` proves it never tried); the AdminService
simulator reads the same PostgreSQL stand-in (committed rows only), so late commits
behave as they do through the SMS Provider.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.adminservice import AdminServiceSimulator, StatusMessageReader
from devstack.entra import EntraSimulator
from devstack.tls import LocalCA
from tests.conftest import Stack
from tests.remediation import scenario

#: Run a module's tests once per status message source.
SOURCES = pytest.mark.parametrize("export_source", ["sitedb", "adminservice"], indirect=True)


@pytest.fixture
def export_source(request: pytest.FixtureRequest) -> str:
    """The EXPORT_SOURCE of this test (``sitedb`` unless the module runs both)."""
    return str(getattr(request, "param", "sitedb"))


@pytest.fixture
def stack(
    stack: Stack, export_source: str, local_ca: LocalCA, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The stack, its settings pointing the export at the chosen source."""
    if export_source == "sitedb":
        yield stack
        return
    request.getfixturevalue("no_odbc")
    entra: EntraSimulator = request.getfixturevalue("entra")
    with AdminServiceSimulator(
        local_ca,
        jwks_uri=entra.jwks_uri,
        issuer=entra.issuer_v1,
        admins=[scenario.SERVICE_ACCOUNT],
        status_messages=StatusMessageReader.for_site_database(stack.site_db),
    ) as adminservice:
        stack.adminservice = adminservice
        stack.source_settings = {
            "EXPORT_SOURCE": "adminservice",
            "SITE_DB_CONNECTION": None,
            "ADMINSERVICE_URL": adminservice.cmg_url,
            "ENTRA_AUTHORITY_HOST": entra.authority_host,
            "ENTRA_TENANT_ID": entra.tenant_id,
            "ENTRA_CLIENT_ID": scenario.CLIENT_ID,
            "ADMINSERVICE_USERNAME": scenario.SERVICE_ACCOUNT,
            "ADMINSERVICE_PASSWORD": scenario.SERVICE_PASSWORD,
            "TLS_CA_BUNDLE": str(local_ca.bundle_path),
        }
        yield stack
        unbounded = [q for q in adminservice.status_message_queries() if not q.selective]
        assert not unbounded, f"status message queries that are not selective: {unbounded}"
