"""The Bicep templates parse, and hold the properties that keep cm-remediate private:
no shared keys, HTTPS and TLS 1.2 only, deny-by-default networks, identity everywhere,
least-privilege roles."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.bicep import (
    INFRA,
    Template,
    body,
    condition,
    evaluate,
    module_scope,
    root_scope,
)

BICEP_FILES = sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep"))

#: Built-in role definitions the templates may assign, by ID (Azure's fixed GUIDs).
ALLOWED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "26baccc8-eea7-41f1-98f4-1762cc7f685d": "Azure Relay Sender",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def conditional(value: Any) -> tuple[Any, Any]:
    """(when true, when false) of a ``cond ? a : b`` value."""
    assert isinstance(value, dict) and "operator" in value, f"not a condition: {value!r}"
    operands = value["operator"]["operands"]
    return operands["true_value"], operands["false_value"]


def test_infra_has_the_expected_templates() -> None:
    assert set(BICEP_FILES) == {
        "main.bicep",
        "modules/alerts.bicep",
        "modules/functionapp.bicep",
        "modules/identity.bicep",
        "modules/keyvault.bicep",
        "modules/monitoring.bicep",
        "modules/privatelink.bicep",
        "modules/relay.bicep",
        "modules/storage.bicep",
    }


@pytest.mark.parametrize("path", BICEP_FILES)
def test_every_template_parses(parsed: dict[str, dict[str, Any]], path: str) -> None:
    entry = parsed[path]
    assert "error" not in entry, f"{path}: {entry.get('error')}"
    assert entry["tree"]["resources"] or entry["tree"]["modules"], f"{path} declares nothing"


def test_every_module_main_bicep_calls_exists(bicep: dict[str, Template]) -> None:
    called = {m["detail"]["path"] for m in bicep["main.bicep"].modules.values()}
    assert called == {p for p in BICEP_FILES if p.startswith("modules/")}


def test_main_deploys_at_subscription_scope_into_one_resource_group(
    bicep: dict[str, Template],
) -> None:
    main = bicep["main.bicep"]
    assert main.tree["globals"]["scope"]["value"] == "subscription"
    assert set(main.resources_of_type("Microsoft.Resources/resourceGroups")) == {"rg"}
    assert {body(m)["scope"] for m in main.modules.values()} == {"rg"}


def test_storage_account_takes_no_shared_key_and_denies_other_networks(
    bicep: dict[str, Template],
) -> None:
    storage = bicep["modules/storage.bicep"].only("Microsoft.Storage/storageAccounts")
    props = storage["properties"]
    assert storage["kind"] == "StorageV2"
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["allowCrossTenantReplication"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert conditional(props["publicNetworkAccess"]) == ("Disabled", "Enabled")
    # without private endpoints, the integration subnet is the only network rule; the
    # network is open only without either (tests/infra/test_site_db_path.py: which case)
    assert props["networkAcls"]["defaultAction"] == "defaultNetworkAction"
    variables = bicep["modules/storage.bicep"].variables
    assert conditional(variables["defaultNetworkAction"]["value"]) == ("Deny", "Allow")
    assert props["networkAcls"]["virtualNetworkRules"] == "subnetRules"
    rules = variables["subnetRules"]["value"]
    assert conditional(rules) == ([], [{"id": "integrationSubnetId", "action": "Allow"}])


def test_blob_containers_are_private(bicep: dict[str, Template]) -> None:
    storage = bicep["modules/storage.bicep"]
    containers = storage.resources_of_type(
        "Microsoft.Storage/storageAccounts/blobServices/containers"
    )
    assert containers
    for container in containers.values():
        assert body(container)["properties"]["publicAccess"] == "None"


def test_function_app_is_linux_https_only_tls12_without_ftp_or_passwords(
    bicep: dict[str, Template],
) -> None:
    app = bicep["modules/functionapp.bicep"]
    site = app.only("Microsoft.Web/sites")
    props = site["properties"]
    config = props["siteConfig"]
    assert site["kind"] == "functionapp,linux"
    assert props["httpsOnly"] is True
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"
    assert config["ftpsState"] == "Disabled"
    assert config["remoteDebuggingEnabled"] is False
    policies = app.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_function_app_uses_only_the_user_assigned_identity(bicep: dict[str, Template]) -> None:
    site = bicep["modules/functionapp.bicep"].only("Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    deployment = conditional(site["properties"]["functionAppConfig"])[0]["deployment"]
    assert deployment["storage"]["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_function_app_is_integrated_into_the_customer_subnet(bicep: dict[str, Template]) -> None:
    site = bicep["modules/functionapp.bicep"].only("Microsoft.Web/sites")
    # the subnet, or no property at all (null, never ''): see test_site_db_path.py
    assert conditional(site["properties"]["virtualNetworkSubnetId"]) == (
        "integrationSubnetId",
        None,
    )
    main = bicep["main.bicep"]
    call = body(main.modules["app"])["params"]
    assert call["integrationSubnetId"] == "integrationSubnetId"
    assert call["vnetIntegration"] == "vnetIntegration"


@pytest.mark.parametrize(
    ("plan", "sku", "tier"),
    [("FlexConsumption", "FC1", "FlexConsumption"), ("ElasticPremium", "EP1", "ElasticPremium")],
)
def test_both_plans_run_python_311_on_linux(
    bicep: dict[str, Template], plan: str, sku: str, tier: str
) -> None:
    main, app = bicep["main.bicep"], bicep["modules/functionapp.bicep"]
    scope = module_scope(root_scope(main, {"hostingPlan": plan}), "modules/functionapp.bicep", app)
    farm = evaluate(app.only("Microsoft.Web/serverfarms"), scope)
    site = evaluate(app.only("Microsoft.Web/sites"), scope)
    assert farm["sku"]["name"] == sku
    assert farm["sku"]["tier"] == tier
    assert farm["properties"]["reserved"] is True  # Linux
    if plan == "FlexConsumption":
        config = site["properties"]["functionAppConfig"]
        assert config["runtime"] == {"name": "python", "version": "3.11"}
        assert config["scaleAndConcurrency"]["instanceMemoryMB"] == 2048
        assert config["scaleAndConcurrency"]["maximumInstanceCount"] == 40
        assert config["deployment"]["storage"]["type"] == "blobContainer"
        assert site["properties"]["siteConfig"]["linuxFxVersion"] is None
    else:
        assert site["properties"]["functionAppConfig"] is None
        assert site["properties"]["siteConfig"]["linuxFxVersion"] == "Python|3.11"
        assert site["properties"]["siteConfig"]["vnetRouteAllEnabled"] is True


def test_flex_deployment_package_lives_in_a_private_container(bicep: dict[str, Template]) -> None:
    main = bicep["main.bicep"]
    storage_call = body(main.modules["storage"])["params"]
    app_call = body(main.modules["app"])["params"]
    assert storage_call["deploymentContainerName"] == app_call["deploymentContainerName"]
    site = bicep["modules/functionapp.bicep"].only("Microsoft.Web/sites")
    flex = conditional(site["properties"]["functionAppConfig"])[0]
    assert flex["deployment"]["storage"]["value"] == "${blobEndpoint}${deploymentContainerName}"


def test_key_vault_uses_rbac_soft_delete_purge_protection_and_denies_other_networks(
    bicep: dict[str, Template],
) -> None:
    vault = bicep["modules/keyvault.bicep"].only("Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enabledForTemplateDeployment"] is False
    assert conditional(props["networkAcls"]["defaultAction"]) == ("Deny", "Allow")
    assert props["networkAcls"]["bypass"] == "AzureServices"
    assert conditional(props["publicNetworkAccess"]) == ("Disabled", "Enabled")


def test_key_vault_secrets_come_from_secure_parameters(bicep: dict[str, Template]) -> None:
    vault = bicep["modules/keyvault.bicep"]
    secrets = vault.resources_of_type("Microsoft.KeyVault/vaults/secrets")
    # the AdminService session's secret holds no secret at deployment: a placeholder
    # the app skips; `cmremediate sign-in` writes the session as a version of its own
    session = secrets.pop("adminServiceSession")
    assert body(session)["properties"] == {"value": "{}", "contentType": "placeholder"}
    assert condition(session) is not None
    assert len(secrets) == 4
    for name, secret in secrets.items():
        props = body(secret)["properties"]
        assert props["contentType"], f"{name} has no contentType"
        source = props["value"]
        assert source in vault.parameters, f"{name}: value is not a parameter"
        assert "secure" in vault.decorators(source), f"{name}: {source} is not @secure()"
        assert vault.parameters[source]["default"] is None, f"{name}: {source} has a default"
        # each exists only when given (SITE_DB_CONNECTION: and with siteDbPath vnet)
        assert condition(secret) is not None, f"{name} should exist only when given"


def test_application_insights_takes_only_entra_id_tokens(bicep: dict[str, Template]) -> None:
    monitoring = bicep["modules/monitoring.bicep"]
    insights = monitoring.only("Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True
    assert insights["properties"]["WorkspaceResourceId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {"operand_1": "workspace", "operand_2": "id"},
        }
    }
    host = bicep["modules/functionapp.bicep"].variables["hostSettings"]["value"]
    assert host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )


def role_assignments(bicep: dict[str, Template]) -> list[tuple[Template, dict[str, Any]]]:
    """Every role assignment, with its template."""
    return [
        (template, body(resource))
        for template in bicep.values()
        for resource in template.resources_of_type(
            "Microsoft.Authorization/roleAssignments"
        ).values()
    ]


def role_variable(template: Template, assignment: dict[str, Any]) -> list[str]:
    """The variables naming the role(s) of an assignment (a loop runs over a list of them)."""
    role = assignment["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    if role in template.variables:
        return [role]
    # a loop: `for role in appRoles` -> the variables listed in appRoles (either branch)
    loops = [
        r["config"]["loop_type"]["detail"]["array_name"]
        for r in template.resources_of_type("Microsoft.Authorization/roleAssignments").values()
        if "loop_type" in r["config"] and body(r) is assignment
    ]
    assert loops, f"{template.name}: role {role!r} is neither a variable nor a loop item"
    listed = template.variables[loops[0]]["value"]
    if isinstance(listed, dict):  # cond ? [] : [...]
        listed = [item for branch in conditional(listed) for item in branch]
    return list(listed)


def test_roles_are_least_privilege_named_and_scoped_to_one_resource(
    bicep: dict[str, Template],
) -> None:
    assignments = role_assignments(bicep)
    # storage (app, operator), vault, the session's secret, insights, relay
    assert len(assignments) == 6
    for template, assignment in assignments:
        assert assignment["scope"] in template.resources, (
            f"{template.name}: role assignments are scoped to one resource, "
            f"not {assignment['scope']!r}"
        )
        text = (INFRA / template.name).read_text().splitlines()
        for variable in role_variable(template, assignment):
            guid = template.variables[variable]["value"]
            assert GUID.match(guid), f"{variable} is not a role definition ID"
            assert guid in ALLOWED_ROLES, f"{template.name}: role {guid} is not an allowed role"
            line = next(i for i, t in enumerate(text) if t.startswith(f"var {variable} = "))
            comment: list[str] = []
            while text[line - 1 - len(comment)].startswith("//"):
                comment.append(text[line - 1 - len(comment)])
            assert ALLOWED_ROLES[guid] in " ".join(comment), (
                f"{template.name}: the comment above `var {variable}` should name "
                f"{ALLOWED_ROLES[guid]!r}"
            )


def test_the_app_identity_gets_exactly_the_documented_roles(bicep: dict[str, Template]) -> None:
    storage = bicep["modules/storage.bicep"]
    app_roles = [storage.variables[v]["value"] for v in storage.variables["appRoles"]["value"]]
    assert sorted(ALLOWED_ROLES[g] for g in app_roles) == [
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    ]
    vault = bicep["modules/keyvault.bicep"]
    assert vault.variables["keyVaultSecretsUser"]["value"] in ALLOWED_ROLES
    monitoring = bicep["modules/monitoring.bicep"]
    assert ALLOWED_ROLES[monitoring.variables["monitoringMetricsPublisher"]["value"]] == (
        "Monitoring Metrics Publisher"
    )


def test_private_endpoints_cover_blob_queue_table_and_vault(bicep: dict[str, Template]) -> None:
    link = bicep["modules/privatelink.bicep"]
    endpoints = link.variables["endpoints"]["value"]
    assert sorted(e["name"] for e in endpoints) == ["blob", "queue", "table", "vault"]
    main = bicep["main.bicep"]
    assert condition(main.modules["privateLink"]) == "privateAccess"
    for module in ("storage", "keyVault"):
        assert body(main.modules[module])["params"]["privateAccess"] == "privateAccess"


def test_no_template_reads_account_keys(bicep: dict[str, Template]) -> None:
    for path in [*INFRA.rglob("*.bicep"), *INFRA.rglob("*.json")]:
        text = path.read_text().lower()
        if path.name == "relay.bicep":
            text = text.replace("listenrule.listkeys().primarykey", "", 1)
        for needle in ("listkeys(", "listaccountsas(", "listservicesas(", "accountkey="):
            assert needle not in text, f"{path.relative_to(INFRA)} uses {needle}"
    # The one key read: the on-premises listener's, of a Listen-only rule, straight into
    # Key Vault and never an output (the app signs in with its identity).
    relay = bicep["modules/relay.bicep"]
    rule = relay.only("Microsoft.Relay/namespaces/hybridConnections/authorizationRules")
    assert rule["properties"]["rights"] == ["Listen"]
    assert "listkeys" not in str(relay.outputs).lower()


def test_function_app_carries_the_azd_service_tag(bicep: dict[str, Template]) -> None:
    main = bicep["main.bicep"]
    site = bicep["modules/functionapp.bicep"].only("Microsoft.Web/sites")
    tag = site["tags"]["function"]["parameters"]["arg_2"]
    assert tag == {"'azd-service-name'": "serviceName"}
    assert main.variables["serviceName"]["value"] == "cmremediate"


def test_outputs_tell_azd_and_the_guide_what_was_created(bicep: dict[str, Template]) -> None:
    outputs = bicep["main.bicep"].outputs
    assert {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_KEY_VAULT_NAME",
    } <= set(outputs)
    for name, output in outputs.items():
        assert "secure" not in str(output.get("decorators")), f"{name}: no secret goes out"
