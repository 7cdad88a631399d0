"""docs/configuration.md, generated from the settings model."""

from __future__ import annotations

from pathlib import Path

from shared.platform.settings import Settings, setting_name


def configuration_reference() -> str:
    """docs/configuration.md, generated from the model (``cmremediate config-reference``)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `shared/platform/settings.py` by `cmremediate config-reference`; a",
        "test keeps this file and the model in step. Every setting is an app setting",
        "(environment variable) of the function app, or a `Values` entry of",
        "`local.settings.json` for `func start` and `cmremediate --settings`. Secrets belong",
        "in Key Vault references.",
        "",
        "| setting | meaning | default |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        alias = setting_name(name, field)
        if field.is_required():
            default = "required"
        elif field.default is None or isinstance(field.default, Path):
            default = ""
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        else:
            default = f"`{field.default}`"
        lines.append(f"| `{alias}` | {field.description or ''} | {default} |")
    return "\n".join(lines) + "\n"
