"""The security tests' stack: the local stack with known, distinctive secret values.

Azurite runs with an account key of its own (not the published development key), the
Entra ID simulator holds the service account's password and a confidential client's
secret, and the SOAP web service a pre-shared secret with characters that change when
escaped. The simulators of tests/remediation are reused; the Entra ID simulator listens
on a loopback address of its own so that it never meets tests/remediation's simulator
on port 443 in the same process.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from devstack.azurite import ACCOUNT_KEY, Azurite
from devstack.configmgr_webservice import ConfigMgrWebServiceSimulator
from devstack.entra import EntraSimulator
from devstack.rest_webservice import RestWebServiceSimulator
from devstack.tls import LocalCA
from tests.helpers import own_loopback
from tests.remediation import scenario
from tests.remediation.conftest import adminservice  # noqa: F401 - fixture, with our entra

SERVICE_PASSWORD = "Svc-Acc0unt&Pa55word!7431"
CLIENT_ID = "5ec0de5e-0000-4000-8000-00000000c11e"
CLIENT_SECRET = "EntraClient~Secret.9f3b2c71-d2e4"
SOAP_SECRET = 'SoapShared<Secret>&5521-x"q'
STORAGE_KEY = base64.b64encode(b"cm-remediate security tests: storage account key #4242").decode()
REST_API = "api://cm-remediate-webservice"
REST_ROLE = "Remediation.Write"


class KeyedAzurite(Azurite):
    """Azurite whose development account has our key (AZURITE_ACCOUNTS)."""

    @property
    def connection_string(self) -> str:
        """The connection string with our key instead of the published one."""
        return super().connection_string.replace(ACCOUNT_KEY, STORAGE_KEY)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = KeyedAzurite(log_dir=tmp_path_factory.mktemp("azurite-log"))
    # Azurite reads its accounts from the environment when it starts.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZURITE_ACCOUNTS", f"devstoreaccount1:{STORAGE_KEY}")
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def entra(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(local_ca, host=own_loopback(1)) as simulator:
        simulator.add_user(scenario.SERVICE_ACCOUNT, SERVICE_PASSWORD)
        simulator.add_client(CLIENT_ID, secret=CLIENT_SECRET, app_roles=(REST_ROLE,))
        simulator.add_api("https://ConfigMgrService", scopes=("user_impersonation",))
        simulator.add_api(REST_API, scopes=(), app_roles=(REST_ROLE,))
        yield simulator


@pytest.fixture
def soap(local_ca: LocalCA) -> Iterator[ConfigMgrWebServiceSimulator]:
    with ConfigMgrWebServiceSimulator(
        local_ca, secret=SOAP_SECRET, devices=scenario.DEVICES, collections=scenario.COLLECTIONS
    ) as simulator:
        yield simulator


@pytest.fixture
def rest(local_ca: LocalCA, entra: EntraSimulator) -> Iterator[RestWebServiceSimulator]:
    with RestWebServiceSimulator(
        local_ca, entra, audience=REST_API, role=REST_ROLE, collections=scenario.COLLECTIONS
    ) as simulator:
        yield simulator
