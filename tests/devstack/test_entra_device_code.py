"""The Entra simulator's device code flow through real MSAL: the devicecode endpoint as
MSAL reads it from discovery, polling while a test plays the admin who signs in with MFA,
and the answers that stop the polling (pending, declined, expired, unknown, reused).

The simulators here run without the port-443 user realm (``user_realm=False``): the
device code flow never asks it, and another test run may hold 127.0.0.1:443.
"""

from __future__ import annotations

import re
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import msal
import pytest

from devstack.entra import DEVICE_CODE_GRANT, EntraSimulator
from devstack.tls import LocalCA
from tests.devstack.entra_support import PASSWORD, session_for
from tests.helpers import wait_until

SCOPE = "https://ConfigMgrService/user_impersonation"


@pytest.fixture(autouse=True)
def _quiet_msal_warnings() -> Iterator[None]:
    # MSAL warns "Attempted too soon" when a test polls twice without waiting.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture
def sim(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(local_ca, user_realm=False, device_code_interval_seconds=1) as server:
        server.add_api()  # the ConfigMgr server app: v1 tokens, user_impersonation
        server.add_api("api://cm-webservice", scopes=("access",), access_token_version=2)
        yield server


def public_app(sim: EntraSimulator, ca: LocalCA, client_id: str, **options: Any) -> Any:
    return msal.PublicClientApplication(
        client_id,
        authority=sim.authority,
        instance_discovery=False,
        http_client=session_for(ca),
        **options,
    )


def assert_entra_error(result: dict[str, Any], error: str, code: int) -> None:
    assert "access_token" not in result
    assert result["error"] == error, result
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")


def poll_once(app: Any, flow: dict[str, Any]) -> dict[str, Any]:
    """One poll of the token endpoint, as MSAL does it, without MSAL's waiting loop."""
    result: dict[str, Any] = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    return result


def polls(sim: EntraSimulator) -> list[str]:
    return [r.outcome for r in sim.requests if r.grant_type == DEVICE_CODE_GRANT]


def in_background(call: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    return thread, box


def password_grant(sim: EntraSimulator, ca: LocalCA, client_id: str, upn: str) -> Any:
    form = {
        "grant_type": "password",
        "client_id": client_id,
        "username": upn,
        "password": PASSWORD,
        "scope": f"{SCOPE} openid offline_access",
    }
    return session_for(ca).post(sim.token_endpoint, data=form, timeout=10)


# -- the endpoint --------------------------------------------------------------------


def test_msal_finds_the_devicecode_endpoint_in_discovery(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str
) -> None:
    config = session_for(local_ca).get(sim.openid_configuration_url, timeout=10).json()
    assert config["device_authorization_endpoint"] == sim.device_authorization_endpoint
    app = public_app(sim, local_ca, client_id)
    assert app.authority.device_authorization_endpoint == sim.device_authorization_endpoint


def test_device_authorization_answer(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str
) -> None:
    sim.device_code_interval_seconds = 5  # Entra's, and the simulator's default
    flow = public_app(sim, local_ca, client_id).initiate_device_flow(scopes=[SCOPE])
    assert re.fullmatch(r"[A-Z0-9]{9}", flow["user_code"])
    assert flow["verification_uri"] == "https://microsoft.com/devicelogin"
    assert flow["expires_in"] == 900
    assert flow["interval"] == 5
    assert flow["message"] == (
        "To sign in, use a web browser to open the page https://microsoft.com/devicelogin "
        f"and enter the code {flow['user_code']} to authenticate."
    )
    assert len(flow["device_code"]) > 100
    assert "verification_uri_complete" not in flow  # Entra does not send it

    raw = session_for(local_ca).post(
        sim.device_authorization_endpoint, data={"client_id": client_id, "scope": SCOPE}, timeout=10
    )
    assert raw.status_code == 200
    assert raw.headers["Cache-Control"] == "no-store, no-cache"
    assert set(raw.json()) == {
        "user_code",
        "device_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    }
    assert raw.json()["user_code"] != flow["user_code"]

    (first, second) = sim.pending_device_codes()
    assert first.user_code == flow["user_code"]
    assert first.client_id == client_id
    assert first.expires_at - first.issued_at == pytest.approx(900)
    assert "offline_access" in first.scope  # MSAL adds openid profile offline_access
    assert second.state == "pending"


def test_devicecode_refusals(sim: EntraSimulator, local_ca: LocalCA, client_id: str) -> None:
    session = session_for(local_ca)
    endpoint = sim.device_authorization_endpoint

    unknown = public_app(sim, local_ca, str(uuid.uuid4())).initiate_device_flow(scopes=[SCOPE])
    assert_entra_error(unknown, "unauthorized_client", 700016)
    assert "user_code" not in unknown

    # The devicecode endpoint answers its errors with HTTP 200 (MSAL.NET reads it so).
    no_scope = session.post(endpoint, data={"client_id": client_id}, timeout=10)
    assert no_scope.status_code == 200
    assert_entra_error(no_scope.json(), "invalid_request", 900144)
    assert "'scope'" in no_scope.json()["error_description"]

    bad_scope = session.post(
        endpoint, data={"client_id": client_id, "scope": "https://nowhere/x"}, timeout=10
    )
    assert_entra_error(bad_scope.json(), "invalid_resource", 500011)
    no_client = session.post(endpoint, data={"scope": SCOPE}, timeout=10)
    assert_entra_error(no_client.json(), "invalid_request", 900144)
    not_a_form = session.post(endpoint, json={"client_id": client_id}, timeout=10)
    assert "'client_id'" in not_a_form.json()["error_description"]
    assert_entra_error(session.get(endpoint, timeout=10).json(), "invalid_request", 900561)
    other_tenant = endpoint.replace(sim.tenant_id, str(uuid.uuid4()))
    wrong = session.post(other_tenant, data={"client_id": client_id, "scope": SCOPE}, timeout=10)
    assert_entra_error(wrong.json(), "invalid_request", 90002)
    assert sim.pending_device_codes() == []


# -- signing in ------------------------------------------------------------------------


def test_admin_signs_in_with_mfa_while_msal_polls(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str
) -> None:
    # The admin's password grant fails the way conditional access makes it fail ...
    refused = password_grant(sim, local_ca, client_id, admin)
    assert_entra_error(refused.json(), "invalid_grant", 50076)

    # ... so they sign in by device code, with MFA, while MSAL polls.
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    thread, box = in_background(lambda: app.acquire_token_by_device_flow(flow))
    assert wait_until(lambda: "authorization_pending" in polls(sim))
    (pending,) = sim.pending_device_codes()
    assert pending.user_code == flow["user_code"]
    sim.approve_device_code(pending.user_code.lower(), admin)  # as typed: any case
    thread.join(timeout=15)
    assert not thread.is_alive()
    (result,) = box

    assert result["token_source"] == "identity_provider"
    assert result["refresh_token"]
    claims = sim.verify(result["access_token"], "https://ConfigMgrService")
    assert claims["upn"] == admin
    assert claims["amr"] == ["pwd", "mfa"]
    assert claims["scp"] == "user_impersonation"
    assert result["id_token_claims"]["preferred_username"] == admin
    assert "amr" not in result["id_token_claims"]  # v2.0 ID tokens carry no amr
    assert app.get_accounts(username=admin)
    assert set(polls(sim)) == {"authorization_pending", "ok"}
    assert sim.requests[-1].username == admin
    assert sim.requests[-1].client_auth == "none"
    assert sim.device_codes()[-1].state == "redeemed"
    assert sim.pending_device_codes() == []

    # The cache serves the token and refreshes it with the device code's refresh token.
    account = app.get_accounts(username=admin)[0]
    cached = app.acquire_token_silent([SCOPE], account=account)
    assert cached["access_token"] == result["access_token"]
    refreshed = app.acquire_token_silent([SCOPE], account=account, force_refresh=True)
    assert refreshed["token_source"] == "identity_provider"
    renewed = sim.verify(refreshed["access_token"], "https://ConfigMgrService")
    assert renewed["amr"] == ["pwd", "mfa"]  # the refresh token remembers the MFA


def test_a_sign_in_without_mfa_and_v2_tokens(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str
) -> None:
    upn = f"svc-{uuid.uuid4().hex[:8]}@contoso.example"
    sim.add_user(upn, PASSWORD)
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=["api://cm-webservice/access"])
    sim.approve_device_code(flow["user_code"], upn, mfa=False)
    result = app.acquire_token_by_device_flow(flow)
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["ver"] == "2.0"
    assert claims["preferred_username"] == upn
    assert "amr" not in claims  # amr is a v1.0 claim only

    flow = app.initiate_device_flow(scopes=[SCOPE])
    sim.approve_device_code(flow["user_code"], upn, mfa=False)
    v1 = sim.verify(
        app.acquire_token_by_device_flow(flow)["access_token"], "https://ConfigMgrService"
    )
    assert v1["amr"] == ["pwd"]


def test_approving_needs_a_pending_code_and_a_user_who_may_sign_in(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str
) -> None:
    flow = public_app(sim, local_ca, client_id).initiate_device_flow(scopes=[SCOPE])
    with pytest.raises(ValueError, match="no pending device code"):
        sim.approve_device_code("NOTACODE1", admin)
    with pytest.raises(ValueError, match="no user"):
        sim.approve_device_code(flow["user_code"], "nobody@contoso.example")
    with pytest.raises(ValueError, match="must complete MFA"):
        sim.approve_device_code(flow["user_code"], admin, mfa=False)
    sim.disable_user(admin)
    with pytest.raises(ValueError, match="disabled"):
        sim.approve_device_code(flow["user_code"], admin)
    sim.enable_user(admin)
    sim.approve_device_code(flow["user_code"], admin)
    with pytest.raises(ValueError, match="no pending device code"):
        sim.approve_device_code(flow["user_code"], admin)  # answered already
    with pytest.raises(ValueError, match="no pending device code"):
        sim.decline_device_code(flow["user_code"])


def test_wait_for_device_code(sim: EntraSimulator, local_ca: LocalCA, client_id: str) -> None:
    with pytest.raises(TimeoutError):
        sim.wait_for_device_code(timeout=0.2)
    app = public_app(sim, local_ca, client_id)
    flows: list[dict[str, Any]] = []
    timer = threading.Timer(0.2, lambda: flows.append(app.initiate_device_flow(scopes=[SCOPE])))
    timer.start()
    pending = sim.wait_for_device_code(timeout=10)
    timer.join()
    assert pending.user_code == flows[0]["user_code"]


# -- what stops the polling ----------------------------------------------------------------


def test_pending_until_someone_signs_in(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str
) -> None:
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    assert_entra_error(poll_once(app, flow), "authorization_pending", 70016)
    assert_entra_error(poll_once(app, flow), "authorization_pending", 70016)
    assert flow["interval"] == 1  # no slow_down by default: Entra documents none
    sim.approve_device_code(flow["user_code"], admin)
    assert "access_token" in poll_once(app, flow)


def test_declined(sim: EntraSimulator, local_ca: LocalCA, client_id: str) -> None:
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    thread, box = in_background(lambda: app.acquire_token_by_device_flow(flow))
    assert wait_until(lambda: "authorization_pending" in polls(sim))
    sim.decline_device_code(flow["user_code"])
    thread.join(timeout=15)
    assert_entra_error(box[0], "authorization_declined", 65004)


def test_expired(sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str) -> None:
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    assert_entra_error(poll_once(app, flow), "authorization_pending", 70016)
    sim.advance_clock(900)  # the user had 15 minutes
    result = app.acquire_token_by_device_flow(flow)  # MSAL stops polling on it
    assert_entra_error(result, "expired_token", 70020)
    assert "This device code has expired." in result["error_description"]
    with pytest.raises(ValueError, match="no pending device code"):
        sim.approve_device_code(flow["user_code"], admin)

    sim.device_code_lifetime_seconds = 60
    short = app.initiate_device_flow(scopes=[SCOPE])
    assert short["expires_in"] == 60
    sim.approve_device_code(short["user_code"], admin)
    sim.advance_clock(61)  # approved, but not redeemed in time
    assert_entra_error(poll_once(app, short), "expired_token", 70020)


def test_unknown_and_reused_device_codes(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str
) -> None:
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    made_up = dict(flow, device_code="DAQABIQEAAAD--not-a-device-code")
    assert_entra_error(poll_once(app, made_up), "bad_verification_code", 70018)

    other_client = str(uuid.uuid4())
    sim.add_client(other_client, public=True)
    stolen = poll_once(public_app(sim, local_ca, other_client), dict(flow))
    assert_entra_error(stolen, "invalid_grant", 70000)

    sim.approve_device_code(flow["user_code"], admin)
    assert "access_token" in app.acquire_token_by_device_flow(flow)
    again = app.acquire_token_by_device_flow(flow)  # a device code is redeemable once
    assert_entra_error(again, "invalid_grant", 70000)

    missing = session_for(local_ca).post(
        sim.token_endpoint, data={"grant_type": DEVICE_CODE_GRANT, "client_id": client_id}
    )
    assert_entra_error(missing.json(), "invalid_request", 900144)
    assert "'device_code'" in missing.json()["error_description"]


def test_a_client_without_public_client_flows(
    sim: EntraSimulator, local_ca: LocalCA, admin: str
) -> None:
    # Entra hands the code out, then refuses to redeem it for a confidential client
    # that proves nothing.
    confidential = str(uuid.uuid4())
    sim.add_client(confidential, public=False, secret="s3cret")
    app = public_app(sim, local_ca, confidential)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    assert "user_code" in flow
    sim.approve_device_code(flow["user_code"], admin)
    result = app.acquire_token_by_device_flow(flow)
    assert_entra_error(result, "invalid_client", 7000218)


def test_a_user_disabled_after_signing_in(
    sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str
) -> None:
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    sim.approve_device_code(flow["user_code"], admin)
    sim.disable_user(admin)
    assert_entra_error(app.acquire_token_by_device_flow(flow), "invalid_grant", 50057)


def test_slow_down_is_opt_in(sim: EntraSimulator, local_ca: LocalCA, client_id: str) -> None:
    sim.device_code_slow_down = True
    sim.device_code_interval_seconds = 5
    app = public_app(sim, local_ca, client_id)
    flow = app.initiate_device_flow(scopes=[SCOPE])
    assert_entra_error(poll_once(app, flow), "authorization_pending", 70016)
    slow = poll_once(app, flow)  # at once, not 5 s later
    assert slow["error"] == "slow_down"
    assert "error_codes" not in slow  # not an Entra answer: no AADSTS code
    assert flow["interval"] == 10  # MSAL waits 5 s more from now on (RFC 8628 3.5)
    sim.advance_clock(10)
    assert_entra_error(poll_once(app, flow), "authorization_pending", 70016)
