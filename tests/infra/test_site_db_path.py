"""siteDbPath: with `vnet` (the default) the app integrates into the customer subnet and
reads SITE_DB_CONNECTION from Key Vault, as before; with `none` nothing reads SQL, no
SQL secret exists, and without a subnet the app reaches storage and Key Vault over their
public endpoints, identity only. Each deployment is evaluated from the templates with
its parameters, and its app settings are loaded by the settings model itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from shared.errors import ConfigurationError
from shared.platform.settings import SITE_DB_MISSING, load_settings
from tests.infra.bicep import (
    INFRA,
    Interpolated,
    Scope,
    Template,
    Unknown,
    condition,
    evaluate,
    module_scope,
    root_scope,
)
from tests.infra.test_app_settings import (
    ADMINSERVICE_PARAMETERS,
    as_app_settings,
    written,
)

SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/"
    "Microsoft.Network/virtualNetworks/vnet-hub/subnets/snet-cmremediate"
)

#: An AdminService deployment without a VNet (siteDbPath none, no subnet, no SQL secret).
NO_SQL = {
    **{k: v for k, v in ADMINSERVICE_PARAMETERS.items() if k != "siteDbConnection"},
    "siteDbPath": "none",
}
#: The same, still integrated into a subnet (the VNet only locks storage and Key Vault).
NO_SQL_IN_SUBNET = {**NO_SQL, "integrationSubnetId": SUBNET}
#: A deployment that reads the site database over the VNet (the default path).
OVER_VNET = {"integrationSubnetId": SUBNET, "siteDbConnection": "given"}

PLANS = ["FlexConsumption", "ElasticPremium"]


def scope(bicep: dict[str, Template], path: str, overrides: Mapping[str, Any]) -> Scope:
    """A module's scope in the deployment with main.bicep's parameters ``overrides``."""
    return module_scope(root_scope(bicep["main.bicep"], overrides), path, bicep[path])


def site(bicep: dict[str, Template], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The function app's properties, evaluated."""
    path = "modules/functionapp.bicep"
    props = bicep[path].only("Microsoft.Web/sites")["properties"]
    value = evaluate(props, scope(bicep, path, overrides))
    assert isinstance(value, dict)
    return value


def network(
    bicep: dict[str, Template], path: str, type_: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """publicNetworkAccess and networkAcls of the storage account or the vault."""
    props = bicep[path].only(type_)["properties"]
    module = scope(bicep, path, overrides)
    acls = evaluate(props["networkAcls"], module)
    return {
        "public": evaluate(props["publicNetworkAccess"], module),
        "default": acls["defaultAction"],
        "subnets": [rule["id"] for rule in acls["virtualNetworkRules"]],
    }


def storage(bicep: dict[str, Template], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return network(bicep, "modules/storage.bicep", "Microsoft.Storage/storageAccounts", overrides)


def vault(bicep: dict[str, Template], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return network(bicep, "modules/keyvault.bicep", "Microsoft.KeyVault/vaults", overrides)


def site_db_secret(bicep: dict[str, Template], overrides: Mapping[str, Any]) -> tuple[Any, Any]:
    """(whether the SITE_DB_CONNECTION secret is created, the URI output of the vault)."""
    path = "modules/keyvault.bicep"
    template = bicep[path]
    module = scope(bicep, path, overrides)
    created = evaluate(condition(template.resources["siteDbConnectionSecret"]), module)
    return created, evaluate(template.outputs["siteDbConnectionUri"]["value"], module)


# ----------------------------------------------------------------------- parameter


def test_site_db_path_is_a_network_parameter_defaulting_to_vnet(
    bicep: dict[str, Template],
) -> None:
    main = bicep["main.bicep"]
    assert main.parameters["siteDbPath"]["default"] == "vnet"
    decorators = main.decorators("siteDbPath")
    assert decorators["allowed"] == ["vnet", "relay", "none"]
    assert all(f"{path}:" in decorators["description"] for path in ("vnet", "relay", "none"))
    sections = (INFRA / "main.bicep").read_text().split("// " + "-" * 64 + " ")
    network_section = next(s for s in sections if s.startswith("network\n"))
    assert "param siteDbPath string" in network_section
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["siteDbPath"] == {"value": "${CMREMEDIATE_SITE_DB_PATH}"}


def test_subnet_and_connection_string_are_optional_parameters(bicep: dict[str, Template]) -> None:
    main = bicep["main.bicep"]
    assert main.parameters["integrationSubnetId"]["default"] == ""
    assert main.parameters["siteDbConnection"]["default"] == ""
    assert "secure" in main.decorators("siteDbConnection")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "sitedb"),
        ({"siteDbPath": "vnet"}, "sitedb"),
        ({"siteDbPath": "none"}, "adminservice"),
        ({"siteDbPath": "vnet", "exportSource": "adminservice"}, "adminservice"),
    ],
)
def test_export_source_defaults_to_what_the_path_can_read(
    bicep: dict[str, Template], overrides: dict[str, str], expected: str
) -> None:
    assert root_scope(bicep["main.bicep"], overrides).parameter("exportSource") == expected
    assert written(bicep, {**overrides, "siteDbConnection": "given"})["EXPORT_SOURCE"] == expected


