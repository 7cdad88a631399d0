"""Settings: the contract names, defaults, and errors that name the bad setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cmremediate_cli.app import read_local_settings
from shared.errors import ConfigurationError
from shared.platform.settings import load_settings

REQUIRED = {
    "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Uid=u;Pwd=p",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def test_defaults_are_the_documented_ones():
    settings = load_settings(dict(REQUIRED))
    assert settings.remediation_queue == "cm-remediation"
    assert settings.poison_queue == "cm-remediation-poison"
    assert settings.export_schedule == "0 */5 * * * *"
    assert settings.rules_file == "rules.json"
    assert settings.export_start_time is None
    assert settings.export_overlap == timedelta(minutes=10)
    assert settings.export_max_messages_per_run == 50_000


def test_environment_is_read_by_contract_names(monkeypatch):
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REMEDIATION_QUEUE", "my-queue")
    monkeypatch.setenv("EXPORT_OVERLAP_MINUTES", "3")
    monkeypatch.setenv("EXPORT_MAX_MESSAGES_PER_RUN", "77")
    monkeypatch.setenv("EXPORT_START_TIME", "2026-11-01T08:00:00+01:00")
    monkeypatch.setenv("AzureWebJobsScriptRoot", "/srv/app")
    settings = load_settings()
    assert settings.remediation_queue == "my-queue"
    assert settings.export_overlap_minutes == 3
    assert settings.export_max_messages_per_run == 77
    assert settings.export_start_time == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert str(settings.rules_path) == "/srv/app/rules.json"


def test_naive_start_time_is_utc():
    settings = load_settings({**REQUIRED, "EXPORT_START_TIME": "2026-11-01T08:00:00"})
    assert settings.export_start_time == datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def test_missing_required_settings_are_all_named():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({})
    text = str(caught.value)
    assert "SITE_DB_CONNECTION: required setting is missing" in text
    assert "AzureWebJobsStorage: required setting is missing" in text


def test_identity_based_storage_is_enough():
    settings = load_settings(
        {
            "SITE_DB_CONNECTION": REQUIRED["SITE_DB_CONNECTION"],
            "AzureWebJobsStorage__accountName": "stcmremediate",
            "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
        }
    )
    assert settings.storage_connection is None
    assert settings.storage_account_name == "stcmremediate"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "REMEDIATION_QUEUE",
            "Remediation_Queue",
            "REMEDIATION_QUEUE: 'Remediation_Queue' is not a valid queue name",
        ),
        ("REMEDIATION_QUEUE", "a" * 57, "is not a valid queue name"),
        ("REMEDIATION_QUEUE", "double--hyphen", "is not a valid queue name"),
        (
            "EXPORT_SCHEDULE",
            "*/5 * * * *",
            "EXPORT_SCHEDULE: '*/5 * * * *' is not an NCRONTAB expression",
        ),
        (
            "EXPORT_OVERLAP_MINUTES",
            "-1",
            "EXPORT_OVERLAP_MINUTES: Input should be greater than or equal to 0",
        ),
        (
            "EXPORT_OVERLAP_MINUTES",
            "ten",
            "EXPORT_OVERLAP_MINUTES: Input should be a valid integer",
        ),
        (
            "EXPORT_MAX_MESSAGES_PER_RUN",
            "0",
            "EXPORT_MAX_MESSAGES_PER_RUN: Input should be greater than or equal to 1",
        ),
        ("EXPORT_START_TIME", "last tuesday", "EXPORT_START_TIME:"),
        ("SITE_DB_CONNECTION", "sql01", "SITE_DB_CONNECTION: is not an ODBC connection string"),
    ],
)
def test_malformed_setting_is_named(name, value, expected):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({**REQUIRED, name: value})
    assert expected in str(caught.value)


def test_secrets_do_not_show_in_the_settings_repr():
    settings = load_settings(
        {
            **REQUIRED,
            "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Pwd=Sup3rS3cret!",
            "AzureWebJobsStorage": "AccountKey=k3y==",
        }
    )
    assert "Sup3rS3cret" not in repr(settings)
    assert "k3y" not in repr(settings)


def test_local_settings_file_values(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps({"IsEncrypted": False, "Values": {**REQUIRED, "REMEDIATION_QUEUE": "from-file"}})
    )
    settings = load_settings(read_local_settings(path))
    assert settings.remediation_queue == "from-file"


def test_local_settings_file_errors_name_the_file(tmp_path):
    path = tmp_path / "local.settings.json"
    with pytest.raises(ConfigurationError, match="settings file not found"):
        read_local_settings(path)
    path.write_text("{ not json")
    with pytest.raises(ConfigurationError, match=r"local.settings.json: not valid JSON \(line 1"):
        read_local_settings(path)


def test_configuration_reference_is_generated_from_the_model():
    from pathlib import Path

    from shared.platform.settings import Settings
    from shared.platform.settings_reference import configuration_reference

    document = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert document == configuration_reference(), (
        "run: cmremediate config-reference > docs/configuration.md"
    )
    for name in (
        "SITE_DB_CONNECTION",
        "EXPORT_OVERLAP_MINUTES",
        "ADMINSERVICE_URL",
        "DRY_RUN",
        "TLS_CA_BUNDLE",
    ):
        assert f"| `{name}` |" in document
    assert len(Settings.model_fields) == document.count("\n| `")


def test_file_settings_are_relative_to_the_app_root(tmp_path):
    (tmp_path / "certs").mkdir()
    bundle = tmp_path / "certs" / "sms-provider.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(
        {
            **REQUIRED,
            "AzureWebJobsScriptRoot": str(tmp_path),
            "TLS_CA_BUNDLE": "certs/sms-provider.pem",
        }
    )
    assert settings.tls_ca_bundle == bundle
    with pytest.raises(
        ConfigurationError, match=r"TLS_CA_BUNDLE: .*missing.pem is not a readable file"
    ):
        load_settings(
            {**REQUIRED, "AzureWebJobsScriptRoot": str(tmp_path), "TLS_CA_BUNDLE": "missing.pem"}
        )


def test_the_adminservice_export_needs_no_site_database():
    settings = load_settings(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "EXPORT_SOURCE": "adminservice"}
    )
    assert settings.site_db_connection is None
    assert settings.identity == "adminservice"  # the export source, unless said otherwise
    assert not settings.reads_site_database


@pytest.mark.parametrize(
    "values",
    [
        {},  # the default: the export reads SQL
        {"EXPORT_SOURCE": "adminservice", "IDENTITY_SOURCE": "sitedb"},
        {"IDENTITY_SOURCE": "adminservice"},
    ],
)
def test_the_site_database_is_required_while_anything_reads_it(values):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **values})
    assert caught.value.problems == ["SITE_DB_CONNECTION: required setting is missing"]


def test_a_missing_site_database_is_named_beside_a_bad_field():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "EXPORT_SOURCE": "sql"})
    problems = caught.value.problems
    assert problems[0] == "SITE_DB_CONNECTION: required setting is missing"
    assert problems[1].startswith("EXPORT_SOURCE: Input should be 'sitedb' or 'adminservice'")
