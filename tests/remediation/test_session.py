"""ADMINSERVICE_AUTH=refresh-token end to end: an admin opens the session once with
``cmremediate sign-in`` (device code, MFA, in the Entra ID simulator), the queue
function then works through Microsoft's worker with no password in any setting; two
instances renewing at once keep one valid session; a revoked session is one clear
error, health says so, and nothing is lost."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from azure.identity import ClientSecretCredential
from typer.testing import CliRunner

from cmremediate_cli.main import app
from devstack.datagen import GeneratedStatusMessage
from devstack.keyvault import VAULT_APP_ID, VAULT_RESOURCE, KeyVaultSimulator
from shared.app.adminservice_tokens import adminservice_tokens
from shared.app.runtime import Runtime
from shared.domain.requests import RemediationRequest
from tests.conftest import InvocationFailed
from tests.remediation import scenario
from tests.remediation.conftest import body_of, fixture, install_fixed_clock_runtime

pytestmark = pytest.mark.stack

runner = CliRunner()


@pytest.fixture
def signed_in_entra(entra) -> Iterator[object]:
    """Entra ID polled every second for device codes, access tokens that live a minute
    (MSAL renews any token within five minutes of expiry: every use redeems the
    refresh token); restored afterwards."""
    saved = (entra.device_code_interval_seconds, entra.token_lifetime_seconds)
    entra.device_code_interval_seconds, entra.token_lifetime_seconds = 1, 60
    yield entra
    entra.device_code_interval_seconds, entra.token_lifetime_seconds = saved
    entra.enable_user(scenario.SERVICE_ACCOUNT)


SECRET = "adminservice-session"
APP_CLIENT, APP_SECRET = "5a1c0de0-0000-4000-8000-00000000c0de", "app-identity-secret"


@pytest.fixture(params=["blob", "keyvault"])
def session_settings(request, entra, local_ca, runtime_overrides) -> Iterator[dict[str, str]]:
    """Where the session is kept: a blob of the state container, or a Key Vault secret
    on which the app's identity (a client of the Entra ID simulator here) holds Key
    Vault Secrets Officer, on that secret only."""
    if request.param == "blob":
        yield {}
        return
    entra.add_api(VAULT_RESOURCE, scopes=("user_impersonation",), app_id=VAULT_APP_ID)
    identity = entra.add_client(APP_CLIENT, secret=APP_SECRET)
    with KeyVaultSimulator.for_entra(local_ca, entra, vault_name="cm-remediate-kv") as vault:
        vault.grant(identity.service_principal_id, "Key Vault Secrets Officer", secret=SECRET)
        credential = ClientSecretCredential(
            entra.tenant_id,
            APP_CLIENT,
            APP_SECRET,
            authority=entra.authority_host,
            disable_instance_discovery=True,
            connection_verify=str(local_ca.bundle_path),
        )
        runtime_overrides(vault_credential=credential, vault_transport=vault.transport())
        yield {"ADMINSERVICE_SESSION_SECRET_URI": f"{vault.vault_url}/secrets/{SECRET}"}
        assert vault.internal_errors == []


@pytest.fixture
def session_app(make_remediation, monkeypatch, signed_in_entra, session_settings):
    """The remediation app with ADMINSERVICE_AUTH=refresh-token and no password."""
    remediation = make_remediation(ADMINSERVICE_AUTH="refresh-token", **session_settings)
    monkeypatch.delenv("ADMINSERVICE_PASSWORD")
    remediation.runtime = install_fixed_clock_runtime()  # the functions' runtime, rebuilt
    return remediation


def session_tokens():
    """The AdminService tokens one more instance of the app would use."""
    runtime = Runtime.from_environment()
    return adminservice_tokens(
        runtime.settings, runtime.http, lambda: runtime.session_store, time.monotonic
    )


def sign_in(entra, account: str = scenario.SERVICE_ACCOUNT):
    """``cmremediate sign-in`` while the admin approves the code shown, with MFA."""
    results = []
    thread = threading.Thread(
        # an operator error propagates here (`cmremediate` itself prints it, exit 2)
        target=lambda: results.append(runner.invoke(app, ["sign-in"]))
    )
    thread.start()
    code = entra.wait_for_device_code(timeout=30)
    entra.approve_device_code(code.user_code, account, mfa=True)
    thread.join(timeout=60)
    (result,) = results
    return result, code


def test_sign_in_by_device_code_then_remediate_without_a_password(session_app, signed_in_entra):
    before = len(signed_in_entra.requests)  # the simulator serves the whole session
    result, code = sign_in(signed_in_entra)
    assert result.exit_code == 0, result.output
    assert code.user_code in result.stdout and "microsoft.com/devicelogin" in result.stdout
    assert f"signed in as {scenario.SERVICE_ACCOUNT}" in result.stdout
    runtime = Runtime.from_environment()
    stored = runtime.session_store.load()
    assert stored is not None and "RefreshToken" in stored.text
    assert stored.text not in result.stdout  # the session is never printed

    tokens = session_app.capture_tokens()
    # export (the timer) and remediation (the host's queue listener), through the worker
    (record,) = session_app.stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name="PC-ADD01",
                time_utc=datetime(2026, 11, 20, 8, 30),
                insertion_strings=("MsgType_Office365Upgrade", "projectInstalled"),
            )
        ]
    )
    session_app.app.export()
    with session_app.app.listener(visibility_timeout_seconds=0) as listener:
        assert listener.drain_until_empty().succeeded == 1
    added = session_app.runtime.audit.query(machine_name="PC-ADD01")
    assert [(o.record_id, o.kind) for o in added] == [(record, "added")]
    assert "ADMINSERVICE_PASSWORD" not in os.environ
    claims = signed_in_entra.verify(tokens[-1], "https://ConfigMgrService")
    assert claims["upn"] == scenario.SERVICE_ACCOUNT and "mfa" in claims["amr"]
    grants = {r.grant_type for r in signed_in_entra.requests[before:]}
    assert "password" not in grants and "refresh_token" in grants


def test_another_account_signing_in_stores_nothing(session_app, signed_in_entra, monkeypatch):
    signed_in_entra.add_user("someone.else@contoso.example", "pw")
    monkeypatch.setenv("ADMINSERVICE_USERNAME", scenario.SERVICE_ACCOUNT)
    result, _ = sign_in(signed_in_entra, "someone.else@contoso.example")
    assert result.exit_code != 0
    assert "not " + scenario.SERVICE_ACCOUNT in str(result.exception)
    assert Runtime.from_environment().session_store.load() is None


def test_two_instances_renewing_at_once_keep_one_valid_session(session_app, signed_in_entra):
    assert sign_in(signed_in_entra)[0].exit_code == 0
    tokens = [session_tokens(), session_tokens()]  # two instances
    got: list[str] = []
    barrier = threading.Barrier(2)

    def renew(provider) -> None:
        barrier.wait()
        got.append(provider.token(fresh=True))

    threads = [threading.Thread(target=renew, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2
    # whatever was stored last is a session that works, for a third instance too
    assert session_tokens().token(fresh=True)
    for provider in tokens:
        assert provider.token(fresh=True)


def test_a_revoked_session_is_one_clear_error_and_nothing_is_lost(session_app, signed_in_entra):
    assert sign_in(signed_in_entra)[0].exit_code == 0
    signed_in_entra.revoke_sessions(scenario.SERVICE_ACCOUNT)
    body = body_of(fixture("01-add"))
    with pytest.raises(
        InvocationFailed, match=r"^SignInNeeded: sign-in needed: run cmremediate sign-in"
    ):
        session_app.deliver(body, message_id="revoked")
    request = RemediationRequest.model_validate(fixture("01-add")["body"])
    assert session_app.outcome(request) is None  # not decided: the host delivers it again
    health = session_app.app.health()
    assert health.status == 503
    assert "sign-in needed: run cmremediate sign-in" in health.body.decode("utf-8")

    assert sign_in(signed_in_entra)[0].exit_code == 0  # an admin signs in anew
    session_app.deliver(body, message_id="revoked", dequeue_count=2)
    assert session_app.outcome(request).kind == "added"
