"""TLS verification cannot be switched off: not by any setting, not by the variables
that switch it off or redirect it elsewhere in the Python stack. Impostor servers,
whose certificates come from a CA the app does not trust, are refused by the token
client (MSAL), the AdminService client and both web service clients: each client is
probed on its own, built from settings as the runtime builds it, and the functions,
run through Microsoft's worker library, are pointed at each impostor in turn."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.adminservice import AdminServiceSimulator
from devstack.configmgr_webservice import ConfigMgrWebServiceSimulator
from devstack.entra import EntraSimulator
from devstack.rest_webservice import RestWebServiceSimulator
from devstack.tls import LocalCA
from shared.app.overrides import Overrides
from shared.app.runtime import Runtime, reset_runtime
from shared.domain.membership import MembershipChange
from shared.domain.requests import RemediationRequest
from shared.errors import CmRemediateError, ConfigurationError
from shared.platform.settings import Settings, load_settings
from tests.conftest import FunctionApp, InvocationFailed
from tests.remediation import scenario
from tests.remediation.conftest import FIXTURES, fixture, webservice_rules
from tests.security.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REST_API,
    SERVICE_PASSWORD,
    SOAP_SECRET,
)

pytestmark = pytest.mark.stack

REFUSED = "TLS certificate was refused"
#: "Off" in every spelling a setting or variable is likely to be given; the attacker's
#: CA bundle and a dead proxy are added per test.
OFF = ("false", "0", "no", "off", "")


class WrongNameCA(LocalCA):
    """A CA whose server certificates name another host: trusting the CA is not enough."""

    def server_context(self, *names: str) -> Any:
        return super().server_context("not-this-host.example")


@dataclass
class Impostors:
    """The servers the app is pointed at, each with a certificate it must refuse."""

    ca: LocalCA
    entra: EntraSimulator
    adminservice: AdminServiceSimulator
    soap: ConfigMgrWebServiceSimulator
    rest: RestWebServiceSimulator

    def stop(self) -> None:
        for server in (self.rest, self.soap, self.adminservice, self.entra):
            server.stop()

    def served(self) -> int:
        """Requests the impostors answered: each one would mean a handshake succeeded."""
        return (
            len(self.entra.http_log)
            + len(self.adminservice.calls)
            + len(self.soap.http_log)
            + len(self.rest._server.http_log)
        )


def start_impostors(ca: LocalCA, entra: EntraSimulator) -> Impostors:
    impostors = Impostors(
        ca,
        EntraSimulator(ca, user_realm=False),
        AdminServiceSimulator(
            ca,
            jwks_uri=entra.jwks_uri,
            issuer=entra.issuer_v1,
            admins=[scenario.SERVICE_ACCOUNT],
            devices=scenario.DEVICES,
            collections=scenario.COLLECTIONS,
        ),
        ConfigMgrWebServiceSimulator(
            ca, secret=SOAP_SECRET, devices=scenario.DEVICES, collections=scenario.COLLECTIONS
        ),
        RestWebServiceSimulator(ca, entra, audience=REST_API, collections=scenario.COLLECTIONS),
    )
    for server in (impostors.entra, impostors.adminservice, impostors.soap, impostors.rest):
        server.start()
    return impostors


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("attacker-ca"))


@pytest.fixture(scope="module")
def impostors(attacker: LocalCA, entra: EntraSimulator) -> Iterator[Impostors]:
    servers = start_impostors(attacker, entra)
    try:
        yield servers
    finally:
        servers.stop()


class FixedTokens:
    """Stands in for MSAL where a check is about the service, not the token: the
    token is never sent, because the TLS handshake fails first."""

    def token(self, *, fresh: bool = False) -> str:
        return "never-sent"


def add_change() -> MembershipChange:
    request = RemediationRequest.model_validate({**fixture("01-add")["body"]})
    return MembershipChange(request, scenario.EXPECTED_RESOURCE["PC-ADD01"], 1)


@dataclass
class Client:
    """One client the app builds from settings, and the call that must be refused."""

    name: str
    settings: dict[str, str]
    call: Callable[[Runtime], object]
    real_tokens: bool


def clients(
    stack: Any, entra: EntraSimulator, impostors: Impostors, directory: Path
) -> list[Client]:
    """The token client (delegated and app-only) against the impostor Entra ID, and the
    AdminService and web service clients against their impostors."""
    common = {
        **stack.settings_values(),
        "ENTRA_TENANT_ID": entra.tenant_id,
        "ENTRA_CLIENT_ID": CLIENT_ID,
        "ENTRA_CLIENT_SECRET": CLIENT_SECRET,
        "ADMINSERVICE_USERNAME": scenario.SERVICE_ACCOUNT,
        "ADMINSERVICE_PASSWORD": SERVICE_PASSWORD,
        "ADMINSERVICE_URL": impostors.adminservice.cmg_url,
        "ENTRA_AUTHORITY_HOST": impostors.entra.authority_host,
        "REMEDIATION_RULES_FILE": str(FIXTURES.parent / "remediation-rules.json"),
    }
    web = {
        "REMEDIATION_RULES_FILE": webservice_rules(directory),
        "WEBSERVICE_SCOPE": f"{REST_API}/.default",
        "WEBSERVICE_SECRET": SOAP_SECRET,
    }
    soap = {**web, "WEBSERVICE_KIND": "configmgr-webservice", "WEBSERVICE_URL": impostors.soap.url}
    rest = {**web, "WEBSERVICE_KIND": "rest", "WEBSERVICE_URL": impostors.rest.url}

    def apply(runtime: Runtime) -> object:
        return runtime.targets["webservice"].apply(add_change(), dry_run=False)

    return [
        Client("token (delegated)", common, lambda r: r.adminservice.token(), True),
        Client("token (app-only)", {**common, **rest}, apply, True),
        Client("AdminService", common, lambda r: r.adminservice.check(), False),
        Client("SOAP web service", {**common, **soap}, apply, False),
        Client("REST web service", {**common, **rest}, apply, False),
    ]


def outcome(client: Client, overrides: dict[str, str], impostors: Impostors) -> str:
    """How the client ended: "settings" (the settings refused the values), "refused"
    (it refused the impostor's certificate) or "unusable" (it gave up before connecting,
    e.g. MSAL on a tenant ID that is a file path). It never reached an impostor."""
    before = impostors.served()
    stand_ins = (
        Overrides()
        if client.real_tokens
        else Overrides(delegated_tokens=FixedTokens(), app_tokens=FixedTokens())
    )
    try:
        runtime = Runtime(load_settings({**client.settings, **overrides}), overrides=stand_ins)
    except ConfigurationError:
        return "settings"
    try:
        try:
            client.call(runtime)
        except ConfigurationError:
            result = "settings"
        except CmRemediateError as error:
            result = "refused" if REFUSED in str(error) else "unusable"
        else:
            result = "accepted"
    finally:
        runtime.close()
    assert result != "accepted", f"{client.name} accepted an impostor with {overrides}"
    assert impostors.served() == before, f"{client.name} talked to an impostor: {overrides}"
    return result


def aliases() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias or name
        names.append(str(getattr(alias, "choices", [alias])[0]))
    return names


def test_no_setting_switches_tls_off(stack, entra, impostors, attacker, tmp_path):
    """Every setting, with every 'off' value and the attacker's CA bundle."""
    targets = clients(stack, entra, impostors, tmp_path)
    results: dict[str, dict[str, int]] = {}
    for alias in aliases():
        for value in (*OFF, str(attacker.bundle_path)):
            if alias == "TLS_CA_BUNDLE" and value == str(attacker.bundle_path):
                continue  # adds trust on purpose: test_tls_ca_bundle_adds_trust_only
            for client in targets:
                seen = outcome(client, {alias: value}, impostors)
                results.setdefault(alias, {}).setdefault(seen, 0)
                results[alias][seen] += 1
    assert set(results) == set(aliases())
    # Where a setting takes the value the clients were really exercised, and refused:
    # five clients, six values.
    for alias in ("DRY_RUN", "REMEDIATION_QUEUE", "ADMINSERVICE_SCOPE", "ENTRA_CLIENT_SECRET"):
        assert results[alias].get("refused", 0) >= 10, (alias, results[alias])
    for alias in ("ADMINSERVICE_URL", "ENTRA_AUTHORITY_HOST", "WEBSERVICE_URL", "TLS_CA_BUNDLE"):
        assert set(results[alias]) == {"settings"}, (alias, results[alias])


