"""Settings, rules and the targets the rules need, checked together.

One ConfigurationError names every problem that can be found at once: a bad setting
does not hide a broken rules file, and the rules file is read even then, so a rule
whose target has no settings is named too. Nothing here touches the network, so
``get_runtime()`` checks again, cheaply, on every call while the configuration is bad.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from shared.domain.rules import RuleSet, load_rules
from shared.errors import ConfigurationError, settings_message
from shared.platform.http import trust_store
from shared.platform.raw_settings import app_path, raw_app_root, raw_setting
from shared.platform.settings import SETTING_FIELDS, Settings, load_settings

#: A setting's value by its name (the alias operators use), None when unset.
Lookup = Callable[[str], object]


#: App settings that the Functions host itself resolves in a binding (``%NAME%``), by
#: the function whose binding names them. The host knows nothing of this app's
#: defaults: with one unset it leaves that function in error, and it never runs.
BINDING_SETTINGS = {
    "EXPORT_SCHEDULE": "export_status_messages",
    "REMEDIATION_QUEUE": "apply_remediation",
}


def binding_problems(environ: Mapping[str, str]) -> list[str]:
    """The binding settings missing from the function app's environment."""
    return [
        f"{name}: not set; the Functions host resolves %{name}% in the binding of "
        f"{function} itself, without this app's default, and does not run {function} "
        "without it (set it, even to the default)"
        for name, function in BINDING_SETTINGS.items()
        if not raw_setting(environ, name)
    ]


def _missing(setting: Lookup, names: list[str]) -> list[str]:
    return [name for name in names if setting(name) in (None, "")]


def target_problems(setting: Lookup, rules: RuleSet) -> list[str]:
    """Settings that the targets the rules name (and the identity source) need but lack."""
    problems: list[str] = []
    export_source = setting("EXPORT_SOURCE") or "sitedb"
    identity_source = setting("IDENTITY_SOURCE") or export_source
    needs_adminservice = identity_source == "adminservice" or any(
        r.target == "adminservice" for r in rules.rules
    )
    reason = "a rule targets the AdminService (or IDENTITY_SOURCE=adminservice)"
    if export_source == "adminservice" and not needs_adminservice:
        needs_adminservice, reason = True, "EXPORT_SOURCE=adminservice"
    if needs_adminservice:
        required = ["ADMINSERVICE_URL", "ENTRA_TENANT_ID", "ENTRA_CLIENT_ID"]
        if setting("ADMINSERVICE_AUTH") != "refresh-token":
            required += ["ADMINSERVICE_USERNAME", "ADMINSERVICE_PASSWORD"]
        missing = _missing(setting, required)
        problems += [f"{name}: required because {reason}" for name in missing]
    if any(r.target == "webservice" for r in rules.rules):
        kind = setting("WEBSERVICE_KIND")
        required = ["WEBSERVICE_KIND", "WEBSERVICE_URL"]
        if kind == "configmgr-webservice":
            required.append("WEBSERVICE_SECRET")
        elif kind == "rest":
            required += ["WEBSERVICE_SCOPE", "ENTRA_TENANT_ID", "ENTRA_CLIENT_ID"]
        missing = _missing(setting, required)
        if kind == "rest" and not (
            setting("ENTRA_CLIENT_SECRET") or setting("ENTRA_CLIENT_CERTIFICATE_PATH")
        ):
            missing.append("ENTRA_CLIENT_SECRET or ENTRA_CLIENT_CERTIFICATE_PATH")
        suffix = f" (WEBSERVICE_KIND={kind})" if kind else ""
        problems += [
            f"{name}: required because a rule targets the web service{suffix}" for name in missing
        ]
    return problems


def of_settings(settings: Settings) -> Lookup:
    """Look settings up by name in a validated model."""
    return lambda name: getattr(settings, SETTING_FIELDS[name])


def validate_targets(settings: Settings, rules: RuleSet) -> None:
    """Every target a rule names, and the identity source, must be fully configured."""
    problems = target_problems(of_settings(settings), rules)
    if problems:
        raise ConfigurationError.of_settings(problems)


def _rules_path(values: Mapping[str, str]) -> Path:
    """Where the rules file is, from the raw settings (when the model refused them)."""
    name = raw_setting(values, "REMEDIATION_RULES_FILE")
    default = Settings.model_fields["rules_file"].default
    return app_path(raw_app_root(values), name if name is not None else default)


def load_configuration(values: Mapping[str, str] | None = None) -> tuple[Settings, RuleSet]:
    """Settings (``values``, else the environment), the rules file they name, and the
    targets the rules need; raise one ConfigurationError naming every problem found."""
    raw: Mapping[str, str] = os.environ if values is None else values
    setting_problems: list[str] = []
    rules_error: ConfigurationError | None = None
    settings: Settings | None = None
    rules: RuleSet | None = None
    try:
        settings = load_settings(values)
    except ConfigurationError as error:
        setting_problems += error.problems
    try:
        rules = load_rules(settings.rules_path if settings else _rules_path(raw))
    except ConfigurationError as error:
        rules_error = error
    if rules is not None:
        # From the raw values when the model refused them: a missing setting is missing.
        lookup = of_settings(settings) if settings else lambda name: raw_setting(raw, name)
        setting_problems += target_problems(lookup, rules)
    if settings is not None and settings.tls_ca_bundle is not None:
        try:
            trust_store(settings.tls_ca_bundle)  # otherwise refused only at the first call
        except ConfigurationError as error:
            setting_problems += error.problems
    if not setting_problems and rules_error is None:
        assert settings is not None and rules is not None
        return settings, rules
    parts = [settings_message(setting_problems)] if setting_problems else []
    problems = list(setting_problems)
    if rules_error is not None:
        parts.append(str(rules_error))
        problems += rules_error.problems
    raise ConfigurationError("\n".join(parts), problems)
