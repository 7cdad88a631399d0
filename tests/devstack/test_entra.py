"""The Entra ID simulator through real MSAL: the flows cm-remediate uses, Entra's errors,
MSAL's cache against it, and the faults (down, 5xx, untrusted CA, malformed requests).

MSAL's username/password flow asks <authority host>:443 first, so the user realm
responder binds port 443 (these machines run as root). The shared simulator gets a
loopback address of its own (127.x.y.z), so test runs in parallel processes do not
fight over 127.0.0.1:443; one test covers the default localhost set-up.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import ssl
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import jwt
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devstack.entra import (
    DEFAULT_TENANT_ID,
    EntraSimulator,
    UserRealmResponder,
    UserRealmUnavailable,
    generate_client_certificate,
)
from devstack.tls import LocalCA

SCOPE = "https://ConfigMgrService/user_impersonation"
DEFAULT_SCOPE = "https://ConfigMgrService/.default"
WEBSERVICE_URI = "api://cm-webservice"
WEBSERVICE_SCOPE = f"{WEBSERVICE_URI}/.default"
PASSWORD = "Corr3ct-Horse"
#: This process's own loopback address for the shared simulator.
PRIVATE_HOST = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(autouse=True)
def _quiet_msal_deprecations() -> Iterator[None]:
    # MSAL 1.39 deprecates ROPC for public clients; that flow is the one under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("entra-ca"))


@pytest.fixture(scope="module")
def sim(ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(ca, host=PRIVATE_HOST) as server:
        server.add_api()  # the ConfigMgr server app: v1 tokens, user_impersonation
        server.add_api(WEBSERVICE_URI, scopes=("access",), app_roles=("Collections.Write",))
        yield server


@pytest.fixture(autouse=True)
def _fresh_settings(sim: EntraSimulator) -> Iterator[None]:
    yield
    sim.token_lifetime_seconds = 3600
    sim.latency_seconds = 0.0
    sim.set_down(False)


def session_for(ca: LocalCA) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify=
    session.verify = str(ca.bundle_path)
    return session


def new_id() -> str:
    return str(uuid.uuid4())


def public_app(sim: EntraSimulator, ca: LocalCA, client_id: str) -> Any:
    return msal.PublicClientApplication(
        client_id, authority=sim.authority, instance_discovery=False, http_client=session_for(ca)
    )


def confidential_app(sim: EntraSimulator, ca: LocalCA, client_id: str, credential: Any) -> Any:
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=sim.authority,
        instance_discovery=False,
        http_client=session_for(ca),
    )


@pytest.fixture
def user(sim: EntraSimulator) -> str:
    upn = f"svc-{uuid.uuid4().hex[:8]}@contoso.example"
    sim.add_user(upn, PASSWORD)
    return upn


@pytest.fixture
def public_client(sim: EntraSimulator) -> str:
    client_id = new_id()
    sim.add_client(client_id, public=True)
    return client_id


def assert_entra_error(result: dict[str, Any], error: str, code: int) -> None:
    assert "access_token" not in result
    assert result["error"] == error, result
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert result[key]


# -- discovery and keys ----------------------------------------------------------------


def test_discovery_document_and_keys(sim: EntraSimulator, ca: LocalCA) -> None:
    session = session_for(ca)
    config = session.get(sim.openid_configuration_url, timeout=5).json()
    assert sim.authority_host == f"https://{PRIVATE_HOST}:{sim.port}"
    assert config["issuer"] == sim.issuer == f"{sim.authority_host}/{DEFAULT_TENANT_ID}/v2.0"
    assert config["token_endpoint"] == sim.token_endpoint
    assert config["jwks_uri"] == sim.jwks_uri
    assert config["authorization_endpoint"].endswith("/oauth2/v2.0/authorize")
    assert config["device_authorization_endpoint"].endswith("/oauth2/v2.0/devicecode")
    keys = session.get(config["jwks_uri"], timeout=5).json()["keys"]
    assert keys[0] == sim.public_jwk()
    assert {"kty", "use", "kid", "n", "e", "x5c", "x5t"} <= keys[0].keys()
    assert keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig"

    unknown = session.get(
        f"{sim.authority_host}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration", timeout=5
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_tenant"
    assert unknown.json()["error_codes"] == [90002]


def test_msal_with_an_unknown_tenant_fails_at_construction(
    sim: EntraSimulator, ca: LocalCA
) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal.PublicClientApplication(
            new_id(),
            authority=f"{sim.authority_host}/{uuid.uuid4()}",
            instance_discovery=False,
            http_client=session_for(ca),
        )


# -- delegated tokens (ROPC) ---------------------------------------------------------------


def test_username_password_gives_a_token_verify_accepts(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str
) -> None:
    app = public_app(sim, ca, public_client)
    realm_before = len(sim.user_realm.http_log) if sim.user_realm else 0
    result = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3600
    assert result["ext_expires_in"] == 3600
    assert result["scope"].split()[0] == SCOPE
    assert result["refresh_token"] and result["id_token"]
    padded = result["client_info"] + "=" * (-len(result["client_info"]) % 4)
    info = json.loads(base64.urlsafe_b64decode(padded))
    claims = sim.verify(result["access_token"], "https://ConfigMgrService")
    assert info == {"uid": claims["oid"], "utid": DEFAULT_TENANT_ID}

    # The ConfigMgr server app gets v1.0 access tokens (accessTokenAcceptedVersion null).
    assert claims["aud"] == "https://ConfigMgrService"
    assert claims["iss"] == sim.issuer_v1 == f"https://sts.windows.net/{DEFAULT_TENANT_ID}/"
    assert claims["ver"] == "1.0"
    assert claims["tid"] == DEFAULT_TENANT_ID
    assert claims["scp"] == "user_impersonation"
    assert claims["upn"] == user
    assert claims["appid"] == public_client and claims["appidacr"] == "0"
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert "roles" not in claims
    assert jwt.get_unverified_header(result["access_token"])["kid"] == sim.public_jwk()["kid"]
    # The ID token is v2.0 and names the user: MSAL builds its account from it.
    assert result["id_token_claims"]["preferred_username"] == user
    assert result["id_token_claims"]["aud"] == public_client
    assert [a["username"] for a in app.get_accounts(username=user.upper())] == [user]

    # What MSAL asked: discovery once, the user realm on port 443, then the token.
    routes = [(e.method, e.target.split("?")[0]) for e in sim.http_log[-2:]]
    assert routes == [
        ("GET", f"/{DEFAULT_TENANT_ID}/v2.0/.well-known/openid-configuration"),
        ("POST", f"/{DEFAULT_TENANT_ID}/oauth2/v2.0/token"),
    ]
    assert sim.user_realm is not None
    realm = sim.user_realm.http_log[realm_before:]
    assert [(e.method, e.target) for e in realm] == [
        ("GET", f"/common/userrealm/{user}?api-version=1.0")
    ]
    request = sim.requests[-1]
    assert (request.grant_type, request.username, request.outcome) == ("password", user, "ok")
    assert request.scope == f"{SCOPE} offline_access openid profile"


def test_v2_api_tokens(sim: EntraSimulator, ca: LocalCA, user: str, public_client: str) -> None:
    api = sim.add_api("api://cm-v2-api", scopes=("read", "write"), access_token_version=2)
    app = public_app(sim, ca, public_client)
    result = app.acquire_token_by_username_password(
        user, PASSWORD, scopes=["api://cm-v2-api/read", "api://cm-v2-api/write"]
    )
    claims = sim.verify(result["access_token"], api.app_id)
    assert claims["aud"] == api.app_id
    assert claims["iss"] == sim.issuer and claims["ver"] == "2.0"
    assert claims["azp"] == public_client and claims["azpacr"] == "0"
    assert claims["preferred_username"] == user and "upn" not in claims
    assert claims["scp"] == "read write"
    with pytest.raises(jwt.InvalidAudienceError):
        sim.verify(result["access_token"], "api://cm-v2-api")


@pytest.mark.parametrize(
    "scope",
    [DEFAULT_SCOPE, "api://{tenant}/{app_id}/.default", "{app_id}/user_impersonation"],
)
def test_scope_forms_name_the_configmgr_api(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str, scope: str
) -> None:
    api = sim.api("https://ConfigMgrService")
    scope = scope.format(tenant=sim.tenant_id, app_id=api.app_id)
    resource = scope.rpartition("/")[0]
    result = public_app(sim, ca, public_client).acquire_token_by_username_password(
        user, PASSWORD, scopes=[scope]
    )
    claims = sim.verify(result["access_token"], resource)  # v1: aud is the name used
    assert claims["scp"] == "user_impersonation"
    assert result["scope"].split()[0] == f"{resource}/user_impersonation"


def test_wrong_password(sim: EntraSimulator, ca: LocalCA, user: str, public_client: str) -> None:
    result = public_app(sim, ca, public_client).acquire_token_by_username_password(
        user, "wrong-" + PASSWORD, scopes=[SCOPE]
    )
    assert_entra_error(result, "invalid_grant", 50126)
    assert "invalid username or password" in result["error_description"]
    assert sim.requests[-1].outcome == "invalid_grant"
    assert PASSWORD not in repr(sim.requests)


def test_unknown_user(sim: EntraSimulator, ca: LocalCA, public_client: str) -> None:
    result = public_app(sim, ca, public_client).acquire_token_by_username_password(
        "nobody@contoso.example", PASSWORD, scopes=[SCOPE]
    )
    assert_entra_error(result, "invalid_grant", 50034)


def test_mfa_user_cannot_use_a_password(
    sim: EntraSimulator, ca: LocalCA, public_client: str
) -> None:
    upn = f"mfa-{uuid.uuid4().hex[:8]}@contoso.example"
    sim.add_user(upn, PASSWORD, mfa_required=True)
    result = public_app(sim, ca, public_client).acquire_token_by_username_password(
        upn, PASSWORD, scopes=[SCOPE]
    )
    # Entra answers invalid_grant + AADSTS50076 (suberror basic_action), not
    # interaction_required: callers must look at the error code.
    assert_entra_error(result, "invalid_grant", 50076)
    assert result["suberror"] == "basic_action"
    # A wrong password is still just a wrong password.
    wrong = public_app(sim, ca, public_client).acquire_token_by_username_password(
        upn, "nope", scopes=[SCOPE]
    )
    assert_entra_error(wrong, "invalid_grant", 50126)


def test_unknown_client(sim: EntraSimulator, ca: LocalCA, user: str) -> None:
    result = public_app(sim, ca, new_id()).acquire_token_by_username_password(
        user, PASSWORD, scopes=[SCOPE]
    )
    assert_entra_error(result, "unauthorized_client", 700016)


def test_unknown_resource_and_bad_scope(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str
) -> None:
    app = public_app(sim, ca, public_client)
    unknown = app.acquire_token_by_username_password(
        user, PASSWORD, scopes=["https://NotConfigMgr/user_impersonation"]
    )
    assert_entra_error(unknown, "invalid_resource", 500011)
    assert "https://NotConfigMgr" in unknown["error_description"]
    bad = app.acquire_token_by_username_password(
        user, PASSWORD, scopes=["https://ConfigMgrService/full_control"]
    )
    assert_entra_error(bad, "invalid_scope", 70011)
    two = app.acquire_token_by_username_password(
        user, PASSWORD, scopes=[SCOPE, f"{WEBSERVICE_URI}/access"]
    )
    assert_entra_error(two, "invalid_scope", 28000)


def test_confidential_client_password_grant(sim: EntraSimulator, ca: LocalCA, user: str) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="s3cret")
    result = confidential_app(sim, ca, client_id, "s3cret").acquire_token_by_username_password(
        user, PASSWORD, scopes=[SCOPE]
    )
    claims = sim.verify(result["access_token"], "https://ConfigMgrService")
    assert claims["appidacr"] == "1" and claims["upn"] == user
    assert sim.requests[-1].client_auth == "secret"
    # Without its secret, a confidential client may not use the password grant.
    missing = public_app(sim, ca, client_id).acquire_token_by_username_password(
        user, PASSWORD, scopes=[SCOPE]
    )
    assert_entra_error(missing, "invalid_client", 7000218)
    assert sim.requests[-1].status == 401


# -- app-only tokens --------------------------------------------------------------------


def test_client_credentials_with_a_secret(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="app-s3cret", app_roles=("Collections.Write", "Other"))
    app = confidential_app(sim, ca, client_id, "app-s3cret")
    before = sim.token_count
    result = app.acquire_token_for_client([WEBSERVICE_SCOPE])
    assert "scope" not in result  # Entra's client-credential answers carry none
    claims = sim.verify(result["access_token"], WEBSERVICE_URI)
    assert claims["roles"] == ["Collections.Write"]  # only roles the API defines
    assert "scp" not in claims and "upn" not in claims and "preferred_username" not in claims
    assert claims["appid"] == client_id and claims["appidacr"] == "1"
    assert claims["oid"] == claims["sub"]
    # MSAL's cache answers the second call: no new request, the same token.
    again = app.acquire_token_for_client([WEBSERVICE_SCOPE])
    assert again["access_token"] == result["access_token"]
    assert again["token_source"] == "cache"
    assert sim.token_count == before + 1
    assert "app-s3cret" not in repr(sim.requests)


def test_client_credentials_with_a_wrong_secret(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="right")
    result = confidential_app(sim, ca, client_id, "wrong").acquire_token_for_client(
        [WEBSERVICE_SCOPE]
    )
    assert_entra_error(result, "invalid_client", 7000215)
    assert sim.requests[-1].status == 401


def test_client_credentials_need_dot_default(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="right")
    result = confidential_app(sim, ca, client_id, "right").acquire_token_for_client(
        [f"{WEBSERVICE_URI}/access"]
    )
    assert_entra_error(result, "invalid_scope", 1002012)


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return generate_client_certificate("cm-remediate-test")


@pytest.mark.parametrize("form", ["thumbprint", "public_certificate", "production"])
def test_client_credentials_with_a_certificate(
    sim: EntraSimulator, ca: LocalCA, certificate: tuple[bytes, bytes], form: str
) -> None:
    key_pem, cert_pem = certificate
    client_id = new_id()
    sim.add_client(client_id, certificate_pem=cert_pem, app_roles=("Collections.Write",))
    thumbprint = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA1()).hex()  # noqa: S303
    credential: dict[str, str] = {
        # MSAL signs RS256 with x5t (SHA-1 thumbprint) ...
        "thumbprint": {"private_key": key_pem.decode(), "thumbprint": thumbprint},
        # ... or PS256 with x5t#S256 and x5c from the certificate ...
        "public_certificate": {
            "private_key": key_pem.decode(),
            "public_certificate": cert_pem.decode(),
        },
        # ... or, given both (as shared.platform.tokens does), RS256 with x5t and x5c.
        "production": {
            "private_key": key_pem.decode(),
            "thumbprint": thumbprint,
            "public_certificate": cert_pem.decode(),
        },
    }[form]
    result = confidential_app(sim, ca, client_id, credential).acquire_token_for_client(
        [WEBSERVICE_SCOPE]
    )
    claims = sim.verify(result["access_token"], WEBSERVICE_URI)
    assert claims["appidacr"] == "2" and claims["roles"] == ["Collections.Write"]
    assert sim.requests[-1].client_auth == "certificate"


def test_client_assertion_with_an_unregistered_certificate(
    sim: EntraSimulator, ca: LocalCA, certificate: tuple[bytes, bytes]
) -> None:
    _, registered = certificate
    other_key, other_cert = generate_client_certificate("someone-else")
    client_id = new_id()
    sim.add_client(client_id, certificate_pem=registered)
    credential = {"private_key": other_key.decode(), "public_certificate": other_cert.decode()}
    result = confidential_app(sim, ca, client_id, credential).acquire_token_for_client(
        [WEBSERVICE_SCOPE]
    )
    assert_entra_error(result, "invalid_client", 700027)


# -- MSAL's cache, refresh tokens and expiry ---------------------------------------------


def test_cache_then_refresh_token_after_expiry(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str
) -> None:
    app = public_app(sim, ca, public_client)
    first = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    account = app.get_accounts(username=user)[0]
    count = sim.token_count
    cached = app.acquire_token_silent([SCOPE], account=account)
    assert cached["access_token"] == first["access_token"]
    assert cached["token_source"] == "cache"
    assert sim.token_count == count

    # MSAL treats a token with under 5 minutes left as expired and redeems the
    # refresh token for a new one.
    sim.token_lifetime_seconds = 120
    short = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    assert short["expires_in"] == 120
    renewed = app.acquire_token_silent([SCOPE], account=account)
    assert renewed["token_source"] == "identity_provider"
    assert renewed["access_token"] not in (first["access_token"], short["access_token"])
    assert sim.token_count == count + 2
    assert sim.requests[-1].grant_type == "refresh_token"
    assert sim.requests[-1].username == user
    assert sim.verify(renewed["access_token"], "https://ConfigMgrService")["upn"] == user


def test_password_change_revokes_refresh_tokens(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str
) -> None:
    sim.token_lifetime_seconds = 60
    app = public_app(sim, ca, public_client)
    app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    account = app.get_accounts(username=user)[0]
    time.sleep(0.01)
    sim.set_password(user, "N3w-" + PASSWORD)
    result = app.acquire_token_silent_with_error([SCOPE], account=account)
    assert_entra_error(result, "invalid_grant", 50173)


def test_expired_app_token_is_renewed(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="s")
    app = confidential_app(sim, ca, client_id, "s")
    sim.token_lifetime_seconds = 60
    first = app.acquire_token_for_client([WEBSERVICE_SCOPE])
    second = app.acquire_token_for_client([WEBSERVICE_SCOPE])
    assert second["token_source"] == "identity_provider"
    assert second["access_token"] != first["access_token"]


# -- token validation ---------------------------------------------------------------------


def test_verify_rejects_what_a_resource_server_must(
    sim: EntraSimulator, ca: LocalCA, user: str, public_client: str
) -> None:
    app = public_app(sim, ca, public_client)
    good = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    token = good["access_token"]
    with pytest.raises(jwt.InvalidAudienceError):
        sim.verify(token, WEBSERVICE_URI)
    with pytest.raises(jwt.InvalidAudienceError):  # an ID token is no access token
        sim.verify(good["id_token"], "https://ConfigMgrService")
    header, payload, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["upn"] = "admin@contoso.example"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        sim.verify(f"{header}.{forged_payload}.{signature}", "https://ConfigMgrService")
    sim.token_lifetime_seconds = 0
    expired = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])
    time.sleep(1.05)  # exp has whole seconds; no leeway
    with pytest.raises(jwt.ExpiredSignatureError):
        sim.verify(expired["access_token"], "https://ConfigMgrService")


def test_key_rotation_keeps_old_tokens_valid(
    ca: LocalCA, sim: EntraSimulator, user: str, public_client: str
) -> None:
    app = public_app(sim, ca, public_client)
    old = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = sim.rotate_signing_key()
    new = app.acquire_token_by_username_password(user, PASSWORD, scopes=[SCOPE])["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    assert {k["kid"] for k in sim.jwks()["keys"]} >= {old_kid, new_kid}
    sim.verify(old, "https://ConfigMgrService")
    sim.verify(new, "https://ConfigMgrService")


# -- faults --------------------------------------------------------------------------------


def test_set_down_refuses_connections_then_recovers(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="s")
    app = confidential_app(sim, ca, client_id, "s")
    port = sim.port
    sim.set_down(True)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((sim.host, port), 1):
        pass
    with pytest.raises(requests.ConnectionError):
        app.acquire_token_for_client([WEBSERVICE_SCOPE])
    sim.set_down(False)
    assert sim.port == port
    assert "access_token" in app.acquire_token_for_client([WEBSERVICE_SCOPE])


def test_fail_next_and_msal_throttling(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="s")
    app = confidential_app(sim, ca, client_id, "s")
    # With Retry-After: 0 MSAL does not hold on to the error: the retry goes out.
    sim.fail_next(1, 503, retry_after=0)
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        app.acquire_token_for_client([WEBSERVICE_SCOPE])
    assert sim.requests[-1].outcome == "temporarily_unavailable"
    assert "access_token" in app.acquire_token_for_client([WEBSERVICE_SCOPE])

    # Without Retry-After, MSAL replays the 5xx from its own cache for 5 s
    # (confidential clients; 60 s for public ones) without asking again.
    other = confidential_app(sim, ca, client_id, "s")
    sim.fail_next(1, 500)
    with pytest.raises(msal.exceptions.MsalServiceError):
        other.acquire_token_for_client([f"{WEBSERVICE_URI}/.default"])
    seen = len(sim.requests)
    with pytest.raises(msal.exceptions.MsalServiceError):
        other.acquire_token_for_client([f"{WEBSERVICE_URI}/.default"])
    assert len(sim.requests) == seen


def test_untrusted_ca_is_a_tls_error(sim: EntraSimulator, tmp_path: Path) -> None:
    stranger = session_for(LocalCA(tmp_path))
    with pytest.raises(requests.exceptions.SSLError):
        msal.PublicClientApplication(
            new_id(), authority=sim.authority, instance_discovery=False, http_client=stranger
        )


def test_requests_ca_bundle_overrides_verify_unless_trust_env_is_off(
    sim: EntraSimulator, ca: LocalCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    trusting_env = requests.Session()
    trusting_env.verify = str(ca.bundle_path)
    with pytest.raises(requests.exceptions.SSLError):
        trusting_env.get(sim.openid_configuration_url, timeout=5)
    assert session_for(ca).get(sim.openid_configuration_url, timeout=5).status_code == 200


def test_latency(sim: EntraSimulator, ca: LocalCA) -> None:
    sim.latency_seconds = 0.3
    started = time.perf_counter()
    session_for(ca).get(sim.jwks_uri, timeout=5)
    assert time.perf_counter() - started >= 0.3


def raw_post(sim: EntraSimulator, ca: LocalCA, body: bytes, content_type: str) -> Any:
    return session_for(ca).post(
        sim.token_endpoint, data=body, headers={"Content-Type": content_type}, timeout=5
    )


@pytest.mark.parametrize(
    ("body", "content_type", "error", "code"),
    [
        (b'{"grant_type": "password"}', "application/json", "invalid_request", 900144),
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded", "invalid_request", 900144),
        (b"client_id=x", "application/x-www-form-urlencoded", "invalid_request", 900144),
        (b"grant_type=password&grant_type=password", "application/x-www-form-urlencoded",
         "invalid_request", 9000411),
        (b"grant_type=implicit&client_id=x", "application/x-www-form-urlencoded",
         "unsupported_grant_type", 70003),
        (b"grant_type=password", "application/x-www-form-urlencoded", "invalid_request", 900144),
        (b"grant_type=refresh_token&client_id=CLIENT&refresh_token=forged",
         "application/x-www-form-urlencoded", "invalid_grant", 9002313),
        (b"grant_type=client_credentials&client_id=CLIENT&client_assertion_type=urn%3Aietf%3Aparams"
         b"%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=not.a.jwt&scope=x%2F.default",
         "application/x-www-form-urlencoded", "invalid_client", 50027),
    ],
)  # fmt: skip
def test_malformed_token_requests_get_entra_errors(
    sim: EntraSimulator, ca: LocalCA, public_client: str, body: bytes, content_type: str,
    error: str, code: int,
) -> None:  # fmt: skip
    response = raw_post(sim, ca, body.replace(b"CLIENT", public_client.encode()), content_type)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == error
    assert response.json()["error_codes"] == [code]


def test_garbage_on_the_wire_never_breaks_the_server(sim: EntraSimulator, ca: LocalCA) -> None:
    session = session_for(ca)
    assert session.get(sim.token_endpoint, timeout=5).json()["error_codes"] == [900561]
    # Not TLS at all, a TLS client that gives up, a bad Content-Length, an oversized body.
    with socket.create_connection((sim.host, sim.port), 2) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # the handshake fails: a reset
            assert plain.recv(100) == b""
    with socket.create_connection((sim.host, sim.port), 2):
        pass
    context = ssl.create_default_context(cafile=str(ca.bundle_path))
    for head, status in (
        (b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"NOT-HTTP\r\n\r\n", None),  # http.server answers an HTTP/0.9-style error page
    ):
        with (
            socket.create_connection((sim.host, sim.port), 2) as raw,
            context.wrap_socket(raw, server_hostname=sim.host) as tls,
        ):
            tls.sendall(head)
            answer = tls.recv(200)
            assert status is None or answer.split(b" ")[1] == status
    assert session.get(sim.jwks_uri, timeout=5).status_code == 200


def test_concurrent_token_requests(sim: EntraSimulator, ca: LocalCA) -> None:
    client_id = new_id()
    sim.add_client(client_id, secret="s")
    before = sim.token_count
    results: list[int] = []

    def one() -> None:
        response = session_for(ca).post(
            sim.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": "s",
                "scope": WEBSERVICE_SCOPE,
            },
            timeout=10,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 16
    assert sim.token_count == before + 16


# -- the port-443 user realm responder --------------------------------------------------------


def test_default_localhost_and_port_443(ca: LocalCA, tmp_path: Path, public_client: str) -> None:
    try:
        default = EntraSimulator(ca).start()
    except UserRealmUnavailable as error:
        if "another process" not in str(error):
            raise
        pytest.skip(f"127.0.0.1:443 is busy in another process: {error}")
    try:
        assert default.authority_host == f"https://localhost:{default.port}"
        default.add_api()
        default.add_client(public_client, public=True)
        default.add_user("local@contoso.example", PASSWORD)
        result = public_app(default, ca, public_client).acquire_token_by_username_password(
            "local@contoso.example", PASSWORD, scopes=[SCOPE]
        )
        assert default.verify(result["access_token"], "https://ConfigMgrService")["upn"]
        assert default.user_realm is not None and default.user_realm.http_log
        # A second simulator of the same CA shares the responder; the first keeps it.
        with EntraSimulator(ca) as second:
            assert second.user_realm is not None
        answer = session_for(ca).get(
            "https://localhost/common/userrealm/a@contoso.example?api-version=1.0", timeout=5
        )
        assert answer.json()["account_type"] == "Managed"
        assert answer.json()["domain_name"] == "contoso.example"
        # Another CA cannot serve the same port at once: its clients would refuse this one.
        with pytest.raises(UserRealmUnavailable, match="another LocalCA"):
            UserRealmResponder(LocalCA(tmp_path)).start()
    finally:
        default.stop()


def test_stop_is_clean_and_idempotent(ca: LocalCA) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EntraSimulator(ca, host="example.com")
    server = EntraSimulator(ca, user_realm=False).start()
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
