"""``cmremediate sign-in``: open the AdminService session the app keeps alive
(ADMINSERVICE_AUTH=refresh-token): a device-code sign-in of the remediation account,
with MFA and conditional access as usual. No password is stored anywhere."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmremediate_cli.app import SettingsOption, app, opened
from cmremediate_cli.console import console, errors
from shared.app.adminservice_tokens import session_store
from shared.app.runtime import Runtime
from shared.errors import ConfigurationError
from shared.platform.tokens import sign_in_by_device_code


@app.command("sign-in")
def sign_in(
    account: Annotated[
        str | None,
        typer.Option(
            help="The account that must sign in (default: ADMINSERVICE_USERNAME, if set)."
        ),
    ] = None,
    settings_file: SettingsOption = None,
) -> None:
    """Sign the remediation account in by device code and store the session for the
    app (never printed). Run it again after a revocation, a password reset, or when the
    app says "sign-in needed"."""
    with opened(settings_file) as runtime:
        s = runtime.settings
        if not (s.entra_tenant_id and s.entra_client_id):
            raise ConfigurationError("ENTRA_TENANT_ID and ENTRA_CLIENT_ID are required")
        if not s.signs_in_with_session:
            errors.print(
                "note: ADMINSERVICE_AUTH is password, so the app will not use this session "
                "until it is set to refresh-token"
            )
        signed_in = sign_in_by_device_code(
            authority_host=s.entra_authority_host,
            tenant_id=s.entra_tenant_id,
            client_id=s.entra_client_id,
            scope=s.adminservice_scope,
            session=runtime.http,
            show=lambda text: console.print(text, highlight=False, soft_wrap=True),
            expected_username=account or s.adminservice_username,
        )
        store = session_store(s, runtime.storage, _admin_credential(runtime), _transport(runtime))
        store.replace(signed_in.cache_text)
        where = store.where
    console.print(f"signed in as {signed_in.username}; the session is stored in {where}")


def _admin_credential(runtime: Runtime) -> Any:
    """Who writes the session to Key Vault: the admin signed in here (Azure CLI, VS
    Code, environment), never a managed identity of this machine."""
    if runtime.overrides.vault_credential is not None or runtime.settings.session_secret is None:
        return runtime.overrides.vault_credential
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_managed_identity_credential=True)


def _transport(runtime: Runtime) -> Any:
    return runtime.overrides.vault_transport
