"""The tenant's directory objects, and the records the token endpoint keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

#: The simulated tenant, unless told otherwise (a made-up GUID, no real tenant's).
DEFAULT_TENANT_ID: Final = "7c6e2a4b-51f3-4d8e-9a2c-3b1d0f5e8a61"
#: The ConfigMgr server app's default Application ID URI and scope.
CONFIGMGR_APP_ID_URI: Final = "https://ConfigMgrService"
CONFIGMGR_SCOPE: Final = "user_impersonation"

#: Scopes of OpenID Connect itself: they name no resource.
#: In the order Entra lists them (discovery document, a token answer's ``scope``).
OIDC_SCOPE_ORDER: Final = ("openid", "profile", "email", "offline_access")
OIDC_SCOPES: Final = frozenset(OIDC_SCOPE_ORDER)

TokenVersion = Literal[1, 2]


@dataclass(slots=True)
class EntraUser:
    """A user; ``tokens_valid_from`` moves on a password change or a session revocation
    (refresh tokens issued before it die). ``enabled`` is ``accountEnabled``;
    ``sign_in_frequency_seconds`` the conditional access sign-in frequency that applies
    to the user (None: none)."""

    upn: str
    password: str = field(repr=False)
    object_id: str
    display_name: str
    mfa_required: bool = False
    tokens_valid_from: float = 0.0
    enabled: bool = True
    sign_in_frequency_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A certificate registered on a client (its public part only)."""

    sha1_thumbprint: str
    sha256_thumbprint: str
    public_key: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class EntraClient:
    """An app registration that asks for tokens."""

    client_id: str
    secret: str | None = field(repr=False)
    certificates: tuple[ClientCertificate, ...]
    public: bool
    app_roles: frozenset[str]
    display_name: str
    service_principal_id: str


@dataclass(frozen=True, slots=True)
class EntraApi:
    """An app registration that exposes an API (a token audience)."""

    app_id_uri: str
    app_id: str
    scopes: tuple[str, ...]
    app_roles: tuple[str, ...]
    access_token_version: TokenVersion
    display_name: str


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One token request as the simulator saw it (never a password, secret or assertion).

    ``outcome`` is ``"ok"`` or the OAuth error (``"invalid_grant"``); ``error_code`` the
    AADSTS number; ``client_auth`` how the client proved itself (``none``, ``secret``,
    ``certificate``) when it got that far.
    """

    grant_type: str | None
    client_id: str | None
    username: str | None
    scope: str | None
    outcome: str
    error_code: int | None
    status: int
    client_auth: str | None
    at: float


@dataclass(frozen=True, slots=True)
class SignIn:
    """One authentication of a user: when, and by which methods (the ``amr`` claim).

    A refresh token carries the sign-in it came from, so tokens redeemed from it keep
    its methods and sign-in frequency counts from its time.
    """

    upn: str
    auth_time: float
    amr: tuple[str, ...] = ("pwd",)


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh token stands for: whose, for which client and scope, since when
    (``issued_at``, ``last_used_at`` on the simulator's clock), from which sign-in."""

    client_id: str
    upn: str
    scope: str
    issued_at: float
    sign_in: SignIn
    last_used_at: float


@dataclass(frozen=True, slots=True)
class PendingDeviceCode:
    """A device code a test can see: what the user is shown and what the client asked.

    ``state`` is ``pending`` (nobody signed in yet), ``approved``, ``declined`` or
    ``redeemed``; times are on the simulator's clock (:meth:`Directory.now`).
    """

    user_code: str
    client_id: str
    scope: str
    issued_at: float
    expires_at: float
    state: str
