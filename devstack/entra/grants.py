"""The token endpoint's grants: ``password`` (ROPC), ``client_credentials`` and
``refresh_token``, with the refusals Entra answers each with."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote_plus

from devstack.entra.client_auth import authenticate_client
from devstack.entra.directory import Directory
from devstack.entra.model import EntraClient
from devstack.entra.refusals import Refusal, missing
from devstack.entra.scopes import ResolvedScope, resolve_scope
from devstack.entra.tokens import Authority, TokenIssuer
from devstack.https import HttpRequest


def read_form(request: HttpRequest) -> dict[str, str]:
    """The form body; a body Entra cannot read reads as one without grant_type."""
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise missing("grant_type")
    try:
        pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise missing("grant_type") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise Refusal(
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name}' is duplicated.",
            )
        form[name] = value
    authorization = request.header("authorization") or ""
    if authorization[:6].lower() == "basic ":  # client_secret_basic
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Refusal(
                "invalid_client", 7000215, "Invalid client secret provided.", status=401
            ) from None
        basic_id, _, basic_secret = decoded.partition(":")
        form.setdefault("client_id", unquote_plus(basic_id))
        form.setdefault("client_secret", unquote_plus(basic_secret))
    return form


class Grants:
    """Who the client is, which grant it asks for, and what that grant gives it."""

    def __init__(self, authority: Authority, directory: Directory, issuer: TokenIssuer) -> None:
        self._authority = authority
        self._directory = directory
        self._issuer = issuer

    def answer(self, form: Mapping[str, str], state: dict[str, str | None]) -> dict[str, object]:
        """The token answer to a well-formed request for this tenant, or its refusal.

        ``state`` gets what the request log keeps: ``client_auth`` once the client proved
        itself, ``username`` once a refresh token names its user.
        """
        grant_type = form.get("grant_type")
        if not grant_type:
            raise missing("grant_type")
        if grant_type not in ("password", "client_credentials", "refresh_token"):
            raise Refusal(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client_id = form.get("client_id")
        if not client_id:
            raise missing("client_id")
        client = self._directory.find_client(client_id)
        if client is None:
            raise Refusal(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self._directory.tenant_name}'. This can happen if the application has not "
                "been installed by the administrator of the tenant or consented to by any user "
                "in the tenant. You may have sent your authentication request to the wrong "
                "tenant.",
            )
        auth = authenticate_client(
            client,
            form,
            token_endpoint=self._authority.token_endpoint,
            issuer=self._authority.issuer,
        )
        state["client_auth"] = auth
        if auth == "none" and (grant_type == "client_credentials" or not client.public):
            raise Refusal(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
                status=401,
            )
        want_client_info = form.get("client_info") == "1"
        if grant_type == "client_credentials":
            return self._client_credentials(client, form, auth)
        if grant_type == "password":
            return self._password(client, form, auth, want_client_info)
        return self._refresh(client, form, auth, want_client_info, state)

    def _client_credentials(
        self, client: EntraClient, form: Mapping[str, str], auth: str
    ) -> dict[str, object]:
        scope = form.get("scope")
        if not scope:
            raise missing("scope")
        resolved = resolve_scope(self._directory, scope, app_only=True)
        roles = sorted(client.app_roles & set(resolved.api.app_roles))
        return self._issuer.issue(client, resolved, None, roles, auth, want_client_info=False)

    def _password(
        self, client: EntraClient, form: Mapping[str, str], auth: str, want_client_info: bool
    ) -> dict[str, object]:
        for name in ("username", "password", "scope"):
            if not form.get(name):
                raise missing(name)
        resolved = resolve_scope(self._directory, form["scope"], app_only=False)
        user = self._directory.find_user(form["username"])
        if user is None:
            raise Refusal(
                "invalid_grant",
                50034,
                f"The user account {{EmailHidden}} does not exist in the "
                f"{self._directory.tenant_id} directory. To sign into this application, the "
                "account must be added to the directory.",
            )
        if not hmac.compare_digest(form["password"].encode("utf-8"), user.password.encode("utf-8")):
            raise Refusal(
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password.",
            )
        if user.mfa_required:
            # What a conditional access policy requiring MFA gives the password grant.
            raise Refusal(
                "invalid_grant",
                50076,
                "Due to a configuration change made by your administrator, or because you "
                "moved to a new location, you must use multi-factor authentication to access "
                f"'{resolved.api.app_id}'.",
                extra={"suberror": "basic_action"},
            )
        self._check_consent(client, resolved)
        return self._issuer.issue(
            client, resolved, user, [], auth, want_client_info=want_client_info
        )

    def _check_consent(self, client: EntraClient, resolved: ResolvedScope) -> None:
        if not resolved.scopes:  # .default on an API without delegated scopes
            raise Refusal(
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client.client_id}' named '{client.display_name}'. Send an interactive "
                "authorization request for this user and resource.",
                extra={"suberror": "consent_required"},
            )

    def _refresh(
        self,
        client: EntraClient,
        form: Mapping[str, str],
        auth: str,
        want_client_info: bool,
        state: dict[str, str | None],
    ) -> dict[str, object]:
        token = form.get("refresh_token")
        if not token:
            raise missing("refresh_token")
        found = self._directory.refresh_grant(token)
        if found is None:
            raise Refusal(
                "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        grant, user = found
        state["username"] = user.upn
        if grant.client_id != client.client_id:
            raise Refusal("invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if grant.issued_at < user.tokens_valid_from:
            issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%m/%d/%Y %H:%M:%S")
            valid = datetime.fromtimestamp(user.tokens_valid_from, UTC).strftime(
                "%m/%d/%Y %H:%M:%S"
            )
            raise Refusal(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password. The grant was "
                f"issued on '{issued}' and the TokensValidFrom date (before which tokens are "
                f"not valid) for this user is '{valid}'.",
            )
        resolved = resolve_scope(self._directory, form.get("scope") or grant.scope, app_only=False)
        self._check_consent(client, resolved)
        return self._issuer.issue(
            client, resolved, user, [], auth, want_client_info=want_client_info
        )
