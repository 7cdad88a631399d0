"""The settings as raw text, for what the model needs before it can read them and for
diagnosis when it refuses them: the app root, the file settings, what is missing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: The app root: where host.json and the rules file live. The Functions host sets
#: AzureWebJobsScriptRoot; elsewhere (CLI, tests) it is the repository root.
DEFAULT_APP_ROOT = Path(__file__).resolve().parents[2]

SITE_DB_MISSING = "SITE_DB_CONNECTION: required setting is missing"
STORAGE_MISSING = (
    "AzureWebJobsStorage: required setting is missing (a storage connection "
    "string, or AzureWebJobsStorage__accountName for a managed identity)"
)


def raw_setting(values: Mapping[str, str], name: str) -> str | None:
    """The raw value of a setting, matched without regard to case as the model reads
    the environment; None when it is not set. For diagnosis when the model refuses."""
    wanted = name.lower()
    return next((value for key, value in values.items() if key.lower() == wanted), None)


def site_database_needed(values: Mapping[str, str]) -> bool:
    """From the raw settings: SITE_DB_CONNECTION is needed and not given."""
    if raw_setting(values, "SITE_DB_CONNECTION"):
        return False
    export = (raw_setting(values, "EXPORT_SOURCE") or "sitedb").strip()
    identity = (raw_setting(values, "IDENTITY_SOURCE") or export).strip()
    # A value the model refuses reads the site database as far as anyone knows.
    return not export == identity == "adminservice"


def storage_given(values: Mapping[str, str]) -> bool:
    names = {name.lower() for name, value in values.items() if value}
    return bool(
        names
        & {
            "azurewebjobsstorage",
            "azurewebjobsstorage__accountname",
            "azurewebjobsstorage__queueserviceuri",
        }
    )


#: Settings that name a file: (field, setting), read relative to the app root like the
#: rules file.
FILE_SETTINGS = (
    ("tls_ca_bundle", "TLS_CA_BUNDLE"),
    ("entra_client_certificate_path", "ENTRA_CLIENT_CERTIFICATE_PATH"),
)


def app_path(root: Path, value: str | Path) -> Path:
    """A path setting: absolute as given, else relative to the app root."""
    path = Path(value)
    return path if path.is_absolute() else root / path


def raw_app_root(values: Mapping[str, str]) -> Path:
    """The app root from the raw settings (when the model refused them)."""
    return Path(raw_setting(values, "AzureWebJobsScriptRoot") or DEFAULT_APP_ROOT)


def unreadable(alias: str, resolved: Path) -> str | None:
    return None if resolved.is_file() else f"{alias}: {resolved} is not a readable file"


def file_problems(values: Mapping[str, str]) -> list[str]:
    """The file settings the whole-model check would refuse; that check runs only when
    every field is valid, and stops at its first problem."""
    root = raw_app_root(values)
    problems = []
    for _, alias in FILE_SETTINGS:
        value = raw_setting(values, alias)
        problem = unreadable(alias, app_path(root, value)) if value else None
        if problem:
            problems.append(problem)
    return problems
