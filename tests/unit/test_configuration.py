"""Settings, rules and target settings diagnosed together: one ConfigurationError names
every problem that can be found, whatever else is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.app.configuration import load_configuration
from shared.errors import ConfigurationError
from tests.helpers import UNREACHABLE_ADMINSERVICE, rule, rules_text

REPO = Path(__file__).resolve().parents[2]

GOOD = {
    "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Uid=u;Pwd=p",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "AzureWebJobsScriptRoot": str(REPO),
    **UNREACHABLE_ADMINSERVICE,
}
ADMINSERVICE_SETTINGS = tuple(UNREACHABLE_ADMINSERVICE.keys() - {"ENTRA_AUTHORITY_HOST"})


def refused(values: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load_configuration(values)
    return caught.value


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in GOOD.items() if k not in names}


def broken_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(rules_text(rule(collection_id="SMS00001"), rule(name="x", action="keep")))
    return path


def test_a_good_configuration_loads():
    settings, rules = load_configuration(GOOD)
    assert settings.rules_path == REPO / "rules.json"
    assert len(rules.rules) == 3


def test_no_settings_at_all_names_every_required_one():
    error = refused({"AzureWebJobsScriptRoot": str(REPO)})
    text = str(error)
    assert text.startswith("invalid settings:\n")
    assert "SITE_DB_CONNECTION: required setting is missing" in error.problems
    assert any(
        p.startswith("AzureWebJobsStorage: required setting is missing") for p in error.problems
    )
    # The shipped rules target the AdminService: its settings are missing too.
    for name in ADMINSERVICE_SETTINGS:
        assert f"{name}: required because a rule targets the AdminService" in text
    assert len(error.problems) == 2 + len(ADMINSERVICE_SETTINGS)


@pytest.mark.parametrize("name", ["SITE_DB_CONNECTION", "AzureWebJobsStorage"])
def test_each_required_setting_missing_is_named(name):
    error = refused(without(name))
    assert [p.split(":")[0] for p in error.problems] == [name]
    assert f"{name}: required setting is missing" in str(error)


@pytest.mark.parametrize("name", ADMINSERVICE_SETTINGS)
def test_each_adminservice_setting_missing_is_named(name):
    error = refused(without(name))
    assert error.problems == [
        f"{name}: required because a rule targets the AdminService "
        "(or IDENTITY_SOURCE=adminservice)"
    ]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SITE_DB_CONNECTION", "sql01", "is not an ODBC connection string"),
        (
            "SITE_DB_CONNECTION",
            GOOD["SITE_DB_CONNECTION"] + ";TrustServerCertificate=yes",
            "TrustServerCertificate",
        ),
        ("AzureWebJobsStorage", "", "is empty"),
        (
            "AzureWebJobsStorage",
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5",
            "DefaultEndpointsProtocol=http sends requests",
        ),
        ("REMEDIATION_QUEUE", "Remediation_Queue", "is not a valid queue name"),
        ("EXPORT_SCHEDULE", "*/5 * * * *", "is not an NCRONTAB expression"),
        ("EXPORT_START_TIME", "last tuesday", ""),
        ("EXPORT_OVERLAP_MINUTES", "soon", "Input should be a valid integer"),
        ("EXPORT_MAX_MESSAGES_PER_RUN", "0", "greater than or equal to 1"),
        ("ADMINSERVICE_URL", "http://cmg.example/AdminService", "must be an https:// URL"),
        ("ENTRA_AUTHORITY_HOST", "http://login.example", "must be an https:// URL"),
        ("IDENTITY_SOURCE", "ldap", "Input should be 'sitedb' or 'adminservice'"),
        ("DRY_RUN", "perhaps", "Input should be a valid boolean"),
        ("RESOLVE_RETRY_HOURS", "0", "greater than 0"),
        ("MAX_ADDS_PER_COLLECTION_PER_HOUR", "many", "valid integer"),
        ("TLS_CA_BUNDLE", "missing.pem", "missing.pem is not a readable file"),
    ],
)
def test_each_malformed_setting_is_named(name, value, expected):
    error = refused({**GOOD, name: value})
    assert len(error.problems) == 1, error.problems
    assert error.problems[0].startswith(f"{name}: ")
    assert expected in error.problems[0]


def test_every_malformed_setting_is_named_at_once(tmp_path):
    error = refused(
        {
            **GOOD,
            "SITE_DB_CONNECTION": "sql01",
            "EXPORT_OVERLAP_MINUTES": "soon",
            "REMEDIATION_QUEUE": "Q",
            # The whole-model check never runs when a field fails: named all the same.
            "TLS_CA_BUNDLE": str(tmp_path / "missing.pem"),
            "ENTRA_CLIENT_CERTIFICATE_PATH": str(tmp_path / "missing-cert.pem"),
        }
    )
    assert sorted(p.split(":")[0] for p in error.problems) == [
        "ENTRA_CLIENT_CERTIFICATE_PATH",
        "EXPORT_OVERLAP_MINUTES",
        "REMEDIATION_QUEUE",
        "SITE_DB_CONNECTION",
        "TLS_CA_BUNDLE",
    ]


def test_a_broken_rules_file_and_a_bad_setting_are_both_named(tmp_path):
    path = broken_rules(tmp_path)
    error = refused({**GOOD, "EXPORT_OVERLAP_MINUTES": "soon", "REMEDIATION_RULES_FILE": str(path)})
    text = str(error)
    assert text.startswith("invalid settings:\n  EXPORT_OVERLAP_MINUTES: ")
    assert f"REMEDIATION_RULES_FILE {path}: invalid rules:" in text
    assert "'SMS00001' is a built-in collection" in text
    assert "action: Input should be 'add' or 'remove'" in text
    assert error.problems[0].startswith("EXPORT_OVERLAP_MINUTES: ")
    assert all(p.startswith(f"REMEDIATION_RULES_FILE {path}: rules[") for p in error.problems[1:])
    assert len(error.problems) == 3


def test_the_rules_file_is_found_from_the_raw_settings_when_settings_fail(tmp_path):
    (tmp_path / "my-rules.json").write_text('{"rules": [')
    values = {
        "AzureWebJobsScriptRoot": str(tmp_path),
        "REMEDIATION_RULES_FILE": "my-rules.json",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    error = refused(values)
    assert error.problems[0] == "SITE_DB_CONNECTION: required setting is missing"
    assert (
        f"REMEDIATION_RULES_FILE {tmp_path / 'my-rules.json'}: not valid JSON" in error.problems[1]
    )
    missing = refused({**values, "REMEDIATION_RULES_FILE": "gone.json"})
    assert missing.problems[1].startswith(
        f"REMEDIATION_RULES_FILE: {tmp_path / 'gone.json'} not found"
    )


def test_a_rule_targeting_the_adminservice_without_its_settings(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(rules_text(rule(target="adminservice")))
    error = refused({**without(*ADMINSERVICE_SETTINGS), "REMEDIATION_RULES_FILE": str(path)})
    assert str(error).startswith("invalid settings:\n  ADMINSERVICE_URL: required because")
    assert sorted(p.split(":")[0] for p in error.problems) == sorted(ADMINSERVICE_SETTINGS)


def test_missing_target_settings_are_named_beside_a_malformed_setting(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(rules_text(rule(target="adminservice")))
    error = refused(
        {
            **without("ADMINSERVICE_URL", "ADMINSERVICE_PASSWORD"),
            "EXPORT_SCHEDULE": "every five minutes",
            "REMEDIATION_RULES_FILE": str(path),
        }
    )
    assert [p.split(":")[0] for p in error.problems] == [
        "EXPORT_SCHEDULE",
        "ADMINSERVICE_URL",
        "ADMINSERVICE_PASSWORD",
    ]


def test_web_service_rules_name_the_settings_their_kind_needs(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(rules_text(rule(target="webservice")))
    error = refused({**GOOD, "REMEDIATION_RULES_FILE": str(path), "WEBSERVICE_KIND": "rest"})
    assert [p.split(":")[0] for p in error.problems] == [
        "WEBSERVICE_URL",
        "WEBSERVICE_SCOPE",
        "ENTRA_CLIENT_SECRET or ENTRA_CLIENT_CERTIFICATE_PATH",
    ]
    assert "(WEBSERVICE_KIND=rest)" in error.problems[0]


def test_a_ca_bundle_without_certificates_is_named(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    error = refused({**GOOD, "TLS_CA_BUNDLE": str(bundle)})
    assert error.problems[0].startswith(f"TLS_CA_BUNDLE: {bundle} is not a readable PEM file")


def test_problems_name_settings_never_their_secret_values():
    error = refused(
        {
            **GOOD,
            "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=s,1;Pwd=Sup3rS3cret!;"
            "TrustServerCertificate=yes",
            "ADMINSERVICE_PASSWORD": "",
        }
    )
    assert "Sup3rS3cret" not in str(error)
    assert "Sup3rS3cret" not in repr(error.problems)
    assert error.__context__ is None and error.__cause__ is None


def test_the_adminservice_export_needs_the_adminservice_settings():
    error = refused(
        {**without("SITE_DB_CONNECTION", "ADMINSERVICE_URL"), "EXPORT_SOURCE": "adminservice"}
    )
    # The shipped rules target the AdminService: that is the reason the message gives.
    assert error.problems == [
        "ADMINSERVICE_URL: required because a rule targets the AdminService "
        "(or IDENTITY_SOURCE=adminservice)"
    ]


def test_the_export_alone_names_itself_as_the_reason(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(rules_text(rule(target="webservice")))
    values = {
        **without("SITE_DB_CONNECTION", "ADMINSERVICE_URL"),
        "EXPORT_SOURCE": "adminservice",
        "IDENTITY_SOURCE": "sitedb",
        "SITE_DB_CONNECTION": GOOD["SITE_DB_CONNECTION"],
        "REMEDIATION_RULES_FILE": str(path),
        "WEBSERVICE_KIND": "configmgr-webservice",
        "WEBSERVICE_URL": "https://web.example/ConfigMgr.asmx",
        "WEBSERVICE_SECRET": "a-long-shared-secret",
    }
    error = refused(values)
    assert error.problems == ["ADMINSERVICE_URL: required because EXPORT_SOURCE=adminservice"]
