"""No secret literal in any template, parameter file or azure.yaml: secrets reach Key
Vault only through @secure() parameters, which azd fills from its environment."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, ROOT, Template, body

#: `key=value` / `key: value` pairs whose value would be a secret. The key starts a word
#: (`ADMINSERVICE_PASSWORD`, `Pwd`), not the tail of one (`resourceToken`).
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z])(?P<key>(?i:pwd|password|passwd|secret|client_secret|accountkey"
    r"|sharedaccesskey|sharedaccesssignature|sig|instrumentationkey|apikey|api_key|token))"
    r"['\"]?\s*(?P<sep>[=:])\s*(?P<quote>['\"]?)(?P<value>[^\s;'\",)}&]*)"
)
#: Values that are references or placeholders, not secrets.
_HARMLESS_VALUE = re.compile(r"^(|\$\{.*|<.*|\.\.\.|@Microsoft\.KeyVault\(.*)$")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{40,}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def scan(text: str, *, bicep: bool = False) -> list[str]:
    """What in ``text`` looks like a secret literal (empty: nothing). In Bicep an
    unquoted `key: value` is an expression, never a literal, so only quoted values and
    `key=value` inside strings count there."""
    findings: list[str] = []
    for match in _ASSIGNMENT.finditer(text):
        value = match["value"]
        if match["sep"] == ":" and not match["quote"] and bicep:
            continue
        if not _HARMLESS_VALUE.match(value):
            findings.append(f"{match['key']}{match['sep']}{value}")
    for token in _TOKEN.findall(_GUID.sub("", text)):
        if entropy(token) >= 4.5:
            findings.append(f"high-entropy string {token[:12]}...")
    if "-----BEGIN" in text:
        findings.append("a PEM block")
    return findings


def scanned_files() -> list[Path]:
    """Every file the deployment reads: infra/ and azure.yaml."""
    return [ROOT / "azure.yaml", *sorted(p for p in INFRA.rglob("*") if p.is_file())]


@pytest.mark.parametrize(
    "text",
    [
        "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Uid=reader;Pwd=hunter2;",
        "param x string = 'DefaultEndpointsProtocol=https;AccountName=st;AccountKey=abc'",
        "ADMINSERVICE_PASSWORD: 'Winter2026!'",
        '"password": "Winter2026!"',
        "secret: Winter2026!",
        "value: 'q7v1Qh2kT8vZ3nL0pR5sW9xY2aB4cD6eF8gH0jK2mN4pQ6rS8tU0vW2xY4zA6bC8=='",
        "https://st.blob.core.windows.net/c?sv=2022-11-02&sig=Zm9vYmFyYmF6cXV4",
        "-----BEGIN PRIVATE KEY-----",
    ],
)
def test_the_scanner_finds_secret_literals(text: str) -> None:
    assert scan(text), f"not found in {text!r}"


@pytest.mark.parametrize(
    "text",
    [
        "@description('SITE_DB_CONNECTION: Driver=...;Uid=...;Pwd=...;Encrypt=yes')",
        "@description('WEBSERVICE_SECRET: pre-shared secret of the ConfigMgr WebService')",
        "ADMINSERVICE_PASSWORD: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.uri})'",
        "var resourceToken = toLower(uniqueString(subscription().id, environmentName))",
        "secret: adminServicePassword",
        "var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'",
        "Pwd=<password>",
    ],
)
def test_the_scanner_passes_bicep_references_and_placeholders(text: str) -> None:
    assert scan(text, bicep=True) == []


def test_the_scanner_passes_azd_references() -> None:
    assert scan('"adminServicePassword": { "value": "${ADMINSERVICE_PASSWORD}" }') == []


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_secret_literal_in_templates_or_parameters(path: Path) -> None:
    assert scan(path.read_text(encoding="utf-8"), bicep=path.suffix == ".bicep") == []


def test_parameter_file_only_names_environment_variables() -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text())
    for name, entry in document["parameters"].items():
        assert set(entry) == {"value"}, f"{name}: only values (no Key Vault lookups here)"
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", entry["value"]), (
            f"{name}: {entry['value']!r} is not an azd environment reference"
        )


def test_parameter_file_maps_every_parameter_of_main(bicep: dict[str, Template]) -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text())
    assert set(document["parameters"]) == set(bicep["main.bicep"].parameters)


def test_secrets_map_to_variables_named_after_their_settings(bicep: dict[str, Template]) -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    main = bicep["main.bicep"]
    secure = {name for name in main.parameters if "secure" in main.decorators(name)}
    assert secure == {
        "siteDbConnection",
        "adminServicePassword",
        "entraClientSecret",
        "webServiceSecret",
    }
    for name in secure:
        setting = main.decorators(name)["description"].split(":")[0]
        assert document[name]["value"] == "${" + setting + "}", name
        # empty by default: not stored (siteDbConnection is not needed with siteDbPath none)
        assert main.parameters[name]["default"] == "", name


def test_secure_module_parameters_receive_only_secure_parameters(
    bicep: dict[str, Template],
) -> None:
    main = bicep["main.bicep"]
    checked = 0
    for module in main.modules.values():
        target = bicep[module["detail"]["path"]]
        arguments = body(module)["params"]
        for name in target.parameters:
            if "secure" not in target.decorators(name):
                continue
            argument = arguments[name]
            assert argument in main.parameters, f"{target.name}.{name} gets {argument!r}"
            assert "secure" in main.decorators(argument), f"{argument} is not @secure()"
            checked += 1
    assert checked == 4
