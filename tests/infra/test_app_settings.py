"""The app settings main.bicep writes against the settings model (shared/settings.py).

The names come from the model itself (field aliases, which are required), never from a
copied list; the settings come from the templates as pycep-parser reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from shared.app.runtime import validate_targets
from shared.domain.rules import load_rules, parse_rules
from shared.errors import ConfigurationError
from shared.platform.settings import Settings, load_settings
from shared.queue.options import QueueOptions
from tests.helpers import rule, rules_text
from tests.infra.bicep import (
    ROOT,
    AppSetting,
    Interpolated,
    Template,
    Unknown,
    declared_settings,
    evaluated_settings,
)

APP = "modules/functionapp.bicep"

#: Names the code does not read but the Functions host or the platform does. Each one is
#: written on purpose; a name neither here nor in the model fails the test.
PLATFORM_SETTINGS = {
    # host: identity-based AzureWebJobsStorage uses a managed identity (with __clientId)
    "AzureWebJobsStorage__credential",
    # host: where telemetry goes (holds no secret: local authentication is off)
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    # host: telemetry with an Entra ID token of the user-assigned identity
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # Elastic Premium only: Functions runtime ~4 and the Python worker (Flex Consumption
    # takes both from functionAppConfig and refuses these settings)
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    # Elastic Premium only: the deployment runs Oryx, which installs requirements.txt
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    # the Python worker: one thread per invocation host.json lets run at once
    "PYTHON_THREADPOOL_THREAD_COUNT",
    # the Python worker: configure the Azure Monitor distro (logs and custom metrics)
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
}

#: Settings of the model no template may write.
NEVER_WRITTEN = {
    # a connection string carries the account key: storage is keyless, identity only
    "AzureWebJobsStorage": "shared key",
    # the Functions host sets it to the app's directory
    "AzureWebJobsScriptRoot": "set by the host",
    # siteDbPath relay signs in with the app's identity (Azure Relay Sender): a Send
    # rule's key is for a deployment outside this template
    "SITE_DB_RELAY_KEY_NAME": "identity instead",
    "SITE_DB_RELAY_KEY": "identity instead",
}

#: Where a parameter's default deliberately differs from the model's default.
DELIBERATE_DEFAULTS = {
    # a first deployment decides and records, but changes no collection (docs/deployment.md)
    "DRY_RUN": True,
}

#: Plausible values of what only a deployment knows, to run the model's validation.
DEPLOYMENT_VALUES = {
    "AzureWebJobsStorage__accountName": "stcmrexample",
    "AzureWebJobsStorage__blobServiceUri": "https://stcmrexample.blob.core.windows.net/",
    "AzureWebJobsStorage__queueServiceUri": "https://stcmrexample.queue.core.windows.net/",
    "AzureWebJobsStorage__tableServiceUri": "https://stcmrexample.table.core.windows.net/",
    "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
    "ENTRA_TENANT_ID": "66666666-7777-8888-9999-000000000000",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD",
    "SITE_DB_RELAY_NAMESPACE": "relay-cmremediate-example.servicebus.windows.net",
    "SITE_DB_RELAY_PATH": "site-db",
    "SITE_DB_RELAY_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
}

#: What the platform puts in place of each Key Vault reference.
SECRET_VALUES = {
    "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sccm-sql.contoso.local,1433;"
    "Database=CM_PS1;Uid=cmremediate_reader;Pwd=from-key-vault;Encrypt=yes",
    "ADMINSERVICE_PASSWORD": "from-key-vault",
    "ENTRA_CLIENT_SECRET": "from-key-vault",
    "WEBSERVICE_SECRET": "from-key-vault",
}

#: main.bicep parameters an AdminService deployment gives (docs/deployment.md).
ADMINSERVICE_PARAMETERS = {
    "siteDbConnection": "given",
    "adminServiceUrl": "https://cmg.contoso.com/CCM_Proxy_ServerAuth/72057594037927939/AdminService",
    "entraClientId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "adminServiceUsername": "svc-cmremediate@contoso.com",
    "adminServicePassword": "given",
}


def aliases(field: FieldInfo, name: str) -> list[str]:
    """The app-setting names a model field is read from."""
    alias = field.validation_alias or field.alias or name
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)]


def model_settings() -> dict[str, FieldInfo]:
    """Every app-setting name the model reads, with its field."""
    return {
        alias: field
        for name, field in Settings.model_fields.items()
        for alias in aliases(field, name)
    }


def is_secret(field: FieldInfo) -> bool:
    """A SecretStr field (alone or optional)."""
    return SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))


@pytest.fixture(scope="module")
def declared(bicep: dict[str, Template]) -> dict[str, AppSetting]:
    """Every setting name the templates can write, and whether always."""
    return declared_settings(bicep["main.bicep"], bicep[APP], APP)


def written(bicep: dict[str, Template], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of one deployment with main.bicep's parameters given ``overrides``."""
    return evaluated_settings(bicep["main.bicep"], bicep[APP], APP, overrides)


