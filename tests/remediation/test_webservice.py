"""The web service targets: the community SOAP service and a REST service."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devstack.configmgr_webservice import ConfigMgrWebServiceSimulator
from devstack.rest_webservice import RestWebServiceSimulator
from shared.app.runtime import reset_runtime
from tests.conftest import InvocationFailed
from tests.remediation import scenario
from tests.remediation.conftest import fixture, webservice_rules

pytestmark = pytest.mark.stack

SOAP_SECRET = "s0ap-Pre-Shared-Secret"
APP_SECRET = "app-Client-Secret-123"
APP_CLIENT = "99999999-8888-7777-6666-555555555555"
API = "api://cm-remediate-webservice"


def deliver(remediation, name, **options):
    """Deliver a fixture as an exporter with web service rules would have written it;
    the outcome recorded for it."""
    body = {**fixture(name)["body"], "target": "webservice"}
    remediation.deliver(json.dumps(body, ensure_ascii=False), **options)
    return remediation.outcome(body)


def on_soap(make_remediation, soap, tmp_path, secret=SOAP_SECRET):
    return make_remediation(
        REMEDIATION_RULES_FILE=webservice_rules(tmp_path),
        WEBSERVICE_KIND="configmgr-webservice",
        WEBSERVICE_URL=soap.url,
        WEBSERVICE_SECRET=secret,
    )


def on_rest(make_remediation, rest, tmp_path, **credentials):
    return make_remediation(
        REMEDIATION_RULES_FILE=webservice_rules(tmp_path),
        WEBSERVICE_KIND="rest",
        WEBSERVICE_URL=rest.url,
        WEBSERVICE_SCOPE=f"{API}/.default",
        **credentials,
    )


@pytest.fixture
def soap(local_ca) -> Iterator[ConfigMgrWebServiceSimulator]:
    with ConfigMgrWebServiceSimulator(
        local_ca, secret=SOAP_SECRET, devices=scenario.DEVICES, collections=scenario.COLLECTIONS
    ) as simulator:
        yield simulator


@pytest.fixture
def rest(local_ca, entra) -> Iterator[RestWebServiceSimulator]:
    entra.add_api(API, scopes=(), app_roles=("Remediation.Write",))
    entra.add_client(APP_CLIENT, secret=APP_SECRET, app_roles=("Remediation.Write",))
    with RestWebServiceSimulator(
        local_ca, entra, audience=API, collections=scenario.COLLECTIONS
    ) as simulator:
        yield simulator


def test_soap_adds_a_device_with_a_single_record(make_remediation, soap, tmp_path):
    outcome = deliver(on_soap(make_remediation, soap, tmp_path), "01-add")
    assert outcome is not None and outcome.kind == "added", outcome
    assert soap.members("PS100123") == {16777301}
    assert [c.resource_name for c in soap.calls] == ["PC-ADD01"]


def test_soap_is_never_asked_about_names_its_like_could_misread(make_remediation, soap, tmp_path):
    remediation = on_soap(make_remediation, soap, tmp_path)
    # two records named PC-REIMAGED01: the service would take the last, not ours
    outcome = deliver(remediation, "07-obsolete-and-active")
    assert outcome is not None and outcome.kind == "target-refused"
    assert "takes the last match" in outcome.reason
    # a remove rule: the service has no remove method
    removed = deliver(remediation, "08-remove")
    assert removed is not None and removed.kind == "target-refused"
    assert soap.calls == []


def test_soap_false_is_a_failure_and_the_secret_never_shows(
    make_remediation, soap, tmp_path, caplog
):
    remediation = on_soap(make_remediation, soap, tmp_path, secret="the-wrong-secret")
    outcome = deliver(remediation, "01-add")
    assert outcome is not None and outcome.kind == "target-refused"
    assert "answered false" in outcome.reason
    assert soap.members("PS100123") == set()
    assert "the-wrong-secret" not in caplog.text + outcome.reason


def test_soap_403_is_refused_at_once_and_nothing_recorded(make_remediation, soap, tmp_path):
    remediation = on_soap(make_remediation, soap, tmp_path)
    soap.fail_next(1, status=403)  # IIS: an IP restriction or authentication
    with pytest.raises(InvocationFailed, match=r"^WebServiceRefused: .*refused the call with 403"):
        deliver(remediation, "01-add")
    assert len(soap.http_log) == 1  # not retried: it would not help
    assert remediation.outcome({**fixture("01-add")["body"], "target": "webservice"}) is None
    assert soap.members("PS100123") == set()


def test_rest_adds_and_removes_with_an_app_token(make_remediation, rest, tmp_path):
    remediation = on_rest(
        make_remediation, rest, tmp_path, ENTRA_CLIENT_ID=APP_CLIENT, ENTRA_CLIENT_SECRET=APP_SECRET
    )
    kinds = {
        name: deliver(remediation, name, message_id=name).kind
        for name in ("01-add", "02-add-repeated-send", "07-obsolete-and-active")
    }
    assert kinds == {
        "01-add": "added",
        "02-add-repeated-send": "already-member",
        "07-obsolete-and-active": "added",
    }
    assert rest.members("PS100123") == {16777301}
    assert rest.members("PS100124") == {16777306}  # the active record, chosen by us
    rest_calls = rest.calls
    assert all(c.status == 200 for c in rest_calls)
    # the repeated send was already-member by cm-remediate's own claim: no call at all
    assert len(rest_calls) == 2
    repeated = remediation.outcome(
        {**fixture("02-add-repeated-send")["body"], "target": "webservice"}
    )
    assert repeated is not None and "cm-remediate added the device" in repeated.reason


def test_missing_webservice_settings_fail_each_delivery_naming_them(
    make_remediation, tmp_path, monkeypatch
):
    remediation = make_remediation()
    monkeypatch.setenv("REMEDIATION_RULES_FILE", webservice_rules(tmp_path))
    monkeypatch.setenv("WEBSERVICE_KIND", "rest")
    reset_runtime()
    with pytest.raises(InvocationFailed, match=r"^ConfigurationError: ") as caught:
        deliver(remediation, "01-add")
    text = str(caught.value)
    assert (
        "WEBSERVICE_URL: required because a rule targets the web service (WEBSERVICE_KIND=rest)"
        in text
    )
    assert "WEBSERVICE_SCOPE: required" in text
    assert "ENTRA_CLIENT_SECRET or ENTRA_CLIENT_CERTIFICATE_PATH: required" in text


def test_rest_with_a_client_certificate(make_remediation, rest, entra, tmp_path):
    from devstack.entra import generate_client_certificate

    key_pem, cert_pem = generate_client_certificate("cm-remediate")
    client_id = "77777777-6666-5555-4444-333333333333"
    entra.add_client(client_id, certificate_pem=cert_pem, app_roles=("Remediation.Write",))
    pem = tmp_path / "client.pem"
    pem.write_bytes(key_pem + cert_pem)
    remediation = on_rest(
        make_remediation,
        rest,
        tmp_path,
        ENTRA_CLIENT_ID=client_id,
        ENTRA_CLIENT_CERTIFICATE_PATH=str(pem),
    )
    outcome = deliver(remediation, "01-add")
    assert outcome is not None and outcome.kind == "added"
    assert rest.members("PS100123") == {16777301}