# ------------------------------------------------------------------ none: no SQL


def test_without_sql_no_connection_string_is_set_or_stored(bicep: dict[str, Template]) -> None:
    # even one left in the azd environment is ignored
    for overrides in (NO_SQL, {**NO_SQL, "siteDbConnection": "left over"}):
        settings = written(bicep, overrides)
        assert "SITE_DB_CONNECTION" not in settings
        assert settings["EXPORT_SOURCE"] == "adminservice"
        assert "IDENTITY_SOURCE" not in settings  # follows the export source
        assert site_db_secret(bicep, overrides) == (False, "")


def test_without_sql_the_settings_are_complete(bicep: dict[str, Template]) -> None:
    loaded = load_settings(as_app_settings(written(bicep, NO_SQL)))
    assert not loaded.reads_site_database
    assert loaded.site_db_connection is None


@pytest.mark.parametrize("plan", PLANS)
def test_without_subnet_the_app_has_no_vnet_integration(
    bicep: dict[str, Template], plan: str
) -> None:
    props = site(bicep, {**NO_SQL, "hostingPlan": plan})
    assert "virtualNetworkSubnetId" in props
    assert props["virtualNetworkSubnetId"] is None  # no property, never ''
    assert props["siteConfig"]["vnetRouteAllEnabled"] is None


def test_without_subnet_storage_and_vault_take_public_calls_with_identity_only(
    bicep: dict[str, Template],
) -> None:
    for found in (storage(bicep, NO_SQL), vault(bicep, NO_SQL)):
        assert found == {"public": "Enabled", "default": "Allow", "subnets": []}
    # what guards them then does not depend on the path
    account = bicep["modules/storage.bicep"].only("Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowSharedKeyAccess"] is False
    assert account["properties"]["allowBlobPublicAccess"] is False
    kv = bicep["modules/keyvault.bicep"].only("Microsoft.KeyVault/vaults")
    assert kv["properties"]["enableRbacAuthorization"] is True


@pytest.mark.parametrize(
    ("deployment", "reads_sql"),
    [(OVER_VNET, True), (NO_SQL_IN_SUBNET, False)],
    ids=["vnet", "none-with-a-subnet"],
)
@pytest.mark.parametrize("plan", PLANS)
def test_an_integration_subnet_integrates_the_app_and_storage_and_vault_deny_other_networks(
    bicep: dict[str, Template], plan: str, deployment: dict[str, Any], reads_sql: bool
) -> None:
    overrides = {**deployment, "hostingPlan": plan}
    props = site(bicep, overrides)
    assert props["virtualNetworkSubnetId"] == SUBNET
    assert props["siteConfig"]["vnetRouteAllEnabled"] is (
        None if plan == "FlexConsumption" else True
    )
    for found in (storage(bicep, overrides), vault(bicep, overrides)):
        assert found == {"public": "Enabled", "default": "Deny", "subnets": [SUBNET]}
    assert ("SITE_DB_CONNECTION" in written(bicep, overrides)) is reads_sql
    private = {
        **overrides,
        "privateEndpointSubnetId": SUBNET.replace("snet-cmremediate", "snet-pe"),
    }
    for found in (storage(bicep, private), vault(bicep, private)):
        assert found == {"public": "Disabled", "default": "Deny", "subnets": []}


