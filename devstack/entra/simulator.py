"""The simulator itself: one tenant served over HTTPS, its lifecycle and its routes.

The directory it is built on lives in :mod:`devstack.entra.directory`, the grants it
routes token requests to in :mod:`devstack.entra.grants`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import unquote

import jwt

from devstack.entra import metadata
from devstack.entra.device_codes import DEVICECODE_ERROR_STATUS, DeviceCodes
from devstack.entra.directory import DEFAULT_REFRESH_TOKEN_MAX_INACTIVE_SECONDS, Directory
from devstack.entra.grants import Grants, read_form
from devstack.entra.keys import SigningKeys
from devstack.entra.model import DEFAULT_TENANT_ID, PendingDeviceCode, TokenRequest
from devstack.entra.refusals import NO_CACHE, Refusal, error_response, unknown_tenant
from devstack.entra.tokens import TokenIssuer
from devstack.entra.user_realm import UserRealmResponder, certificate_names
from devstack.https import HttpExchange, HttpRequest, HttpResponse, HttpsSimulator, LocalHttpsServer
from devstack.ports import LOOPBACK
from devstack.tls import LocalCA


def _loopback_host(host: str) -> str:
    """The address to bind for a simulator's host name: localhost or an IPv4 loopback."""
    if host == "localhost":
        return LOOPBACK
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"host must be 'localhost' or an IPv4 loopback address, not {host!r}")
    return host