def as_app_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """What the app would find in its environment: Key Vault references resolved,
    deployment-time values replaced by plausible ones."""
    values: dict[str, str] = {}
    for name, value in settings.items():
        if isinstance(value, Interpolated) and value.text.startswith("@Microsoft.KeyVault("):
            assert name in SECRET_VALUES, f"{name} is a Key Vault reference: add a sample value"
            values[name] = SECRET_VALUES[name]
        elif isinstance(value, Unknown | Interpolated):
            assert name in DEPLOYMENT_VALUES, f"{name} is only known when deploying ({value})"
            values[name] = DEPLOYMENT_VALUES[name]
        else:
            assert isinstance(value, str), f"{name}: app settings are strings, not {value!r}"
            values[name] = value
    return values


def test_every_setting_the_model_requires_is_always_written(
    declared: dict[str, AppSetting],
) -> None:
    # SITE_DB_CONNECTION, required only when something reads SQL (the model's validator),
    # is written exactly then: tests/infra/test_site_db_path.py loads those deployments.
    required = {
        alias
        for name, field in Settings.model_fields.items()
        if field.is_required()
        for alias in aliases(field, name)
    }
    missing = {name for name in required if not declared.get(name, AppSetting(name, False)).always}
    assert not missing, f"required by shared/settings.py, not always set by main.bicep: {missing}"


def test_storage_is_identity_based_in_every_deployment(declared: dict[str, AppSetting]) -> None:
    # The model wants AzureWebJobsStorage or the identity-based family (its validator).
    for name in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId"):
        assert declared[name].always, name
    assert declared["AzureWebJobsStorage__credential"].always


def test_every_setting_written_is_read_by_the_code_or_the_platform(
    declared: dict[str, AppSetting],
) -> None:
    unknown = set(declared) - set(model_settings()) - PLATFORM_SETTINGS
    assert not unknown, f"main.bicep writes settings nothing reads: {unknown}"
    stale = PLATFORM_SETTINGS - set(declared)
    assert not stale, f"allow-listed but never written (drop them): {stale}"


def test_every_setting_the_code_reads_can_be_written(declared: dict[str, AppSetting]) -> None:
    missing = set(model_settings()) - set(declared) - set(NEVER_WRITTEN)
    assert not missing, f"shared/settings.py reads settings main.bicep cannot set: {missing}"


def test_no_template_writes_a_storage_key_or_a_host_setting(
    declared: dict[str, AppSetting],
) -> None:
    assert set(NEVER_WRITTEN) <= set(model_settings()), "NEVER_WRITTEN names model settings"
    assert not set(NEVER_WRITTEN) & set(declared)


def test_defaults_give_valid_settings_equal_to_the_model_defaults(
    bicep: dict[str, Template],
) -> None:
    settings = written(bicep, {"siteDbConnection": "given"})
    values = as_app_settings(settings)
    loaded = load_settings(values)  # raises, naming the setting, if a default is invalid
    defaults = Settings.model_fields
    by_alias = {alias: name for name, field in defaults.items() for alias in aliases(field, name)}
    for alias, value in settings.items():
        if alias not in by_alias or not isinstance(value, str) or alias in DEPLOYMENT_VALUES:
            continue
        field = by_alias[alias]
        if defaults[field].is_required():
            continue
        expected = DELIBERATE_DEFAULTS.get(alias, defaults[field].default)
        assert getattr(loaded, field) == expected, f"{alias}: default {value!r} in main.bicep"