def test_environment_cannot_switch_tls_off_or_redirect_it(
    stack, entra, impostors, attacker, adminservice, local_ca, tmp_path, monkeypatch
):
    """The variables requests, urllib3, OpenSSL and Python read to change trust or
    route through a proxy: each alone, with each value, then all at once."""
    hashed = tmp_path / "attacker-certs"
    hashed.mkdir()
    (hashed / "attacker.pem").write_bytes(attacker.bundle_path.read_bytes())
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    bundle, proxy = str(attacker.bundle_path), "http://127.0.0.1:9"
    variables = {
        "REQUESTS_CA_BUNDLE": (*OFF, bundle),
        "CURL_CA_BUNDLE": (*OFF, bundle),  # "" once made requests skip verification
        "SSL_CERT_FILE": (bundle,),
        "SSL_CERT_DIR": (str(hashed),),
        "PYTHONHTTPSVERIFY": ("0",),
        "HTTPS_PROXY": (proxy,),
        "https_proxy": (proxy,),
        "ALL_PROXY": (proxy,),
        "NO_PROXY": ("",),
    }
    targets = clients(stack, entra, impostors, tmp_path)
    for name, values in variables.items():
        for value in values:
            with monkeypatch.context() as patch:
                patch.setenv(name, value)
                for client in targets:
                    assert outcome(client, {}, impostors) == "refused", (name, value)
    with monkeypatch.context() as patch:
        for name, values in variables.items():
            patch.setenv(name, values[-1])
        for client in targets:
            assert outcome(client, {}, impostors) == "refused", "all at once"
        # The real servers still answer: no proxy in the way, our trust store in force.
        runtime = Runtime(
            load_settings(
                {
                    **targets[0].settings,
                    "ADMINSERVICE_URL": adminservice.cmg_url,
                    "ENTRA_AUTHORITY_HOST": entra.authority_host,
                    "TLS_CA_BUNDLE": str(local_ca.bundle_path),
                }
            )
        )
        try:
            runtime.adminservice.check()
        finally:
            runtime.close()


