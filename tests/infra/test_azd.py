"""azure.yaml and what `azd deploy` packages: the service azd deploys is the function
app the templates tag, and the package carries neither azd's secrets nor tool venvs."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from typing import Any

import pytest

from tests.infra.bicep import ROOT, Template, tool


@pytest.fixture(scope="module")
def azure_yaml() -> dict[str, Any]:
    """azure.yaml, read with PyYAML from .venv-infra (checkov depends on it)."""
    result = subprocess.run(
        [
            str(tool("python")),
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            str(ROOT / "azure.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_azure_yaml_deploys_one_python_function_app(
    azure_yaml: dict[str, Any], bicep: dict[str, Template]
) -> None:
    services = azure_yaml["services"]
    assert list(services) == [bicep["main.bicep"].variables["serviceName"]["value"]]
    service = next(iter(services.values()))
    assert service["host"] == "function"
    assert service["language"] == "python"
    assert service["project"] == "."
    assert azure_yaml["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}


def funcignored(path: str) -> bool:
    """Whether .funcignore (gitignore-style, top-level names here) excludes ``path``."""
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    first = path.split("/")[0]
    return any(fnmatch.fnmatch(first, pattern.rstrip("/")) for pattern in patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".azure/prod/.env",  # azd's environment: SITE_DB_CONNECTION and other secrets
        ".venv-infra/bin/checkov",
        ".venv/bin/python",
        "infra/main.bicep",
        "tests/infra/test_azd.py",
        "local.settings.json",
        "cmremediate_cli/main.py",  # the operator's tool: typer and rich are not deployed
        "devstack/functions_host.py",
    ],
)
def test_the_package_leaves_out_secrets_and_tools(path: str) -> None:
    assert funcignored(path), f"azd deploy would upload {path}"


@pytest.mark.parametrize(
    "path",
    ["function_app.py", "host.json", "requirements.txt", "rules.json", "shared/app/runtime.py"],
)
def test_the_package_keeps_the_app(path: str) -> None:
    assert not funcignored(path)
    assert (ROOT / path).is_file()


def test_requirements_suit_the_azure_linux_image() -> None:
    requirements = (ROOT / "requirements.txt").read_text()
    # pyodbc's wheels need only unixODBC and the driver, both on Azure's Python images
    # ("ODBC Driver 18 for SQL Server"); the worker itself comes with the platform.
    assert "pyodbc" in requirements
    assert "azure-functions-worker" not in requirements


def test_infra_readme_lists_every_parameter(bicep: dict[str, Template]) -> None:
    document = json.loads((ROOT / "infra" / "main.parameters.json").read_text())
    readme = (ROOT / "infra" / "README.md").read_text()
    for name in bicep["main.bicep"].parameters:
        variable = document["parameters"][name]["value"][2:-1]
        assert f"| `{variable}` | `{name}` |" in readme, f"infra/README.md: no row for {name}"
