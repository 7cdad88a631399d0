"""Whether a user may still get tokens: an account that is disabled, a refresh token that
was revoked, went unused too long, or outlived the user's sign-in frequency.

Facts (Microsoft Learn, "Microsoft Entra authentication and authorization error codes",
"Refresh tokens in the Microsoft identity platform", "Configurable token lifetimes"):

- AADSTS50057 UserDisabled; on the v2.0 token endpoint it is ``invalid_grant`` with
  "The user account is disabled." (as answered to azure-cli, Azure/azure-cli#18945).
- AADSTS50173 FreshTokenNeeded: an admin or the user revoked the tokens, or the password
  changed; the grant was issued before the user's TokensValidFrom.
- AADSTS700082 ExpiredOrRevokedGrantInactiveToken: "The refresh token has expired due
  to inactivity. The token was issued on {issueDate} and was inactive for {time}."
  ``MaxInactiveTime`` is 90 days and cannot be changed in Entra (here it can, for tests).
  The error is ``invalid_grant`` (unverified on the wire: every AADSTS7000xx refresh
  failure seen is).
- AADSTS70043 BadTokenDueToSignInFrequency: "The refresh token has expired or is invalid
  due to sign-in frequency checks by conditional access. The token was issued on
  {issueDate} and the maximum allowed lifetime for this request is {time}." The v2.0
  endpoint answers it as ``invalid_grant`` with ``suberror`` ``token_expired`` (seen by
  azure-identity, Azure/azure-sdk-for-python#28478, and MSAL Node users,
  microsoft/vscode-mssql#22364); the issue date is the original sign-in's. AADSTS70044,
  the session-cookie counterpart, is not what a refresh token gets.
"""

from __future__ import annotations

from datetime import UTC, datetime

from devstack.entra.directory import Directory
from devstack.entra.model import EntraUser, RefreshGrant
from devstack.entra.refusals import Refusal, entra_time, timespan


def user_disabled() -> Refusal:
    """The refusal of any grant for a disabled account."""
    return Refusal("invalid_grant", 50057, "The user account is disabled.")


def check_refresh(directory: Directory, grant: RefreshGrant, user: EntraUser, now: float) -> None:
    """Raise the refusal Entra gives a refresh token that may no longer be redeemed."""
    if not user.enabled:
        raise user_disabled()
    if grant.issued_at < user.tokens_valid_from:
        issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%m/%d/%Y %H:%M:%S")
        valid = datetime.fromtimestamp(user.tokens_valid_from, UTC).strftime("%m/%d/%Y %H:%M:%S")
        raise Refusal(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is "
            "needed. The user might have changed or reset their password. The grant was "
            f"issued on '{issued}' and the TokensValidFrom date (before which tokens are "
            f"not valid) for this user is '{valid}'.",
        )
    max_inactive = directory.refresh_token_max_inactive_seconds
    if now - grant.last_used_at > max_inactive:
        raise Refusal(
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on "
            f"{entra_time(grant.issued_at)} and was inactive for {timespan(max_inactive)}.",
        )
    frequency = user.sign_in_frequency_seconds
    if frequency is not None and now - grant.sign_in.auth_time > frequency:
        raise Refusal(
            "invalid_grant",
            70043,
            "The refresh token has expired or is invalid due to sign-in frequency checks "
            "by conditional access. The token was issued on "
            f"{entra_time(grant.sign_in.auth_time)} and the maximum allowed lifetime for "
            f"this request is {int(frequency)}.",
            extra={"suberror": "token_expired"},
        )