def test_tls_ca_bundle_adds_trust_only(stack, entra, tmp_path):
    """TLS_CA_BUNDLE is the one setting meant to trust a CA; the host name is still
    checked, so a certificate of that CA for another name is refused."""
    (tmp_path / "wrong-name-ca").mkdir()
    wrong_name = WrongNameCA(tmp_path / "wrong-name-ca")
    servers = start_impostors(wrong_name, entra)
    try:
        trusting = {"TLS_CA_BUNDLE": str(wrong_name.bundle_path)}
        for client in clients(stack, entra, servers, tmp_path):
            assert outcome(client, trusting, servers) == "refused", client.name
    finally:
        servers.stop()


def test_the_functions_refuse_impostors(
    stack, entra, impostors, local_ca, app: FunctionApp, tmp_path, monkeypatch
):
    """The queue function and the health endpoint, through the worker, with each client
    pointed at an impostor: the invocation fails naming the refused certificate (not
    retried into a decision), and no impostor ever answers a request. Entra ID is the
    real simulator (trusted through TLS_CA_BUNDLE) where the impostor is the target, so
    the token is really obtained, and never sent."""
    stack.site_db.insert_devices(scenario.DEVICES)
    real_entra = {
        "ENTRA_AUTHORITY_HOST": entra.authority_host,
        "TLS_CA_BUNDLE": str(local_ca.bundle_path),
    }
    cases = [
        (client, {} if client.real_tokens else real_entra)
        for client in clients(stack, entra, impostors, tmp_path)
    ]
    names = {name for client, extra in cases for name in {**client.settings, **extra}}
    for client, extra in cases:
        values = {**client.settings, **extra, "EXPORT_SCHEDULE": "0 */5 * * * *"}
        for name in names - set(values):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        reset_runtime()
        target = "webservice" if "WEBSERVICE_KIND" in values else "adminservice"
        body = json.dumps({**fixture("01-add")["body"], "target": target})
        before = impostors.served()
        with pytest.raises(InvocationFailed, match=r"^\w+: .*" + REFUSED):
            app.deliver(body, message_id=f"impostor-{target}")
        health = app.health()
        assert health.status in (200, 503), (client.name, health)
        assert impostors.served() == before, f"{client.name}: the functions talked to an impostor"


URL_SETTINGS = {
    "ADMINSERVICE_URL": "http://cmg.contoso.com/CCM_Proxy_ServerAuth/72057594037927941/AdminService",
    "ENTRA_AUTHORITY_HOST": "http://login.microsoftonline.com",
    "WEBSERVICE_URL": "http://sccm.contoso.com/ConfigMgrWebService/ConfigMgr.asmx",
    "AzureWebJobsStorage__blobServiceUri": "http://stcm.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "http://stcm.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "http://stcm.table.core.windows.net",
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=stcm;AccountKey=a2V5",
    "ADMINSERVICE_SESSION_SECRET_URI": "http://cm-kv.vault.azure.net/secrets/adminservice-session",
}


@pytest.mark.parametrize(("alias", "value"), URL_SETTINGS.items())
def test_http_urls_are_refused(alias, value):
    values = {
        "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        alias: value,
    }
    with pytest.raises(ConfigurationError, match=f"{alias}: .*(https|TLS)"):
        load_settings(values)


def test_every_url_setting_is_covered():
    """A URL setting added later must join URL_SETTINGS (and its https check)."""
    url_like = {a for a in aliases() if any(w in a.upper() for w in ("URL", "URI", "HOST"))}
    assert url_like | {"AzureWebJobsStorage"} == set(URL_SETTINGS)
