"""The Key Vault simulator through Microsoft's own client, azure-keyvault-secrets'
``SecretClient``, over real TLS, with app-only tokens MSAL gets from the Entra ID
simulator: the authentication challenge, secrets and their versions, RBAC, and the
errors the SDK must meet as the service sends them. Raw requests check the wire.

The vault is ``https://<name>.vault.azure.net``, reached on loopback by the
simulator's transport, so the SDK's challenge-resource check stays on (a fresh vault
name per test: the SDK caches challenges per host, process-wide).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared.http_challenge import HttpChallenge
from jwt.utils import base64url_encode

from devstack.entra import EntraSimulator
from devstack.keyvault import (
    MAX_VALUE_BYTES,
    VAULT_APP_ID,
    VAULT_RESOURCE,
    VAULT_SCOPE,
    EntraAppCredential,
    KeyVaultSimulator,
)
from devstack.tls import LocalCA

APP_ID = "0b7c3f4e-2a61-4d2e-9f0a-6c5e8d1b2a30"  # the app's registration
APP_SECRET = "app-secret-value"
OTHER_ID = "5e1d9a77-3c42-4b8f-8e6d-2f0a9b7c4d11"  # a principal without any role
OTHER_SECRET = "other-secret-value"
VERSION = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def entra(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(local_ca, user_realm=False) as simulator:
        # Key Vault as Entra knows it: v1 tokens, audience as the scope names it.
        simulator.add_api(VAULT_RESOURCE, scopes=("user_impersonation",), app_id=VAULT_APP_ID)
        simulator.add_api()  # the ConfigMgr API: a token for another audience
        simulator.add_client(APP_ID, secret=APP_SECRET)
        simulator.add_client(OTHER_ID, secret=OTHER_SECRET)
        yield simulator


@pytest.fixture
def app_oid(entra: EntraSimulator) -> str:
    client = entra.find_client(APP_ID)
    assert client is not None
    return client.service_principal_id


@pytest.fixture
def vault(local_ca: LocalCA, entra: EntraSimulator) -> Iterator[KeyVaultSimulator]:
    name = f"kv-{uuid.uuid4().hex[:12]}"
    with KeyVaultSimulator.for_entra(local_ca, entra, vault_name=name) as simulator:
        yield simulator
        assert simulator.internal_errors == []


@pytest.fixture
def credential(local_ca: LocalCA, entra: EntraSimulator) -> Iterator[EntraAppCredential]:
    cred = EntraAppCredential(entra.authority, APP_ID, APP_SECRET, ca_bundle=local_ca.bundle_path)
    yield cred
    cred.close()


@pytest.fixture
def client(vault: KeyVaultSimulator, credential: EntraAppCredential) -> Iterator[SecretClient]:
    with vault.secret_client(credential) as secret_client:
        yield secret_client


@pytest.fixture
def other_client(
    local_ca: LocalCA, entra: EntraSimulator, vault: KeyVaultSimulator
) -> Iterator[SecretClient]:
    cred = EntraAppCredential(
        entra.authority, OTHER_ID, OTHER_SECRET, ca_bundle=local_ca.bundle_path
    )
    with vault.secret_client(cred) as secret_client:
        yield secret_client
    cred.close()


@pytest.fixture
def rest(
    vault: KeyVaultSimulator, local_ca: LocalCA, entra: EntraSimulator, app_oid: str
) -> Iterator[Callable[..., requests.Response]]:
    """``rest(method, path or URL, **kwargs)``: a raw call as the app, a Secrets Officer."""
    vault.grant(app_oid, "Key Vault Secrets Officer")
    auth = {"Authorization": f"Bearer {_token(local_ca, entra)}"}
    with vault.session() as session:

        def call(method: str, target: str, **kwargs: Any) -> requests.Response:
            url = target if target.startswith("https://") else vault.vault_url + target
            return session.request(method, url, headers=auth, **kwargs)

        yield call


def _token(local_ca: LocalCA, entra: EntraSimulator, scope: str = VAULT_SCOPE) -> str:
    """A fresh app-only token of the app (a new MSAL application: nothing cached)."""
    cred = EntraAppCredential(entra.authority, APP_ID, APP_SECRET, ca_bundle=local_ca.bundle_path)
    try:
        return cred.get_token(scope).token
    finally:
        cred.close()


def _error(response: requests.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    return error


# -- the challenge and the SDK's dance ------------------------------------------------


def test_the_sdk_answers_the_challenge_and_round_trips_a_secret(
    vault: KeyVaultSimulator, client: SecretClient, credential: EntraAppCredential, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")

    created = client.set_secret(
        "msal-token-cache",
        '{"AccessToken": {}}',
        content_type="application/json",
        tags={"owner": "cm-remediate"},
    )

    assert created.value == '{"AccessToken": {}}'
    assert created.properties.content_type == "application/json"
    assert created.properties.tags == {"owner": "cm-remediate"}
    assert created.properties.enabled is True
    assert created.properties.recovery_level == "Recoverable+Purgeable"
    assert VERSION.fullmatch(created.properties.version or "")
    assert created.id == f"{vault.vault_url}/secrets/msal-token-cache/{created.properties.version}"
    # The dance: the PUT goes out without body and token, the 401 names the tenant, the
    # SDK asks the credential for the vault's scope in that tenant and sends it again.
    first, second = vault.requests[:2]
    assert (first.method, first.status, first.principal) == ("PUT", 401, None)
    assert (second.method, second.status, second.principal) == ("PUT", 200, app_oid)
    assert credential.requests == [((VAULT_SCOPE,), vault.tenant_id)]

    fetched = client.get_secret("msal-token-cache")
    assert fetched.value == '{"AccessToken": {}}'
    assert fetched.properties.version == created.properties.version
    # The challenge is cached: no second 401.
    assert [r.status for r in vault.requests] == [401, 200, 200]
    assert vault.latest("msal-token-cache") is not None


def test_the_sdk_refuses_the_vault_at_localhost(
    vault: KeyVaultSimulator, credential: EntraAppCredential, local_ca: LocalCA
) -> None:
    # Why the vault is <name>.vault.azure.net: the challenge's resource must be a
    # parent domain of the vault's (verify_challenge_resource, on by default).
    with (
        SecretClient(
            vault.local_url, credential, connection_verify=str(local_ca.bundle_path)
        ) as at_localhost,
        pytest.raises(ValueError, match="does not match the requested domain"),
    ):
        at_localhost.get_secret("anything")
    assert credential.requests == []


def test_azure_identity_client_secret_credential_works_too(
    vault: KeyVaultSimulator, entra: EntraSimulator, local_ca: LocalCA, app_oid: str
) -> None:
    # The credential class an app deploys with, pointed at the Entra simulator.
    vault.grant(app_oid, "Key Vault Secrets Officer")
    identity = ClientSecretCredential(
        entra.tenant_id,
        APP_ID,
        APP_SECRET,
        authority=entra.authority_host,
        connection_verify=str(local_ca.bundle_path),
        disable_instance_discovery=True,
    )
    with identity, SecretClient(vault.vault_url, identity, transport=vault.transport()) as client:
        assert client.set_secret("cache", "v").value == "v"
        assert client.get_secret("cache").value == "v"
    assert [r.status for r in vault.requests] == [401, 200, 200]


def test_the_challenge_is_what_the_sdk_parses(
    vault: KeyVaultSimulator, entra: EntraSimulator
) -> None:
    with vault.session() as session:
        response = session.put(
            f"{vault.vault_url}/secrets/x?api-version=7.4", headers={"Content-Length": "0"}
        )

    assert response.status_code == 401
    header = response.headers["WWW-Authenticate"]
    assert header == f'Bearer authorization="{entra.authority}", resource="https://vault.azure.net"'
    assert _error(response) == {
        "code": "Unauthorized",
        "message": "AKV10000: Request is missing a Bearer or PoP token.",
    }
    challenge = HttpChallenge(f"{vault.vault_url}/secrets/x", header)
    assert challenge.get_resource() == VAULT_RESOURCE
    assert challenge.tenant_id == entra.tenant_id
    assert "ETag" not in response.headers


# -- secrets and versions -----------------------------------------------------------


def test_every_set_is_a_new_version_and_versions_page_with_next_links(
    vault: KeyVaultSimulator, client: SecretClient, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")
    first = client.set_secret("cache", "one")
    for n in range(2, 24):
        vault.put_secret("cache", f"value {n}")
    last = client.set_secret("cache", "last")

    versions = list(client.list_properties_of_secret_versions("cache", max_page_size=10))

    stored = vault.secret_versions("cache")
    assert len(stored) == 24
    assert {v.version for v in versions} == {s.version for s in stored}
    assert all(VERSION.fullmatch(v.version or "") for v in versions)
    listings = [r for r in vault.requests if r.operation == "GetSecretVersions"]
    assert [r.status for r in listings] == [200, 200, 200]  # 10 + 10 + 4, by nextLink
    assert client.get_secret("cache").value == "last"
    assert client.get_secret("cache", first.properties.version).value == "one"
    assert stored[-1].version == last.properties.version


def test_next_links_are_absolute_with_port_443_and_skiptoken(
    vault: KeyVaultSimulator, rest: Callable[..., requests.Response]
) -> None:
    for n in range(3):
        vault.put_secret("paged", str(n))

    page = rest("GET", "/secrets/paged/versions?api-version=7.4&maxresults=2").json()

    assert len(page["value"]) == 2
    assert "value" not in page["value"][0]
    next_link = page["nextLink"]
    assert next_link.startswith(f"https://{vault.dns_name}:443/secrets/paged/versions?")
    assert "$skiptoken=" in next_link and "maxresults=2" in next_link
    rest_of_it = rest("GET", next_link).json()
    assert len(rest_of_it["value"]) == 1 and rest_of_it["nextLink"] is None
    too_many = rest("GET", "/secrets/paged/versions?api-version=7.4&maxresults=26")
    assert too_many.status_code == 400 and _error(too_many)["code"] == "BadParameter"


def test_the_bundle_has_the_documented_shape_and_no_etag(
    vault: KeyVaultSimulator, rest: Callable[..., requests.Response]
) -> None:
    document = {"value": "v", "contentType": "text/plain", "tags": {"a": "b"}}
    response = rest("PUT", "/secrets/Token-Cache?api-version=7.4", json=document)

    assert response.status_code == 200
    assert "ETag" not in response.headers
    body = response.json()
    assert set(body) == {"value", "contentType", "id", "attributes", "tags"}
    assert re.fullmatch(
        rf"{re.escape(vault.vault_url)}/secrets/Token-Cache/[0-9a-f]{{32}}", body["id"]
    )
    attributes = body["attributes"]
    assert set(attributes) == {"enabled", "created", "updated", "recoveryLevel", "recoverableDays"}
    assert attributes["created"] == attributes["updated"]
    assert isinstance(attributes["created"], int)
    # Names compare without case.
    assert vault.secret_versions("token-cache")[0].value == "v"


def test_value_size_limit_and_api_version(
    vault: KeyVaultSimulator, rest: Callable[..., requests.Response]
) -> None:
    put = "/secrets/big?api-version=7.4"
    at_limit = rest("PUT", put, json={"value": "x" * MAX_VALUE_BYTES})
    over = rest("PUT", put, json={"value": "x" * (MAX_VALUE_BYTES - 1) + "é"})  # bytes count
    no_version = rest("GET", "/secrets/big")
    unknown_version = rest("GET", "/secrets/big?api-version=1.0")
    no_value = rest("PUT", put, json={"contentType": "x"})

    assert at_limit.status_code == 200
    assert over.status_code == 400 and _error(over)["code"] == "BadParameter"
    assert no_version.status_code == 400 and _error(no_version)["code"] == "BadParameter"
    assert unknown_version.status_code == 400
    assert no_value.status_code == 400
    assert len(vault.secret_versions("big")) == 1


def test_unknown_secret_is_404_and_a_bad_name_400(
    vault: KeyVaultSimulator, client: SecretClient, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")

    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("nothing-here")
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"
    assert "A secret with (name/id) nothing-here was not found" in str(missing.value.message)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("nothing-here", "0" * 32)
    for name in ("msal_cache", "x" * 128):
        with pytest.raises(HttpResponseError) as raised:
            client.set_secret(name, "v")
        assert raised.value.status_code == 400
        assert raised.value.error is not None and raised.value.error.code == "BadParameter"
        assert raised.value.error.message == f"The request URI contains an invalid name: {name}"
    assert client.set_secret("x" * 127, "fine").value == "fine"


# -- RBAC ---------------------------------------------------------------------------


def test_without_a_role_the_sdk_gets_403_forbidden_by_rbac(
    vault: KeyVaultSimulator, other_client: SecretClient, entra: EntraSimulator
) -> None:
    vault.put_secret("msal-token-cache", "secret")
    other = entra.find_client(OTHER_ID)
    assert other is not None

    with pytest.raises(HttpResponseError) as raised:
        other_client.get_secret("msal-token-cache")

    error = raised.value
    assert error.status_code == 403
    assert error.error is not None and error.error.code == "Forbidden"
    message = str(error.error.message)
    assert message.startswith("Caller is not authorized to perform action on resource.\r\n")
    assert f"oid={other.service_principal_id}" in message
    assert f"appid={OTHER_ID}" in message
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" in message
    assert f"Resource: '{vault.resource_id}/secrets/msal-token-cache'" in message
    assert "Assignment: (not found)" in message
    assert error.error.innererror == {"code": "ForbiddenByRbac"}
    # An unknown secret is a 403 too: RBAC is judged before the secret is looked up.
    with pytest.raises(HttpResponseError) as raised:
        other_client.get_secret("does-not-exist")
    assert raised.value.status_code == 403
    assert vault.requests[-1].principal == other.service_principal_id


def test_a_secret_scoped_role_works_for_that_secret_only(
    vault: KeyVaultSimulator, client: SecretClient, app_oid: str
) -> None:
    vault.put_secret("mine", "a")
    vault.put_secret("theirs", "b")
    vault.grant(app_oid, "Key Vault Secrets User", secret="Mine")

    assert client.get_secret("mine").value == "a"
    for attempt in (
        lambda: client.get_secret("theirs"),
        lambda: client.set_secret("mine", "c"),  # Secrets User cannot set
        lambda: list(client.list_properties_of_secrets()),  # listing is vault scope
    ):
        with pytest.raises(HttpResponseError) as raised:
            attempt()
        assert raised.value.status_code == 403
    assert len(list(client.list_properties_of_secret_versions("mine"))) == 1

    assert vault.revoke(app_oid, "Key Vault Secrets User", secret="mine")
    with pytest.raises(HttpResponseError) as raised:
        client.get_secret("mine")
    assert raised.value.status_code == 403


def test_officer_lists_updates_deletes_and_purges(
    vault: KeyVaultSimulator, client: SecretClient, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")
    client.set_secret("alpha", "1")
    client.set_secret("beta", "2")
    assert sorted(p.name or "" for p in client.list_properties_of_secrets()) == ["alpha", "beta"]

    client.update_secret_properties("beta", enabled=False)
    with pytest.raises(HttpResponseError) as raised:
        client.get_secret("beta")
    assert raised.value.status_code == 403
    assert raised.value.error is not None and raised.value.error.code == "Forbidden"

    deleted = client.begin_delete_secret("alpha").result()
    assert deleted.name == "alpha"
    assert deleted.recovery_id == f"{vault.vault_url}/deletedsecrets/alpha"
    assert vault.is_deleted("alpha")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("alpha")
    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("alpha", "again")
    assert conflict.value.status_code == 409
    client.purge_deleted_secret("alpha")
    assert client.set_secret("alpha", "again").value == "again"


# -- tokens the vault refuses -------------------------------------------------------


def test_tokens_of_the_wrong_audience_expired_or_badly_signed_are_401(
    vault: KeyVaultSimulator, local_ca: LocalCA, entra: EntraSimulator, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")
    good = _token(local_ca, entra)
    header, _, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = base64url_encode(json.dumps({**claims, "oid": str(uuid.uuid4())}).encode())
    entra.token_lifetime_seconds = -600  # older than the 5 minutes of clock skew
    try:
        expired = _token(local_ca, entra)
    finally:
        entra.token_lifetime_seconds = 3600
    tokens = {
        "good": good,
        "audience": _token(local_ca, entra, "https://ConfigMgrService/.default"),
        "expired": expired,
        "forged": f"{header}.{forged.decode()}.{signature}",
        "garbage": "not-a-jwt",
    }

    with vault.session() as session:
        answers = {
            name: session.get(
                f"{vault.vault_url}/secrets/s?api-version=7.4",
                headers={"Authorization": f"Bearer {token}"},
            )
            for name, token in tokens.items()
        }

    assert answers["good"].status_code == 404  # authenticated and allowed; no such secret
    for name in ("audience", "expired", "forged", "garbage"):
        response = answers[name]
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == vault.challenge
        assert _error(response)["code"] == "Unauthorized"
    assert str(_error(answers["audience"])["message"]).startswith(
        "AKV10022: Invalid audience. Expected https://vault.azure.net or "
        f"{VAULT_APP_ID}, found: https://ConfigMgrService."
    )
    assert "TokenExpired" in str(_error(answers["expired"])["message"])
    assert "signature" in str(_error(answers["forged"])["message"])


def test_a_token_of_another_issuer_is_401_and_the_sdk_gives_up(
    local_ca: LocalCA, entra: EntraSimulator, app_oid: str, credential: EntraAppCredential
) -> None:
    other_issuer = "https://sts.windows.net/11111111-2222-3333-4444-555555555555/"
    with KeyVaultSimulator.for_entra(
        local_ca, entra, issuers=[other_issuer], vault_name=f"kv-{uuid.uuid4().hex[:12]}"
    ) as strict_vault:
        strict_vault.grant(app_oid, "Key Vault Secrets Officer")
        with strict_vault.session() as session:
            response = session.get(
                f"{strict_vault.vault_url}/secrets/s?api-version=7.4",
                headers={"Authorization": f"Bearer {_token(local_ca, entra)}"},
            )
        # The SDK answers the first challenge with a token, gets a second challenge for
        # it and raises.
        with (
            strict_vault.secret_client(credential) as secret_client,
            pytest.raises(ClientAuthenticationError),
        ):
            secret_client.get_secret("s")
        assert [r.status for r in strict_vault.requests] == [401, 401, 401]
    assert response.status_code == 401
    assert _error(response)["message"] == (
        f"AKV10032: Invalid issuer. Expected one of {other_issuer}, "
        f"found https://sts.windows.net/{entra.tenant_id}/."
    )


def test_throttling_is_retried_by_the_sdk(
    vault: KeyVaultSimulator, client: SecretClient, app_oid: str
) -> None:
    vault.grant(app_oid, "Key Vault Secrets Officer")
    vault.put_secret("s", "v")
    client.get_secret("s")
    vault.reset_requests()

    vault.fail_next(1, 429, retry_after=0)
    assert client.get_secret("s").value == "v"

    assert [r.status for r in vault.requests] == [429, 200]
