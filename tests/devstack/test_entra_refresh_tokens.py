"""The Entra simulator's refresh tokens through real MSAL and its serializable cache:
rotation on every redemption, 90 days of inactivity, session revocation, a disabled
account and a sign-in frequency policy, with the simulator's clock moved instead of
waiting. Tokens come from the device code flow (a test approves the code), so no
port-443 user realm is needed (``user_realm=False``).
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import msal
import pytest

from devstack.entra import EntraSimulator
from devstack.tls import LocalCA
from tests.devstack.entra_support import PASSWORD, session_for

SCOPE = "https://ConfigMgrService/user_impersonation"
DAY = 86400


@pytest.fixture(autouse=True)
def _quiet_msal_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture
def sim(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(local_ca, user_realm=False, device_code_interval_seconds=1) as server:
        server.add_api()  # the ConfigMgr server app: v1 tokens, user_impersonation
        yield server


class SignedIn:
    """An MSAL public client app with a serializable cache, after a device code sign-in."""

    def __init__(self, sim: EntraSimulator, ca: LocalCA, client_id: str, upn: str) -> None:
        self.sim, self.upn = sim, upn
        self.ca, self.client_id = ca, client_id
        self.cache = msal.SerializableTokenCache()
        self.app = self.reopen()
        self.result = self.sign_in()

    def reopen(self) -> Any:
        """A new app object on the same cache, as a CLI run again reads its persisted
        cache. (MSAL answers a request identical to one that got HTTP 400 in the last
        60 s from memory, so the same app object would not ask Entra again.)"""
        cache = msal.SerializableTokenCache()
        cache.deserialize(self.cache.serialize())
        self.cache = cache
        self.app = msal.PublicClientApplication(
            self.client_id,
            authority=self.sim.authority,
            instance_discovery=False,
            http_client=session_for(self.ca),
            token_cache=cache,
        )
        return self.app

    def sign_in(self) -> dict[str, Any]:
        flow = self.app.initiate_device_flow(scopes=[SCOPE])
        self.sim.approve_device_code(flow["user_code"], self.upn)
        result: dict[str, Any] = self.app.acquire_token_by_device_flow(flow)
        assert "access_token" in result, result
        return result

    def refresh(self) -> dict[str, Any]:
        """``acquire_token_silent`` past a valid access token: the refresh token is redeemed."""
        account = self.app.get_accounts(username=self.upn)[0]
        result: dict[str, Any] = self.app.acquire_token_silent_with_error(
            [SCOPE], account=account, force_refresh=True
        )
        return result

    def cached_refresh_tokens(self) -> list[str]:
        """The refresh tokens in the serialized cache, as a client would persist them."""
        state = json.loads(self.cache.serialize())
        return [entry["secret"] for entry in state.get("RefreshToken", {}).values()]


def assert_entra_error(result: dict[str, Any], error: str, code: int) -> None:
    assert "access_token" not in result
    assert result["error"] == error, result
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")


@pytest.fixture
def signed_in(sim: EntraSimulator, local_ca: LocalCA, client_id: str, admin: str) -> SignedIn:
    return SignedIn(sim, local_ca, client_id, admin)


# -- rotation ----------------------------------------------------------------------------


def test_every_redemption_rotates_and_the_old_token_stays_valid(signed_in: SignedIn) -> None:
    (first,) = signed_in.cached_refresh_tokens()
    assert first == signed_in.result["refresh_token"]

    refreshed = signed_in.refresh()
    assert refreshed["token_source"] == "identity_provider"
    assert signed_in.sim.requests[-1].grant_type == "refresh_token"
    assert signed_in.sim.requests[-1].username == signed_in.upn
    (second,) = signed_in.cached_refresh_tokens()  # MSAL keeps the newest only
    assert second != first
    assert "access_token" in signed_in.refresh()
    (third,) = signed_in.cached_refresh_tokens()
    assert third not in (first, second)

    # Entra does not revoke a refresh token when it is redeemed.
    again = signed_in.app.acquire_token_by_refresh_token(first, scopes=[SCOPE])
    assert "access_token" in again
    claims = signed_in.sim.verify(again["access_token"], "https://ConfigMgrService")
    assert claims["upn"] == signed_in.upn
    assert claims["amr"] == ["pwd", "mfa"]


def test_a_refresh_answer_carries_a_refresh_token_whatever_the_scope(
    signed_in: SignedIn, local_ca: LocalCA, client_id: str
) -> None:
    form = {
        "grant_type": "refresh_token",
        "client_id": client_id,
        "refresh_token": signed_in.result["refresh_token"],
        "scope": SCOPE,  # no offline_access
    }
    answer = session_for(local_ca).post(signed_in.sim.token_endpoint, data=form, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["refresh_token"] not in (None, form["refresh_token"])


def test_rotation_that_invalidates_the_old_token_is_a_flag(signed_in: SignedIn) -> None:
    signed_in.sim.rotation_invalidates_old = True
    (first,) = signed_in.cached_refresh_tokens()
    assert "access_token" in signed_in.refresh()
    reused = signed_in.app.acquire_token_by_refresh_token(first, scopes=[SCOPE])
    assert_entra_error(reused, "invalid_grant", 9002313)
    assert "access_token" in signed_in.refresh()  # the rotated one works


# -- lifetime ------------------------------------------------------------------------------


def test_ninety_days_of_inactivity(signed_in: SignedIn) -> None:
    sim = signed_in.sim
    sim.advance_clock(89 * DAY)
    assert "access_token" in signed_in.refresh()  # used in time: a fresh 90 days
    sim.advance_clock(89 * DAY)
    assert "access_token" in signed_in.refresh()

    sim.advance_clock(90 * DAY + 1)
    expired = signed_in.refresh()
    assert_entra_error(expired, "invalid_grant", 700082)
    assert "The refresh token has expired due to inactivity." in expired["error_description"]
    assert "was inactive for 90.00:00:00" in expired["error_description"]

    assert "access_token" in signed_in.sign_in()  # the user signs in again
    assert "access_token" in signed_in.refresh()


def test_inactivity_is_configurable(signed_in: SignedIn) -> None:
    signed_in.sim.refresh_token_max_inactive_seconds = 3600
    signed_in.sim.advance_clock(3601)
    expired = signed_in.refresh()
    assert_entra_error(expired, "invalid_grant", 700082)
    assert "was inactive for 01:00:00" in expired["error_description"]


def test_an_injectable_clock(local_ca: LocalCA) -> None:
    now = [1_700_000_000.0]
    with EntraSimulator(local_ca, user_realm=False, clock=lambda: now[0]) as sim:
        assert sim.now() == 1_700_000_000.0
        now[0] += 5
        sim.advance_clock(10)
        assert sim.now() == 1_700_000_015.0
        with pytest.raises(ValueError, match="forward"):
            sim.advance_clock(-1)


# -- revocation, disabled accounts, sign-in frequency --------------------------------------


def test_revoked_sessions_need_a_new_sign_in(signed_in: SignedIn) -> None:
    sim = signed_in.sim
    sim.advance_clock(1)
    sim.revoke_sessions(signed_in.upn)  # Revoke-MgUserSignInSession
    revoked = signed_in.refresh()
    assert_entra_error(revoked, "invalid_grant", 50173)
    assert "TokensValidFrom" in revoked["error_description"]
    old = signed_in.app.acquire_token_by_refresh_token(
        signed_in.result["refresh_token"], scopes=[SCOPE]
    )
    assert_entra_error(old, "invalid_grant", 50173)

    sim.advance_clock(1)
    signed_in.sign_in()  # tokens issued after the revocation work
    assert "access_token" in signed_in.refresh()


def test_a_disabled_account(signed_in: SignedIn, local_ca: LocalCA, client_id: str) -> None:
    sim = signed_in.sim
    plain = f"svc-{uuid.uuid4().hex[:8]}@contoso.example"
    sim.add_user(plain, PASSWORD)
    sim.disable_user(signed_in.upn)
    sim.disable_user(plain)
    assert_entra_error(signed_in.refresh(), "invalid_grant", 50057)

    def password_grant(password: str) -> dict[str, Any]:
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "username": plain,
            "password": password,
            "scope": SCOPE,
        }
        answer = session_for(local_ca).post(sim.token_endpoint, data=form, timeout=10)
        result: dict[str, Any] = answer.json()
        return result

    assert_entra_error(password_grant("wrong"), "invalid_grant", 50126)  # wrong first
    disabled = password_grant(PASSWORD)
    assert_entra_error(disabled, "invalid_grant", 50057)
    assert "The user account is disabled." in disabled["error_description"]

    sim.enable_user(signed_in.upn)
    asked = len(sim.requests)
    assert_entra_error(signed_in.refresh(), "invalid_grant", 50057)  # MSAL's memory ...
    assert len(sim.requests) == asked
    signed_in.reopen()
    assert "access_token" in signed_in.refresh()  # ... not Entra's


def test_sign_in_frequency(signed_in: SignedIn) -> None:
    sim = signed_in.sim
    sim.set_sign_in_frequency(signed_in.upn, 3600)
    sim.advance_clock(1800)
    assert "access_token" in signed_in.refresh()  # the new token keeps the old sign-in time
    sim.advance_clock(1801)
    too_old = signed_in.refresh()
    assert_entra_error(too_old, "invalid_grant", 70043)
    assert too_old["suberror"] == "token_expired"
    assert "sign-in frequency checks by conditional access" in too_old["error_description"]
    assert "the maximum allowed lifetime for this request is 3600" in too_old["error_description"]

    signed_in.sign_in()  # a new sign-in starts the clock again
    assert "access_token" in signed_in.refresh()
    sim.set_sign_in_frequency(signed_in.upn, None)
    sim.advance_clock(7200)
    assert "access_token" in signed_in.refresh()
    with pytest.raises(ValueError, match="positive"):
        sim.set_sign_in_frequency(signed_in.upn, 0)