@pytest.mark.parametrize(
    "sources",
    [{}, {"exportSource": "adminservice", "identitySource": "adminservice"}],
)
def test_over_the_vnet_the_connection_string_is_a_key_vault_secret(
    bicep: dict[str, Template], sources: dict[str, str]
) -> None:
    overrides = {**OVER_VNET, **sources}
    setting = written(bicep, overrides)["SITE_DB_CONNECTION"]
    assert isinstance(setting, Interpolated)
    assert setting.text == "@Microsoft.KeyVault(SecretUri=${keyVault.outputs.siteDbConnectionUri})"
    created, uri = site_db_secret(bicep, overrides)
    assert created is True
    assert isinstance(uri, Unknown) and "secretUri" in uri.text


def test_over_the_vnet_the_default_deployment_reads_sql_with_valid_settings(
    bicep: dict[str, Template],
) -> None:
    loaded = load_settings(as_app_settings(written(bicep, OVER_VNET)))
    assert loaded.reads_site_database
    assert loaded.site_db_connection is not None


def test_over_the_vnet_storage_and_vault_never_open_for_a_missing_subnet(
    bicep: dict[str, Template],
) -> None:
    # an empty subnet ID is no network: Azure refuses it instead of the data planes opening
    overrides = {"siteDbConnection": "given"}
    assert site(bicep, overrides)["virtualNetworkSubnetId"] == ""
    for found in (storage(bicep, overrides), vault(bicep, overrides)):
        assert found == {"public": "Enabled", "default": "Deny", "subnets": [""]}


# ------------------------------------------------------------------ contradictions


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({**NO_SQL, "exportSource": "sitedb"}, id="none-export-sitedb"),
        pytest.param({**NO_SQL, "identitySource": "sitedb"}, id="none-identity-sitedb"),
        pytest.param(
            {**NO_SQL_IN_SUBNET, "exportSource": "sitedb", "siteDbConnection": "given"},
            id="none-with-connection-string",
        ),
        pytest.param({"integrationSubnetId": SUBNET}, id="vnet-without-connection-string"),
    ],
)
def test_reading_sql_without_its_secret_is_reported_by_the_app(
    bicep: dict[str, Template], overrides: dict[str, str]
) -> None:
    # The templates cannot refuse these (infra/README.md); the deployed app reports them
    # (health, `cmremediate check`) with the message infra/README.md quotes.
    settings = written(bicep, overrides)
    assert "SITE_DB_CONNECTION" not in settings
    with pytest.raises(ConfigurationError, match=SITE_DB_MISSING):
        load_settings(as_app_settings(settings))
    assert f"`{SITE_DB_MISSING}`" in (INFRA / "README.md").read_text()


# ------------------------------------------------------------------ relay: hybrid connection

#: A deployment that reads the site database through the relay hybrid connection.
OVER_RELAY = {
    "siteDbPath": "relay",
    "siteDbConnection": "given",
    "siteDbRelayEndpoint": "sql01.contoso.local:1433",
}


def test_through_the_relay_the_app_gets_the_tunnel_settings_and_its_sql_secret(
    bicep: dict[str, Template],
) -> None:
    settings = written(bicep, OVER_RELAY)
    assert isinstance(settings["SITE_DB_CONNECTION"], Interpolated)
    assert settings["SITE_DB_RELAY_LISTENER"] == "bridge"
    assert settings["SITE_DB_RELAY_PORT_NAME"] == "sql"
    for name in ("SITE_DB_RELAY_NAMESPACE", "SITE_DB_RELAY_PATH", "SITE_DB_RELAY_CLIENT_ID"):
        assert isinstance(settings[name], Unknown), name  # the relay module's, the identity's
    assert "SITE_DB_RELAY_KEY" not in settings  # the identity signs in: no key stored
    loaded = load_settings(as_app_settings(settings))
    assert loaded.relay_configured and loaded.reads_site_database
    assert written(bicep, OVER_VNET).keys().isdisjoint({"SITE_DB_RELAY_NAMESPACE"})


@pytest.mark.parametrize("plan", PLANS)
def test_through_the_relay_the_app_needs_no_vnet(bicep: dict[str, Template], plan: str) -> None:
    props = site(bicep, {**OVER_RELAY, "hostingPlan": plan})
    assert props["virtualNetworkSubnetId"] is None


def test_the_hybrid_connection_names_sql_server_for_hcm_and_wants_a_token(
    bicep: dict[str, Template],
) -> None:
    relay = bicep["modules/relay.bicep"]
    hc = relay.only("Microsoft.Relay/namespaces/hybridConnections")
    assert hc["properties"]["requiresClientAuthorization"] is True
    secret = relay.only("Microsoft.KeyVault/vaults/secrets")
    assert secret["name"] == "site-db-relay-listen-key"
