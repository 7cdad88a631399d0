"""checkov passes on infra/: every Bicep check passes or is skipped, with its reason,
beside the resource it concerns; the secrets scan finds nothing."""

from __future__ import annotations

from typing import Any

from tests.infra.bicep import INFRA, CheckovRun

#: Every skip in the templates, (check, resource): adding one is a decision this list
#: records. The reasons live in the `// checkov:skip=` comments beside the resources.
EXPECTED_SKIPS = {
    ("CKV_AZURE_225", "Microsoft.Web/serverfarms.plan"),  # zone redundancy: cost
    ("CKV_AZURE_222", "Microsoft.Web/sites.site"),  # public inbound: azd deploy, health
    ("CKV_AZURE_17", "Microsoft.Web/sites.site"),  # client certificates: function key
    ("CKV_AZURE_212", "Microsoft.Web/sites.site"),  # minimum instances: scales to zero
    ("CKV_AZURE_213", "Microsoft.Web/sites.site"),  # platform health check: needs a key
    ("CKV_AZURE_206", "Microsoft.Storage/storageAccounts.storage"),  # SKU is a parameter
    # network default Allow only with siteDbPath none and no subnet (no rule can name the
    # app's callers then); Deny in every other case (tests/infra/test_site_db_path.py)
    ("CKV_AZURE_35", "Microsoft.Storage/storageAccounts.storage"),
    ("CKV_AZURE_109", "Microsoft.KeyVault/vaults.vault"),
    ("CKV_AZURE_189", "Microsoft.KeyVault/vaults.vault"),  # public access: conditional
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.siteDbConnectionSecret"),
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.adminServicePasswordSecret"),
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.entraClientSecretSecret"),
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.webServiceSecretSecret"),
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.listenKey"),
    # the AdminService session: the app writes a version at every renewal
    ("CKV_AZURE_41", "Microsoft.KeyVault/vaults/secrets.adminServiceSession"),
    # checkov reads no properties of a conditional resource; contentType is set
    ("CKV_AZURE_114", "Microsoft.KeyVault/vaults/secrets.siteDbConnectionSecret"),
    ("CKV_AZURE_114", "Microsoft.KeyVault/vaults/secrets.adminServicePasswordSecret"),
    ("CKV_AZURE_114", "Microsoft.KeyVault/vaults/secrets.entraClientSecretSecret"),
    ("CKV_AZURE_114", "Microsoft.KeyVault/vaults/secrets.webServiceSecretSecret"),
    ("CKV_AZURE_114", "Microsoft.KeyVault/vaults/secrets.adminServiceSession"),
}


def results(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """passed_checks, failed_checks or skipped_checks of a report."""
    found: list[dict[str, Any]] = report["results"][kind]
    return found


def test_checkov_passes(checkov: CheckovRun) -> None:
    bicep = checkov.report("bicep")
    failed = [
        (c["check_id"], c["resource"], c["file_path"]) for c in results(bicep, "failed_checks")
    ]
    assert not failed, f"checkov failed: {failed}"
    assert checkov.returncode == 0, checkov.stderr[-3000:]


def test_checkov_read_every_template(checkov: CheckovRun) -> None:
    bicep = checkov.report("bicep")
    assert bicep["summary"]["parsing_errors"] == 0
    assert results(bicep, "parsing_errors") == []
    checked = {
        c["file_path"].lstrip("/")
        for kind in ("passed_checks", "skipped_checks")
        for c in results(bicep, kind)
    }
    # the modules holding the resources checkov has checks for
    assert {
        "main.bicep",
        "modules/functionapp.bicep",
        "modules/keyvault.bicep",
        "modules/storage.bicep",
    } <= checked
    assert bicep["summary"]["passed"] >= 30


def test_every_skip_is_expected_and_gives_its_reason(checkov: CheckovRun) -> None:
    skipped = results(checkov.report("bicep"), "skipped_checks")
    assert {(c["check_id"], c["resource"]) for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.split()) >= 6, f"{check['check_id']} on {check['resource']}: {reason!r}"


def test_skip_comments_sit_inside_the_resource_they_skip() -> None:
    for path in INFRA.rglob("*.bicep"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "checkov:skip=" not in line:
                continue
            assert line.lstrip().startswith("// checkov:skip=CKV_"), f"{path}:{number + 1}"
            above = [t for t in lines[:number] if not t.lstrip().startswith("//")]
            assert above[-1].startswith("resource ") and above[-1].endswith("{"), (
                f"{path.name}:{number + 1}: put the skip at the top of the resource body"
            )


def test_only_skipped_checks_crashed(checkov: CheckovRun) -> None:
    # checkov 3.3.30 raises on some conditional values; a crash of a check that is not
    # skipped would hide a result.
    skipped_ids = {check for check, _ in EXPECTED_SKIPS}
    assert checkov.crashed <= skipped_ids, checkov.stderr[-3000:]


def test_secrets_scan_reports_no_secret(checkov: CheckovRun) -> None:
    # checkov writes a secrets report only when it has results; tests/infra/test_secrets.py
    # scans the same files with its own, stricter rules.
    secrets = [r for r in checkov.reports if r.get("check_type") == "secrets"]
    for report in secrets:
        assert results(report, "failed_checks") == []
