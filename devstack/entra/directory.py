"""One tenant's directory: users, client apps, APIs, the refresh grants issued, the
tenant's token policies and the clock they are judged by."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Final

from devstack.entra.keys import client_certificates
from devstack.entra.model import (
    CONFIGMGR_APP_ID_URI,
    CONFIGMGR_SCOPE,
    EntraApi,
    EntraClient,
    EntraUser,
    RefreshGrant,
    TokenVersion,
)

#: Entra's refresh token ``MaxInactiveTime``: 90 days, not configurable in Entra.
DEFAULT_REFRESH_TOKEN_MAX_INACTIVE_SECONDS: Final = 90 * 86400


class Directory:
    """The tenant's registrations, behind one lock that the simulator shares.

    UPNs, client IDs and API identifiers compare case-insensitively, like Entra's.

    Every lifetime the simulator enforces itself (refresh token inactivity, sign-in
    frequency, revocation, device codes) is judged by :meth:`now`: ``clock`` (default
    ``time.time``) plus what :meth:`advance_clock` added, so a test can move 90 days
    on in an instant. The JWTs it signs keep wall-clock ``iat``/``exp``, since MSAL's
    cache and :meth:`~devstack.entra.EntraSimulator.verify` judge those by the wall.

    Policies, plain attributes that may change at any time:
    ``refresh_token_max_inactive_seconds`` (90 days) and ``rotation_invalidates_old``
    (False: Entra keeps an old refresh token valid after it is redeemed); and the
    device code flow's ``device_code_lifetime_seconds`` (900), ``device_code_interval_seconds``
    (5) and ``device_code_slow_down`` (False: Entra does not document ``slow_down``).
    """

    def __init__(
        self, tenant_id: str, tenant_name: str, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.tenant_id = tenant_id.lower()
        self.tenant_name = tenant_name
        self._lock = threading.RLock()
        self._clock: Callable[[], float] = clock or time.time
        self._clock_offset = 0.0
        self._users: dict[str, EntraUser] = {}
        self._clients: dict[str, EntraClient] = {}
        self._apis: list[EntraApi] = []
        self._refresh_grants: dict[str, RefreshGrant] = {}
        self.refresh_token_max_inactive_seconds: float = DEFAULT_REFRESH_TOKEN_MAX_INACTIVE_SECONDS
        self.rotation_invalidates_old = False
        self.device_code_lifetime_seconds = 900
        self.device_code_interval_seconds = 5
        self.device_code_slow_down = False

    # -- the clock -----------------------------------------------------------------

    def now(self) -> float:
        """The simulator's time (seconds since the epoch): the clock plus any advance."""
        with self._lock:
            return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's time on (refresh token and device code lifetimes)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._clock_offset += seconds

    def add_user(
        self,
        upn: str,
        password: str,
        *,
        object_id: str | None = None,
        mfa_required: bool = False,
        display_name: str | None = None,
    ) -> EntraUser:
        """Register (or replace) a user; UPNs compare case-insensitively, like Entra's."""
        user = EntraUser(
            upn=upn,
            password=password,
            object_id=object_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{upn.lower()}")),
            display_name=display_name or upn.partition("@")[0],
            mfa_required=mfa_required,
        )
        with self._lock:
            self._users[upn.lower()] = user
        return user

    def set_password(self, upn: str, password: str) -> None:
        """Change a user's password: refresh tokens issued before now stop working."""
        with self._lock:
            user = self._users[upn.lower()]
            user.password = password
            user.tokens_valid_from = self.now()

    def revoke_sessions(self, upn: str) -> None:
        """What ``Revoke-MgUserSignInSession`` does: refresh tokens issued before now
        fail with AADSTS50173, as after a password reset. Access tokens already issued
        stay valid until they expire, as Entra's do (without CAE)."""
        with self._lock:
            self._users[upn.lower()].tokens_valid_from = self.now()

    def disable_user(self, upn: str) -> None:
        """Set ``accountEnabled`` false: sign-ins and refresh tokens fail with AADSTS50057."""
        with self._lock:
            self._users[upn.lower()].enabled = False

    def enable_user(self, upn: str) -> None:
        """Set ``accountEnabled`` true again (refresh tokens issued before work again;
        unverified against Entra)."""
        with self._lock:
            self._users[upn.lower()].enabled = True

    def set_sign_in_frequency(self, upn: str, seconds: float | None) -> None:
        """A conditional access sign-in frequency for the user (None removes it): a
        refresh token whose sign-in is older than ``seconds`` fails with AADSTS70043."""
        if seconds is not None and seconds <= 0:
            raise ValueError("a sign-in frequency is a positive number of seconds")
        with self._lock:
            self._users[upn.lower()].sign_in_frequency_seconds = seconds

    def add_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        public: bool = False,
        app_roles: Iterable[str] = (),
        display_name: str | None = None,
    ) -> EntraClient:
        """Register (or replace) a client app.

        ``public`` allows public client flows (no client credential for password and
        refresh grants). ``certificate_pem`` holds one or more public certificates for
        client assertions. ``app_roles`` are the application permissions granted to it
        (a token gets those the audience API defines).
        """
        client = EntraClient(
            client_id=client_id.lower(),
            secret=secret,
            certificates=(
                client_certificates(certificate_pem) if certificate_pem is not None else ()
            ),
            public=public,
            app_roles=frozenset(app_roles),
            display_name=display_name or f"app {client_id}",
            service_principal_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{client_id.lower()}")),
        )
        with self._lock:
            self._clients[client.client_id] = client
        return client

    def add_api(
        self,
        app_id_uri: str = CONFIGMGR_APP_ID_URI,
        scopes: Sequence[str] = (CONFIGMGR_SCOPE,),
        app_roles: Sequence[str] = (),
        *,
        app_id: str | None = None,
        access_token_version: TokenVersion = 1,
        display_name: str | None = None,
    ) -> EntraApi:
        """Register an API. A scope names it by its App ID URI, its application ID or
        ``api://<tenant>/<application ID>``, followed by ``/<scope>`` or ``/.default``.
        """
        api = EntraApi(
            app_id_uri=app_id_uri,
            app_id=(
                app_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"api:{self.tenant_id}:{app_id_uri}"))
            ).lower(),
            scopes=tuple(scopes),
            app_roles=tuple(app_roles),
            access_token_version=access_token_version,
            display_name=display_name or app_id_uri,
        )
        with self._lock:
            self._apis = [a for a in self._apis if a.app_id_uri.lower() != app_id_uri.lower()]
            self._apis.append(api)
        return api

    def api(self, identifier: str) -> EntraApi:
        """The API an identifier names (App ID URI, application ID, api://tenant/app ID)."""
        with self._lock:
            for api in self._apis:
                if identifier.lower() in (i.lower() for i in self.api_identifiers(api)):
                    return api
        raise KeyError(identifier)

    def api_identifiers(self, api: EntraApi) -> tuple[str, ...]:
        """Every identifier that names ``api`` in a scope (and may be a v1 ``aud``)."""
        return (api.app_id_uri, api.app_id, f"api://{self.tenant_id}/{api.app_id}")

    def find_user(self, upn: str) -> EntraUser | None:
        """The user with this UPN, or None."""
        with self._lock:
            return self._users.get(upn.lower())

    def find_client(self, client_id: str) -> EntraClient | None:
        """The client app with this ID, or None."""
        with self._lock:
            return self._clients.get(client_id.lower())

    def keep_refresh_grant(self, token: str, grant: RefreshGrant) -> None:
        """Remember what a refresh token just issued stands for."""
        with self._lock:
            self._refresh_grants[token] = grant

    def touch_refresh_grant(self, token: str, at: float) -> None:
        """Record that a refresh token was redeemed (its inactivity starts again)."""
        with self._lock:
            grant = self._refresh_grants.get(token)
            if grant is not None:
                self._refresh_grants[token] = replace(grant, last_used_at=at)

    def forget_refresh_grant(self, token: str) -> None:
        """Forget a refresh token: it reads as unknown from now on."""
        with self._lock:
            self._refresh_grants.pop(token, None)

    def refresh_grant(self, token: str) -> tuple[RefreshGrant, EntraUser] | None:
        """The grant a refresh token stands for and its user, or None if either is unknown."""
        with self._lock:
            grant = self._refresh_grants.get(token)
            user = self._users.get(grant.upn.lower()) if grant is not None else None
        if grant is None or user is None:
            return None
        return grant, user