class EntraSimulator(Directory, HttpsSimulator):
    """Entra ID for one tenant: discovery, keys, the v2.0 token and device code
    endpoints over HTTPS.

    It listens on 127.0.0.1 as ``localhost``; ``host="127.x.y.z"`` (any IPv4 loopback
    address) gives it an address of its own, with its own port-443 user realm, so that
    several processes can each run one.

    ``token_lifetime_seconds`` may be changed at any time (expiry tests; note that
    MSAL treats a cached token with less than 5 minutes left as expired).
    ``latency_seconds`` delays every answer. :meth:`set_down` closes the port for real;
    :meth:`fail_next` makes the next token requests fail with an HTTP error. The
    directory (``add_user``, ``add_client``, ``add_api``, ``disable_user``,
    ``revoke_sessions``, ``set_sign_in_frequency``), its policies and its clock
    (``now``, ``advance_clock``) come from :class:`Directory`; the constructor sets the
    policies' first values.

    The device code flow: a client asks ``/devicecode``, a test plays the user at
    https://microsoft.com/devicelogin with :meth:`approve_device_code` (or
    :meth:`decline_device_code`), finding the code with :meth:`pending_device_codes`
    or :meth:`wait_for_device_code`.
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        tenant_id: str = DEFAULT_TENANT_ID,
        token_lifetime_seconds: int = 3600,
        port: int | None = None,
        user_realm: bool = True,
        tenant_name: str = "Contoso",
        host: str = "localhost",
        clock: Callable[[], float] | None = None,
        device_code_lifetime_seconds: int = 900,
        device_code_interval_seconds: int = 5,
        device_code_slow_down: bool = False,
        refresh_token_max_inactive_seconds: float = DEFAULT_REFRESH_TOKEN_MAX_INACTIVE_SECONDS,
        rotation_invalidates_old: bool = False,
    ) -> None:
        self._ca = ca
        self.host = host
        self._bind = _loopback_host(host)
        super().__init__(tenant_id, tenant_name, clock=clock)
        self.token_lifetime_seconds = token_lifetime_seconds
        self.device_code_lifetime_seconds = device_code_lifetime_seconds
        self.device_code_interval_seconds = device_code_interval_seconds
        self.device_code_slow_down = device_code_slow_down
        self.refresh_token_max_inactive_seconds = refresh_token_max_inactive_seconds
        self.rotation_invalidates_old = rotation_invalidates_old
        self._keys = SigningKeys()
        self._token_issuer = TokenIssuer(authority=self, directory=self, keys=self._keys)
        self._device_codes = DeviceCodes(self)
        self._grants = Grants(
            authority=self,
            directory=self,
            issuer=self._token_issuer,
            device_codes=self._device_codes,
        )
        self._requests: list[TokenRequest] = []
        self._failures: list[tuple[int, int | None]] = []
        self._server = LocalHttpsServer(
            ca.server_context(*certificate_names(self._bind)),
            self._handle,
            port=port,
            host=self._bind,
            name="entra",
        )
        self._want_user_realm = user_realm
        self._user_realm: UserRealmResponder | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Listen on the port, and on 443 for the user realm unless told not to."""
        super().start()
        if self._want_user_realm and self._user_realm is None:
            responder = UserRealmResponder(self._ca, host=self._bind)
            try:
                responder.start()
            except BaseException:
                self._server.stop()
                raise
            self._user_realm = responder
        return self

    def stop(self) -> None:
        """Stop serving (and leave the user realm server); safe to call twice."""
        self._server.stop()
        if self._user_realm is not None:
            self._user_realm.stop()
            self._user_realm = None

    def fail_next(
        self, count: int = 1, status: int = 500, *, retry_after: int | None = None
    ) -> None:
        """Answer the next ``count`` well-formed token requests with HTTP ``status``.

        MSAL caches a 5xx/429 answer per request for ``Retry-After`` seconds, or 5 s
        (confidential) / 60 s (public client) without one: a retry through the same
        application object in that window gets the cached error without a request.
        """
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    # -- addresses -----------------------------------------------------------------

    @property
    def authority_host(self) -> str:
        """``https://<host>:<port>`` (ENTRA_AUTHORITY_HOST); host is localhost by default."""
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """The MSAL authority: ``<authority_host>/<tenant>``."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        """Issuer of v2.0 tokens (and of the discovery document)."""
        return f"{self.authority}/v2.0"

    @property
    def issuer_v1(self) -> str:
        """Issuer of v1.0 access tokens: Entra's fixed STS name, not this server's."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def openid_configuration_url(self) -> str:
        """The discovery document MSAL fetches."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        """The signing keys."""
        return f"{self.authority}/discovery/v2.0/keys"

    @property
    def token_endpoint(self) -> str:
        """The v2.0 token endpoint."""
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def device_authorization_endpoint(self) -> str:
        """The v2.0 device authorization (``/devicecode``) endpoint."""
        return f"{self.authority}/oauth2/v2.0/devicecode"

    @property
    def user_realm(self) -> UserRealmResponder | None:
        """The port-443 responder this simulator holds, if any."""
        return self._user_realm

    @property
    def http_log(self) -> list[HttpExchange]:
        """Every HTTP request this simulator answered (the user realm has its own)."""
        return self._server.http_log

    # -- observability -------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        """Every token request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def token_count(self) -> int:
        """Access tokens issued so far."""
        return self._token_issuer.issued

    # -- the user at https://microsoft.com/devicelogin -------------------------------

    def approve_device_code(self, user_code: str, upn: str, *, mfa: bool = True) -> None:
        """Sign in with a pending user code as ``upn`` (with MFA unless ``mfa=False``): the
        client's next poll gets tokens whose v1 ``amr`` is ``["pwd", "mfa"]`` (``["pwd"]``
        without MFA). Raises ``ValueError`` for an unknown, expired or answered user code,
        an unknown or disabled user, or an MFA user signing in without MFA."""
        self._device_codes.approve(user_code, upn, mfa=mfa)

    def decline_device_code(self, user_code: str) -> None:
        """Decline a pending user code: the client's next poll gets ``authorization_declined``."""
        self._device_codes.decline(user_code)

    def pending_device_codes(self) -> list[PendingDeviceCode]:
        """Device codes nobody has signed in with yet and that have not expired, oldest first."""
        now = self.now()
        return [
            c for c in self._device_codes.codes() if c.state == "pending" and now < c.expires_at
        ]

    def device_codes(self) -> list[PendingDeviceCode]:
        """Every device code handed out, whatever became of it, oldest first."""
        return self._device_codes.codes()

    def wait_for_device_code(self, timeout: float = 10.0) -> PendingDeviceCode:
        """The newest pending device code, waiting up to ``timeout`` seconds for a client to
        ask for one (a test driving a CLI that prints the code). Raises ``TimeoutError``."""
        return self._device_codes.wait_for_pending(timeout)

    # -- keys and token validation -------------------------------------------------

    def rotate_signing_key(self) -> str:
        """Sign with a new key from now on; the old one stays published. Returns its kid."""
        return self._keys.rotate()

    def public_jwk(self) -> dict[str, Any]:
        """The JWK of the current signing key."""
        return metadata.jwk(self._keys.current(), self.issuer)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (every published key)."""
        return metadata.jwks(self._keys.published(), self.issuer)

    def verify(self, token: str, audience: str | Sequence[str]) -> dict[str, Any]:
        """Validate an access token as a resource server would; return its claims.

        Checks the signature (a published key, by ``kid``), ``aud`` against
        ``audience`` (exact, one value or several), ``iss`` against the issuer of the
        token's version (:attr:`issuer_v1` for ``ver`` 1.0, :attr:`issuer` for 2.0),
        ``exp``/``nbf`` with no leeway and ``tid``. Raises ``jwt.InvalidTokenError``.
        A v1 token's ``aud`` is whichever identifier the scope used: pass
        ``api_identifiers(api)`` to accept them all, as a resource server configured
        with its App ID URI and application ID does.
        A v1 token's user is in ``upn``, a v2 token's in ``preferred_username``.
        """
        header = jwt.get_unverified_header(token)
        key = self._keys.find(header.get("kid"))
        if key is None:
            raise jwt.InvalidTokenError(f"no published signing key has kid {header.get('kid')!r}")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=["RS256"],
            audience=audiences,
            issuer=[self.issuer, self.issuer_v1],
            leeway=0,
            options={"require": ["exp", "nbf", "iat", "iss", "aud", "tid", "ver"]},
        )
        expected_issuer = self.issuer_v1 if claims["ver"] == "1.0" else self.issuer
        if claims["iss"] != expected_issuer:
            raise jwt.InvalidIssuerError(f"a ver {claims['ver']} token has iss {claims['iss']}")
        if str(claims["tid"]).lower() != self.tenant_id:
            raise jwt.InvalidTokenError(f"token of tenant {claims['tid']}, not {self.tenant_id}")
        return claims

    # -- HTTP ----------------------------------------------------------------------

    def _handle(self, request: HttpRequest) -> HttpResponse:
        segments = [unquote(s) for s in request.path.split("/")[1:]]
        if len(segments) < 2:
            return HttpResponse.text(404, "Not Found")
        tenant, route = segments[0].lower(), [s.lower() for s in segments[1:]]
        if route == ["v2.0", ".well-known", "openid-configuration"]:
            if tenant != self.tenant_id:
                return self._refuse(request, unknown_tenant(tenant, "invalid_tenant"))
            return HttpResponse.json(
                200,
                metadata.openid_configuration(
                    authority=self.authority,
                    issuer=self.issuer,
                    token_endpoint=self.token_endpoint,
                    jwks_uri=self.jwks_uri,
                ),
            )
        if route in (["discovery", "v2.0", "keys"], ["discovery", "keys"]):
            if tenant not in (self.tenant_id, "common", "organizations"):
                return self._refuse(request, unknown_tenant(tenant, "invalid_tenant"))
            return HttpResponse.json(200, self.jwks())
        if route == ["oauth2", "v2.0", "token"]:
            return self._token(request, tenant)
        if route == ["oauth2", "v2.0", "devicecode"]:
            return self._devicecode(request, tenant)
        return HttpResponse.text(404, "Not Found")

    def _refuse(self, request: HttpRequest, refusal: Refusal) -> HttpResponse:
        return error_response(request, refusal, self.authority_host)

    # -- the device authorization endpoint -----------------------------------------

    def _devicecode(self, request: HttpRequest, tenant: str) -> HttpResponse:
        try:
            _post_only(request)
            form = read_form(request, "client_id")
            if tenant != self.tenant_id:
                raise unknown_tenant(tenant, "invalid_request")
            body = self._device_codes.authorize(form)
        except Refusal as refusal:
            return error_response(
                request, refusal, self.authority_host, status=DEVICECODE_ERROR_STATUS
            )
        return HttpResponse.json(200, body, NO_CACHE)

    # -- the token endpoint --------------------------------------------------------

    def _token(self, request: HttpRequest, tenant: str) -> HttpResponse:
        form: dict[str, str] = {}
        state: dict[str, str | None] = {"client_auth": None, "username": None}
        try:
            _post_only(request)
            form = read_form(request)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                status, retry_after = failure
                response = self._refuse(
                    request,
                    Refusal(
                        "temporarily_unavailable",
                        90033,
                        "A transient error has occurred. Please try again.",
                        status=status,
                    ),
                )
                if retry_after is not None:
                    response.headers["Retry-After"] = str(retry_after)
                self._record(form, state, "temporarily_unavailable", 90033, status)
                return response
            if tenant != self.tenant_id:
                raise unknown_tenant(tenant, "invalid_request")
            body = self._grants.answer(form, state)
        except Refusal as refusal:
            self._record(form, state, refusal.error, refusal.code, refusal.status)
            return self._refuse(request, refusal)
        self._record(form, state, "ok", None, 200)
        return HttpResponse.json(200, body, NO_CACHE)

    def _record(
        self,
        form: Mapping[str, str],
        state: Mapping[str, str | None],
        outcome: str,
        code: int | None,
        status: int,
    ) -> None:
        entry = TokenRequest(
            grant_type=form.get("grant_type"),
            client_id=form.get("client_id"),
            username=state.get("username") or form.get("username"),
            scope=form.get("scope"),
            outcome=outcome,
            error_code=code,
            status=status,
            client_auth=state.get("client_auth"),
            at=time.time(),
        )
        with self._lock:
            self._requests.append(entry)


def _post_only(request: HttpRequest) -> None:
    """Entra's token and device authorization endpoints answer POST only."""
    if request.method != "POST":
        raise Refusal(
            "invalid_request",
            900561,
            "The endpoint only accepts POST, OPTIONS requests. "
            f"Received a {request.method} request.",
        )