def test_a_first_deployment_is_a_dry_run(bicep: dict[str, Template]) -> None:
    assert written(bicep, {"siteDbConnection": "given"})["DRY_RUN"] == "true"
    assert written(bicep, {"siteDbConnection": "given", "dryRun": False})["DRY_RUN"] == "false"


def test_optional_settings_are_written_only_when_given(bicep: dict[str, Template]) -> None:
    bare = written(bicep, {"siteDbConnection": "given"})
    full = written(bicep, ADMINSERVICE_PARAMETERS)
    assert {"ADMINSERVICE_URL", "ADMINSERVICE_PASSWORD", "ENTRA_CLIENT_ID"} <= set(full)
    assert not {"ADMINSERVICE_URL", "ADMINSERVICE_PASSWORD", "ENTRA_CLIENT_ID"} & set(bare)


def test_every_secret_is_a_key_vault_reference(bicep: dict[str, Template]) -> None:
    settings = written(
        bicep,
        {
            **ADMINSERVICE_PARAMETERS,
            "entraClientSecret": "given",
            "webServiceSecret": "given",
            "webServiceKind": "configmgr-webservice",
        },
    )
    secrets = {alias for alias, field in model_settings().items() if is_secret(field)}
    secrets -= set(NEVER_WRITTEN)
    assert secrets == set(SECRET_VALUES)
    for name in secrets:
        value = settings[name]
        assert isinstance(value, Interpolated), f"{name} is not a Key Vault reference: {value}"
        assert value.text.startswith("@Microsoft.KeyVault(SecretUri=${"), value.text
        assert value.text.endswith("})"), value.text
    others = {
        n for n, v in settings.items() if isinstance(v, Interpolated) and "KeyVault" in v.text
    }
    assert others == secrets, "only secrets go through Key Vault"


def test_an_adminservice_deployment_meets_the_shipped_rules(bicep: dict[str, Template]) -> None:
    rules = load_rules(ROOT / "rules.json")
    complete = load_settings(as_app_settings(written(bicep, ADMINSERVICE_PARAMETERS)))
    validate_targets(complete, rules)  # raises if a setting the rules need is missing
    incomplete = load_settings(as_app_settings(written(bicep, {"siteDbConnection": "given"})))
    with pytest.raises(ConfigurationError, match="ADMINSERVICE_URL"):
        validate_targets(incomplete, rules)


@pytest.mark.parametrize(
    ("kind", "given"),
    [
        ("configmgr-webservice", {"webServiceSecret": "given"}),
        (
            "rest",
            {
                "entraClientId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                "entraClientSecret": "given",
                "webServiceScope": "api://contoso-webservice/.default",
            },
        ),
    ],
)
def test_a_webservice_deployment_meets_webservice_rules(
    bicep: dict[str, Template], kind: str, given: dict[str, str], tmp_path: Path
) -> None:
    rules = parse_rules(
        rules_text(
            rule(
                name="via-webservice",
                match={"InsertionString1": "MsgType_Office365Upgrade"},
                target="webservice",
            )
        )
    )
    parameters = {
        "siteDbConnection": "given",
        "webServiceKind": kind,
        "webServiceUrl": "https://cm01.contoso.local/ConfigMgrWebService/ConfigMgr.asmx",
        **given,
    }
    validate_targets(load_settings(as_app_settings(written(bicep, parameters))), rules)


def test_the_worker_has_a_thread_for_every_invocation_host_json_runs_at_once(
    bicep: dict[str, Template],
) -> None:
    options = QueueOptions.from_host_json(ROOT)
    default = bicep["main.bicep"].parameters["workerThreadCount"]["default"]
    assert default == options.batch_size + options.new_batch_threshold
    host = bicep[APP].variables["hostSettings"]["value"]
    assert "PYTHON_THREADPOOL_THREAD_COUNT" in host
    # ... and so does a local run with Core Tools, from the sample local settings
    local = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))
    assert int(local["Values"]["PYTHON_THREADPOOL_THREAD_COUNT"]) == default
