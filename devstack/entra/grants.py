"""The token endpoint's grants: ``password`` (ROPC), ``client_credentials``,
``refresh_token`` and ``device_code``, with the refusals Entra answers each with.

A refresh token redemption always answers a new refresh token; the old one stays valid
("The Microsoft identity platform doesn't revoke old refresh tokens when used to fetch
new access tokens", Microsoft Learn, refresh-tokens) unless ``rotation_invalidates_old``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus

from devstack.entra.client_auth import authenticate_client, requested_client
from devstack.entra.device_codes import DEVICE_CODE_GRANT, DeviceCodes
from devstack.entra.directory import Directory
from devstack.entra.model import EntraClient
from devstack.entra.refusals import Refusal, missing
from devstack.entra.scopes import ResolvedScope, resolve_scope
from devstack.entra.sessions import check_refresh, user_disabled
from devstack.entra.tokens import Authority, TokenIssuer
from devstack.https import HttpRequest

_GRANT_TYPES = ("password", "client_credentials", "refresh_token", DEVICE_CODE_GRANT)


def read_form(request: HttpRequest, first_parameter: str = "grant_type") -> dict[str, str]:
    """The form body; a body Entra cannot read reads as one without its first parameter."""
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise missing(first_parameter)
    try:
        pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise missing(first_parameter) from None
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

    def __init__(
        self,
        authority: Authority,
        directory: Directory,
        issuer: TokenIssuer,
        device_codes: DeviceCodes,
    ) -> None:
        self._authority = authority
        self._directory = directory
        self._issuer = issuer
        self._device_codes = device_codes

    def answer(self, form: Mapping[str, str], state: dict[str, str | None]) -> dict[str, object]:
        """The token answer to a well-formed request for this tenant, or its refusal.

        ``state`` gets what the request log keeps: ``client_auth`` once the client proved
        itself, ``username`` once a refresh token or device code names its user.
        """
        grant_type = form.get("grant_type")
        if not grant_type:
            raise missing("grant_type")
        if grant_type not in _GRANT_TYPES:
            raise Refusal(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client = requested_client(self._directory, form)
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
        if grant_type == DEVICE_CODE_GRANT:
            return self._device_code(client, form, auth, want_client_info, state)
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
        if not user.enabled:  # only a right password learns this
            raise user_disabled()
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
        now = self._directory.now()
        check_refresh(self._directory, grant, user, now)
        resolved = resolve_scope(self._directory, form.get("scope") or grant.scope, app_only=False)
        self._check_consent(client, resolved)
        if self._directory.rotation_invalidates_old:
            self._directory.forget_refresh_grant(token)
        else:
            self._directory.touch_refresh_grant(token, now)
        return self._issuer.issue(
            client,
            resolved,
            user,
            [],
            auth,
            want_client_info=want_client_info,
            sign_in=grant.sign_in,
            rotate_refresh=True,
        )

    def _device_code(
        self,
        client: EntraClient,
        form: Mapping[str, str],
        auth: str,
        want_client_info: bool,
        state: dict[str, str | None],
    ) -> dict[str, object]:
        device_code = form.get("device_code")
        if not device_code:
            raise missing("device_code")
        sign_in, scope = self._device_codes.redeem(client.client_id, device_code)
        state["username"] = sign_in.upn
        user = self._directory.find_user(sign_in.upn)
        if user is None:
            raise Refusal("invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if not user.enabled:
            raise user_disabled()
        resolved = resolve_scope(self._directory, scope, app_only=False)
        self._check_consent(client, resolved)
        return self._issuer.issue(
            client, resolved, user, [], auth, want_client_info=want_client_info, sign_in=sign_in
        )
