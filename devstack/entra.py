"""Entra ID's v2.0 token endpoint over HTTPS, faithful enough for MSAL to talk to.

Entra ID cannot run here, so this serves what MSAL 1.39 really asks of it, with the
shapes Entra answers with: the OpenID discovery document, the signing keys, the token
endpoint (``password``, ``client_credentials``, ``refresh_token``) and AADSTS errors.
Typical use::

    ca = LocalCA()
    with EntraSimulator(ca) as entra:
        entra.add_api()  # https://ConfigMgrService, scope user_impersonation
        entra.add_client(CLIENT_ID, public=True)
        entra.add_user("svc@contoso.example", "pw")
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify=
        session.verify = str(ca.bundle_path)
        app = msal.PublicClientApplication(
            CLIENT_ID, authority=entra.authority, instance_discovery=False,
            http_client=session)
        result = app.acquire_token_by_username_password(
            "svc@contoso.example", "pw", ["https://ConfigMgrService/user_impersonation"])
        claims = entra.verify(result["access_token"], "https://ConfigMgrService")

Where Entra's behaviour depends on tenant configuration, this picks the common one:

- Every client is consented to every delegated scope of every API (admin consent).
- Access tokens follow the API's ``accessTokenAcceptedVersion``. 1 (what a manifest
  that leaves it null gets; assumed for the ConfigMgr server app, unverified) gives
  ``iss=https://sts.windows.net/<tenant>/``, ``aud`` = the identifier named in the
  scope (``https://ConfigMgrService``), ``appid``, ``upn``, ``ver=1.0``. 2 gives
  ``iss`` = :attr:`EntraSimulator.issuer`, ``aud`` = the API's application ID, ``azp``,
  ``preferred_username``, ``ver=2.0``. ID tokens are always v2.0.
- An MFA user's password grant fails the way a conditional access policy makes it
  fail: ``invalid_grant`` with AADSTS50076 and ``suberror=basic_action`` (Entra does
  not say ``interaction_required`` for ROPC; the error code is what to look at).
- ``invalid_client`` answers are HTTP 401, the others 400, as Entra sends them.
- Client-credential answers carry no ``scope``, as Entra's do; MSAL then caches the
  token under the scope it asked for.

MSAL's username/password flow first asks ``https://<authority host>/common/userrealm/``
on port 443 whatever the authority's port: :class:`UserRealmResponder` answers there
(started by the simulator unless ``user_realm=False``). One process at a time can
hold 127.0.0.1:443; ``EntraSimulator(ca, host="127.x.y.z")`` gives a simulator (and
its port-443 responder) a loopback address of its own instead of ``localhost``.

The HTTPS server under every simulator lives in ``devstack.https``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qsl, unquote, unquote_plus

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.https import (
    HttpExchange,
    HttpRequest,
    HttpResponse,
    HttpsSimulator,
    LocalHttpsServer,
    PortInUse,
)
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.tls import LocalCA

log = logging.getLogger(__name__)

#: The simulated tenant, unless told otherwise (a made-up GUID, no real tenant's).
DEFAULT_TENANT_ID: Final = "7c6e2a4b-51f3-4d8e-9a2c-3b1d0f5e8a61"
#: The ConfigMgr server app's default Application ID URI and scope.
CONFIGMGR_APP_ID_URI: Final = "https://ConfigMgrService"
CONFIGMGR_SCOPE: Final = "user_impersonation"

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Scopes of OpenID Connect itself: they name no resource.
#: In the order Entra lists them (discovery document, a token answer's ``scope``).
_OIDC_SCOPE_ORDER: Final = ("openid", "profile", "email", "offline_access")
OIDC_SCOPES: Final = frozenset(_OIDC_SCOPE_ORDER)
#: Header every devstack user realm responder sets, so another one can recognise it.
USER_REALM_MARKER: Final = "X-Devstack-Service"

TokenVersion = Literal[1, 2]

#: Headers of every token endpoint answer.
_NO_CACHE: Final = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

# Entra's list, in Entra's order.
# fmt: off
_CLAIMS_SUPPORTED: Final = (
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
    "name", "tid", "ver", "at_hash", "c_hash", "email",
)
# fmt: on


# -- the user realm endpoint on port 443 -------------------------------------------------


def _certificate_names(host: str) -> tuple[str, ...]:
    """Names a server certificate needs for a bind address (default: localhost too)."""
    return () if host == LOOPBACK else (host,)


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


class UserRealmUnavailable(RuntimeError):
    """Port 443 cannot serve the user realm endpoint MSAL's ROPC flow asks first."""


@dataclass
class _SharedRealm:
    server: LocalHttpsServer
    ca_pem: bytes
    holders: int


_REALM_LOCK = threading.Lock()
_REALM_SERVERS: dict[tuple[str, int], _SharedRealm] = {}


def _user_realm_app(request: HttpRequest) -> HttpResponse:
    """Entra's ``/common/userrealm/<user>?api-version=1.0`` answer for a managed domain."""
    marker = {USER_REALM_MARKER: "user-realm"}
    segments = request.path.split("/")
    if (
        request.method == "GET"
        and len(segments) == 4
        and segments[1].lower() == "common"
        and segments[2].lower() == "userrealm"
    ):
        user = unquote(segments[3])
        domain = user.rpartition("@")[2] if "@" in user else ""
        # MSAL only branches on account_type == "Federated"; "Managed" (a cloud or
        # password-hash-synced domain) makes it go on with the plain password grant.
        # A 404 would work too, but MSAL then skips the host for the rest of the
        # process, which would hide a missing responder from every later test.
        payload: dict[str, str] = (
            {
                "ver": "1.0",
                "account_type": "Managed",
                "domain_name": domain,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_audience_urn": "urn:federation:MicrosoftOnline",
            }
            if domain
            else {
                "ver": "1.0",
                "account_type": "Unknown",
                "cloud_instance_name": "microsoftonline.com",
            }
        )
        return HttpResponse.json(200, payload, marker)
    response = HttpResponse.text(404, "Not Found")
    response.headers.update(marker)
    return response


class UserRealmResponder(Service):
    """HTTPS on 127.0.0.1:443 answering MSAL's user realm discovery.

    MSAL builds ``https://<authority host name>/common/userrealm/<user>?api-version=1.0``
    from the host name alone, so the request goes to port 443 whatever port the
    authority has. All responders of one process share one server per address and
    port, which must serve a certificate of the same :class:`LocalCA` (a client trusts
    only its CA). The port held by another process raises :class:`UserRealmUnavailable`,
    unless that server is a devstack responder this CA's clients already trust.
    ``host`` is the loopback address to serve on (an authority host 127.x.y.z makes
    MSAL ask 127.x.y.z:443).
    """

    def __init__(self, ca: LocalCA, *, host: str = LOOPBACK, port: int = 443) -> None:
        self._ca = ca
        self.host = host
        self.port = port
        self._ca_pem = ca.bundle_path.read_bytes()
        self._holding = False
        self._external = False

    @property
    def http_log(self) -> list[HttpExchange]:
        """Requests the shared server answered (empty when another process serves)."""
        with _REALM_LOCK:
            shared = _REALM_SERVERS.get((self.host, self.port))
        return shared.server.http_log if shared is not None else []

    def start(self) -> Self:
        """Serve the port, or join the server already serving it in this process."""
        with _REALM_LOCK:
            if self._holding:
                return self
            shared = _REALM_SERVERS.get((self.host, self.port))
            if shared is not None:
                if shared.ca_pem != self._ca_pem:
                    raise UserRealmUnavailable(
                        f"{self.host}:{self.port} already serves the user realm with a "
                        "certificate of another LocalCA in this process, which this CA's "
                        "clients would refuse: share one LocalCA between the simulators "
                        "that run at the same time, or pass user_realm=False"
                    )
                shared.holders += 1
            else:
                server = LocalHttpsServer(
                    self._ca.server_context(*_certificate_names(self.host)),
                    _user_realm_app,
                    port=self.port,
                    host=self.host,
                    name="user realm",
                )
                try:
                    server.start()
                except PortInUse:
                    self._join_external()
                    self._holding = True
                    return self
                except PermissionError as error:
                    raise UserRealmUnavailable(
                        f"binding {self.host}:{self.port} needs root or CAP_NET_BIND_SERVICE "
                        "(MSAL's username/password flow asks port 443 whatever the "
                        "authority's port); pass user_realm=False to do without it"
                    ) from error
                _REALM_SERVERS[self.host, self.port] = _SharedRealm(server, self._ca_pem, 1)
            self._holding = True
        return self

    def stop(self) -> None:
        """Leave the shared server; the last one out stops it."""
        with _REALM_LOCK:
            if not self._holding:
                return
            self._holding = False
            if self._external:
                self._external = False
                return
            shared = _REALM_SERVERS.get((self.host, self.port))
            if shared is None:
                return
            shared.holders -= 1
            if shared.holders > 0:
                return
            del _REALM_SERVERS[self.host, self.port]
        shared.server.stop()

    def _join_external(self) -> None:
        """Another process holds the port: usable only if it is a responder we trust."""
        trusted = _probe_user_realm(
            self.host, self.port, ssl.create_default_context(cafile=str(self._ca.bundle_path))
        )
        if trusted:
            self._external = True
            return
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE  # only to recognise the holder
        holder = (
            "a devstack user realm responder of another process, with another LocalCA"
            if _probe_user_realm(self.host, self.port, unverified)
            else "another program"
        )
        raise UserRealmUnavailable(
            f"{self.host}:{self.port} is held by {holder}; MSAL's username/password flow "
            "would fail against it. Stop it, give each process its own loopback address "
            "(EntraSimulator(host='127.x.y.z')), or pass user_realm=False"
        )


def _probe_user_realm(host: str, port: int, context: ssl.SSLContext) -> bool:
    """Whether a devstack user realm responder answers there through ``context``."""
    name = "localhost" if host == LOOPBACK else host
    connection = http.client.HTTPSConnection(name, port, context=context, timeout=3)
    try:
        connection.request("GET", "/common/userrealm/probe@devstack.invalid?api-version=1.0")
        response = connection.getresponse()
        response.read()
        return response.getheader(USER_REALM_MARKER) == "user-realm"
    except OSError:
        return False
    finally:
        connection.close()


# -- directory objects --------------------------------------------------------------------


@dataclass(slots=True)
class EntraUser:
    """A user; ``tokens_valid_from`` moves on a password change (refresh tokens die)."""

    upn: str
    password: str = field(repr=False)
    object_id: str
    display_name: str
    mfa_required: bool = False
    tokens_valid_from: float = 0.0


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
class _SigningKey:
    private_key: rsa.RSAPrivateKey = field(repr=False)
    kid: str
    certificate_der: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _RefreshGrant:
    client_id: str
    upn: str
    scope: str
    issued_at: float


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What a ``scope`` parameter asks for."""

    api: EntraApi
    identifier: str
    scopes: tuple[str, ...]
    oidc: frozenset[str]


class _Refusal(Exception):
    """An Entra error answer: ``error``, AADSTS code and message."""

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        *,
        status: int = 400,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{code}")
        self.error, self.code, self.message, self.status = error, code, message, status
        self.extra = dict(extra or {})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _random_id(length: int = 22) -> str:
    return secrets.token_urlsafe(length)[:length]


def _pairwise_subject(object_id: str, app_id: str) -> str:
    """A ``sub`` claim: Entra's is pairwise, the same user differs per application."""
    return _b64url(hashlib.sha256(f"{object_id}:{app_id}".encode()).digest())[:43]


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()  # x5t is SHA-1 by definition


def _self_signed(common_name: str, days: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and a self-signed certificate for it, valid from yesterday."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _new_signing_key() -> _SigningKey:
    """An RSA key with a self-signed certificate, like Entra's published signing keys."""
    key, certificate = _self_signed("accounts.accesscontrol.windows.net", 5 * 365)
    der = certificate.public_bytes(serialization.Encoding.DER)
    # Entra's kid is the certificate's x5t (base64url SHA-1 thumbprint).
    return _SigningKey(key, _b64url(_sha1(der)), der)


def generate_client_certificate(common_name: str = "cm-remediate") -> tuple[bytes, bytes]:
    """A self-signed client certificate: (private key PEM, certificate PEM).

    Register the certificate with ``add_client(..., certificate_pem=...)``; give MSAL
    the private key and the certificate's thumbprint or the certificate itself.
    """
    key, certificate = _self_signed(common_name, 365)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


# -- the simulator ------------------------------------------------------------------------


class EntraSimulator(HttpsSimulator):
    """Entra ID for one tenant: discovery, keys and the v2.0 token endpoint over HTTPS.

    It listens on 127.0.0.1 as ``localhost``; ``host="127.x.y.z"`` (any IPv4 loopback
    address) gives it an address of its own, with its own port-443 user realm, so that
    several processes can each run one.

    ``token_lifetime_seconds`` may be changed at any time (expiry tests; note that
    MSAL treats a cached token with less than 5 minutes left as expired).
    ``latency_seconds`` delays every answer. :meth:`set_down` closes the port for real;
    :meth:`fail_next` makes the next token requests fail with an HTTP error.
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
    ) -> None:
        self._ca = ca
        self.host = host
        self._bind = _loopback_host(host)
        self.tenant_id = tenant_id.lower()
        self.tenant_name = tenant_name
        self.token_lifetime_seconds = token_lifetime_seconds
        self._lock = threading.RLock()
        self._keys = [_new_signing_key()]
        self._users: dict[str, EntraUser] = {}
        self._clients: dict[str, EntraClient] = {}
        self._apis: list[EntraApi] = []
        self._refresh_grants: dict[str, _RefreshGrant] = {}
        self._requests: list[TokenRequest] = []
        self._token_count = 0
        self._failures: list[tuple[int, int | None]] = []
        self._server = LocalHttpsServer(
            ca.server_context(*_certificate_names(self._bind)),
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
        with self._lock:
            return self._token_count

    # -- the directory -------------------------------------------------------------

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
            user.tokens_valid_from = time.time()

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
        certificates: list[ClientCertificate] = []
        if certificate_pem is not None:
            for certificate in x509.load_pem_x509_certificates(certificate_pem):
                der = certificate.public_bytes(serialization.Encoding.DER)
                certificates.append(
                    ClientCertificate(
                        sha1_thumbprint=_sha1(der).hex().upper(),
                        sha256_thumbprint=hashlib.sha256(der).hexdigest().upper(),
                        public_key=certificate.public_key(),
                    )
                )
        client = EntraClient(
            client_id=client_id.lower(),
            secret=secret,
            certificates=tuple(certificates),
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

    # -- keys and token validation -------------------------------------------------

    def rotate_signing_key(self) -> str:
        """Sign with a new key from now on; the old one stays published. Returns its kid."""
        key = _new_signing_key()
        with self._lock:
            self._keys.insert(0, key)
        return key.kid

    def _jwk(self, key: _SigningKey) -> dict[str, Any]:
        numbers = key.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": key.kid,
            "x5t": key.kid,
            "n": _int_b64url(numbers.n),
            "e": _int_b64url(numbers.e),
            "x5c": [base64.b64encode(key.certificate_der).decode("ascii")],
            "issuer": self.issuer,
        }

    def public_jwk(self) -> dict[str, Any]:
        """The JWK of the current signing key."""
        with self._lock:
            return self._jwk(self._keys[0])

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (every published key)."""
        with self._lock:
            return {"keys": [self._jwk(key) for key in self._keys]}

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
        with self._lock:
            key = next((k for k in self._keys if k.kid == header.get("kid")), None)
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
                return self._error_response(request, self._unknown_tenant(tenant, "invalid_tenant"))
            return HttpResponse.json(200, self._openid_configuration())
        if route in (["discovery", "v2.0", "keys"], ["discovery", "keys"]):
            if tenant not in (self.tenant_id, "common", "organizations"):
                return self._error_response(request, self._unknown_tenant(tenant, "invalid_tenant"))
            return HttpResponse.json(200, self.jwks())
        if route == ["oauth2", "v2.0", "token"]:
            return self._token(request, tenant)
        return HttpResponse.text(404, "Not Found")

    def _openid_configuration(self) -> dict[str, Any]:
        base = self.authority
        return {
            "token_endpoint": self.token_endpoint,
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": self.jwks_uri,
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": list(_OIDC_SCOPE_ORDER),
            "issuer": self.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": list(_CLAIMS_SUPPORTED),
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _unknown_tenant(self, tenant: str, error: str) -> _Refusal:
        return _Refusal(
            error,
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the "
            "tenant.",
        )

    def _error_response(self, request: HttpRequest, refusal: _Refusal) -> HttpResponse:
        trace_id = str(uuid.uuid4())
        correlation_id = request.header("client-request-id") or str(uuid.uuid4())
        timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        payload: dict[str, object] = {
            "error": refusal.error,
            "error_description": f"AADSTS{refusal.code}: {refusal.message}\r\n"
            f"Trace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
            f"Timestamp: {timestamp}",
            "error_codes": [refusal.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.authority_host}/error?code={refusal.code}",
            **refusal.extra,
        }
        headers = {**_NO_CACHE, "x-ms-request-id": trace_id, "client-request-id": correlation_id}
        return HttpResponse.json(refusal.status, payload, headers)

    # -- the token endpoint --------------------------------------------------------

    def _token(self, request: HttpRequest, tenant: str) -> HttpResponse:
        form: dict[str, str] = {}
        state: dict[str, str | None] = {"client_auth": None, "username": None}
        try:
            if request.method != "POST":
                raise _Refusal(
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST, OPTIONS requests. "
                    f"Received a {request.method} request.",
                )
            form = self._form(request)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                status, retry_after = failure
                response = self._error_response(
                    request,
                    _Refusal(
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
                raise self._unknown_tenant(tenant, "invalid_request")
            body = self._grant(request, form, state)
        except _Refusal as refusal:
            self._record(form, state, refusal.error, refusal.code, refusal.status)
            return self._error_response(request, refusal)
        self._record(form, state, "ok", None, 200)
        return HttpResponse.json(200, body, _NO_CACHE)

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

    @staticmethod
    def _missing(name: str) -> _Refusal:
        return _Refusal(
            "invalid_request",
            900144,
            f"The request body must contain the following parameter: '{name}'.",
        )

    def _form(self, request: HttpRequest) -> dict[str, str]:
        """The form body; a body Entra cannot read reads as one without grant_type."""
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise self._missing("grant_type")
        try:
            pairs = parse_qsl(
                request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=100
            )
        except (UnicodeDecodeError, ValueError):
            raise self._missing("grant_type") from None
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                raise _Refusal(
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
                raise _Refusal(
                    "invalid_client", 7000215, "Invalid client secret provided.", status=401
                ) from None
            basic_id, _, basic_secret = decoded.partition(":")
            form.setdefault("client_id", unquote_plus(basic_id))
            form.setdefault("client_secret", unquote_plus(basic_secret))
        return form

    def _grant(
        self, request: HttpRequest, form: Mapping[str, str], state: dict[str, str | None]
    ) -> dict[str, object]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise self._missing("grant_type")
        if grant_type not in ("password", "client_credentials", "refresh_token"):
            raise _Refusal(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client_id = form.get("client_id")
        if not client_id:
            raise self._missing("client_id")
        with self._lock:
            client = self._clients.get(client_id.lower())
        if client is None:
            raise _Refusal(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_name}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in "
                "the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        auth = self._authenticate_client(client, form)
        state["client_auth"] = auth
        if auth == "none" and (grant_type == "client_credentials" or not client.public):
            raise _Refusal(
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

    def _authenticate_client(self, client: EntraClient, form: Mapping[str, str]) -> str:
        """``none``, ``secret`` or ``certificate``; a wrong credential is a refusal."""
        assertion_type = form.get("client_assertion_type")
        if assertion_type is not None or "client_assertion" in form:
            if assertion_type != CLIENT_ASSERTION_TYPE:
                raise _Refusal(
                    "invalid_request",
                    50027,
                    "JWT token is invalid or malformed: client_assertion_type must be "
                    f"{CLIENT_ASSERTION_TYPE}.",
                )
            assertion = form.get("client_assertion")
            if not assertion:
                raise self._missing("client_assertion")
            self._check_assertion(client, assertion)
            return "certificate"
        secret = form.get("client_secret")
        if secret is None:
            return "none"
        if client.secret is None or not hmac.compare_digest(
            secret.encode("utf-8"), client.secret.encode("utf-8")
        ):
            raise _Refusal(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client.client_id}'.",
                status=401,
            )
        return "secret"

    def _check_assertion(self, client: EntraClient, assertion: str) -> None:
        malformed = _Refusal(
            "invalid_client", 50027, "JWT token is invalid or malformed.", status=401
        )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise malformed from None
        algorithm = header.get("alg")
        if algorithm not in ("RS256", "PS256"):
            raise malformed
        # Entra finds the key by thumbprint: x5t#S256 (MSAL with public_certificate)
        # or x5t (MSAL with a SHA-1 thumbprint), both base64url.
        wanted: list[tuple[str, str]] = []
        for name, attribute in (("x5t#S256", "sha256_thumbprint"), ("x5t", "sha1_thumbprint")):
            value = header.get(name)
            if isinstance(value, str):
                try:
                    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
                except ValueError:
                    raise malformed from None
                wanted.append((attribute, raw.hex().upper()))
        certificate = next(
            (c for c in client.certificates for a, t in wanted if getattr(c, a) == t), None
        )
        if certificate is None:
            shown = wanted[0][1] if wanted else "none"
            raise _Refusal(
                "invalid_client",
                700027,
                "Client assertion failed signature validation. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{shown}', Please visit the Azure "
                "Portal, Graph Explorer or directly use MS Graph to see configured keys for "
                f"app Id '{client.client_id}'.]",
                status=401,
            )
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key,
                algorithms=[algorithm],
                audience=[self.token_endpoint, self.issuer],
                leeway=300,  # Entra tolerates clock skew on assertions
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            raise _Refusal(
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
                status=401,
            ) from None
        except jwt.InvalidSignatureError:
            raise _Refusal(
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
                status=401,
            ) from None
        except jwt.InvalidAudienceError:
            raise _Refusal(
                "invalid_client",
                50027,
                f"JWT token is invalid or malformed. The audience must be {self.token_endpoint}.",
                status=401,
            ) from None
        except jwt.PyJWTError:
            raise malformed from None
        if (
            str(claims.get("iss")).lower() != client.client_id
            or str(claims.get("sub")).lower() != client.client_id
        ):
            raise _Refusal(
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
                status=401,
            )

    def _resolve(self, raw: str, *, app_only: bool) -> _Resolved:
        items = raw.split()
        if not items:
            raise self._missing("scope")
        oidc = frozenset(i.lower() for i in items if i.lower() in OIDC_SCOPES)
        resource_items = [i for i in items if i.lower() not in OIDC_SCOPES]
        if app_only and (oidc or len(resource_items) != 1 or not raw.endswith("/.default")):
            raise _Refusal(
                "invalid_scope",
                1002012,
                f"The provided value for scope {raw} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        if not resource_items:
            # Entra would answer with a Microsoft Graph token; there is no Graph here.
            raise _Refusal(
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope "
                f"'{raw}' names no resource (Microsoft Graph is not simulated).",
            )
        resources: dict[str, str] = {}
        names: list[str] = []
        for item in resource_items:
            resource, slash, name = item.rpartition("/")
            if not slash or not resource or not name:
                raise _Refusal(
                    "invalid_scope",
                    70011,
                    "The provided value for the input parameter 'scope' is not valid. "
                    f"The scope {item} is not valid.",
                )
            resources.setdefault(resource.lower(), resource)
            names.append(name)
        if len(resources) > 1:
            raise _Refusal(
                "invalid_scope",
                28000,
                "Provided value for the input parameter scope is not valid because it "
                f"contains more than one resource. Scope {raw} is not valid.",
            )
        resource = next(iter(resources.values()))
        try:
            api = self.api(resource)
        except KeyError:
            raise _Refusal(
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.tenant_name}. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in "
                "the tenant. You might have sent your authentication request to the wrong "
                "tenant.",
            ) from None
        identifier = next(i for i in self.api_identifiers(api) if i.lower() == resource.lower())
        if ".default" in names:
            if len(names) > 1:
                raise _Refusal(
                    "invalid_scope",
                    70011,
                    "The provided value for the input parameter 'scope' is not valid. "
                    f"The scope {raw} is not valid: .default cannot be combined with "
                    "other scopes of the resource.",
                )
            granted = () if app_only else api.scopes
        else:
            known = {s.lower(): s for s in api.scopes}
            unknown = [n for n in names if n.lower() not in known]
            if unknown:
                raise _Refusal(
                    "invalid_scope",
                    70011,
                    "The provided value for the input parameter 'scope' is not valid. "
                    f"The scope {identifier}/{unknown[0]} is not valid.",
                )
            granted = tuple(dict.fromkeys(known[n.lower()] for n in names))
        return _Resolved(api, identifier, granted, oidc)

    def _client_credentials(
        self, client: EntraClient, form: Mapping[str, str], auth: str
    ) -> dict[str, object]:
        scope = form.get("scope")
        if not scope:
            raise self._missing("scope")
        resolved = self._resolve(scope, app_only=True)
        roles = sorted(client.app_roles & set(resolved.api.app_roles))
        return self._issue(client, resolved, None, roles, auth, want_client_info=False)

    def _password(
        self, client: EntraClient, form: Mapping[str, str], auth: str, want_client_info: bool
    ) -> dict[str, object]:
        for name in ("username", "password", "scope"):
            if not form.get(name):
                raise self._missing(name)
        resolved = self._resolve(form["scope"], app_only=False)
        with self._lock:
            user = self._users.get(form["username"].lower())
        if user is None:
            raise _Refusal(
                "invalid_grant",
                50034,
                f"The user account {{EmailHidden}} does not exist in the {self.tenant_id} "
                "directory. To sign into this application, the account must be added to the "
                "directory.",
            )
        if not hmac.compare_digest(form["password"].encode("utf-8"), user.password.encode("utf-8")):
            raise _Refusal(
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password.",
            )
        if user.mfa_required:
            # What a conditional access policy requiring MFA gives the password grant.
            raise _Refusal(
                "invalid_grant",
                50076,
                "Due to a configuration change made by your administrator, or because you "
                "moved to a new location, you must use multi-factor authentication to access "
                f"'{resolved.api.app_id}'.",
                extra={"suberror": "basic_action"},
            )
        self._check_consent(client, resolved)
        return self._issue(client, resolved, user, [], auth, want_client_info=want_client_info)

    def _check_consent(self, client: EntraClient, resolved: _Resolved) -> None:
        if not resolved.scopes:  # .default on an API without delegated scopes
            raise _Refusal(
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
            raise self._missing("refresh_token")
        with self._lock:
            grant = self._refresh_grants.get(token)
            user = self._users.get(grant.upn.lower()) if grant is not None else None
        if grant is None or user is None:
            raise _Refusal(
                "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        state["username"] = user.upn
        if grant.client_id != client.client_id:
            raise _Refusal("invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if grant.issued_at < user.tokens_valid_from:
            issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%m/%d/%Y %H:%M:%S")
            valid = datetime.fromtimestamp(user.tokens_valid_from, UTC).strftime(
                "%m/%d/%Y %H:%M:%S"
            )
            raise _Refusal(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password. The grant was "
                f"issued on '{issued}' and the TokensValidFrom date (before which tokens are "
                f"not valid) for this user is '{valid}'.",
            )
        resolved = self._resolve(form.get("scope") or grant.scope, app_only=False)
        self._check_consent(client, resolved)
        return self._issue(client, resolved, user, [], auth, want_client_info=want_client_info)

    # -- issuing -------------------------------------------------------------------

    def _sign(self, claims: Mapping[str, object], *, x5t: bool) -> str:
        with self._lock:
            key = self._keys[0]
        headers: dict[str, str] = {"kid": key.kid}
        if x5t:  # v1 tokens carry x5t beside kid
            headers["x5t"] = key.kid
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=headers)

    def _issue(
        self,
        client: EntraClient,
        resolved: _Resolved,
        user: EntraUser | None,
        roles: Sequence[str],
        auth: str,
        *,
        want_client_info: bool,
    ) -> dict[str, object]:
        now = int(time.time())
        lifetime = int(self.token_lifetime_seconds)
        api = resolved.api
        acr = {"none": "0", "secret": "1", "certificate": "2"}[auth]
        common: dict[str, object] = {
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _random_id(40),
            "rh": f"0.{_random_id(40)}.",
            "tid": self.tenant_id,
            "uti": _random_id(22),
        }
        if user is not None:
            identity: dict[str, object] = {
                "oid": user.object_id,
                "sub": _pairwise_subject(user.object_id, api.app_id),
                "name": user.display_name,
                "scp": " ".join(resolved.scopes),
            }
        else:
            identity = {"oid": client.service_principal_id, "sub": client.service_principal_id}
            if roles:
                identity["roles"] = list(roles)
        if api.access_token_version == 1:
            claims: dict[str, object] = {
                "aud": resolved.identifier,
                "iss": self.issuer_v1,
                **common,
                **identity,
                "appid": client.client_id,
                "appidacr": acr,
                "ver": "1.0",
            }
            if user is not None:
                claims.update(
                    acr="1", amr=["pwd"], ipaddr="127.0.0.1", unique_name=user.upn, upn=user.upn
                )
            else:
                claims["idp"] = self.issuer_v1
        else:
            claims = {
                "aud": api.app_id,
                "iss": self.issuer,
                **common,
                **identity,
                "azp": client.client_id,
                "azpacr": acr,
                "ver": "2.0",
            }
            if user is not None:
                claims["preferred_username"] = user.upn
        access_token = self._sign(claims, x5t=api.access_token_version == 1)
        body: dict[str, object] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
        }
        if lifetime >= 7200:  # Entra tells clients to renew long-lived tokens early
            body["refresh_in"] = lifetime // 2
        body["access_token"] = access_token
        if user is not None:
            scope_names = [f"{resolved.identifier}/{s}" for s in resolved.scopes]
            scope_names += [s for s in _OIDC_SCOPE_ORDER if s in resolved.oidc]
            body["scope"] = " ".join(scope_names)
            if "offline_access" in resolved.oidc:
                body["refresh_token"] = self._new_refresh_token(client, user, resolved)
            if "openid" in resolved.oidc:
                body["id_token"] = self._id_token(client, user, resolved.oidc, now, lifetime)
            if want_client_info:
                info = json.dumps(
                    {"uid": user.object_id, "utid": self.tenant_id}, separators=(",", ":")
                )
                body["client_info"] = _b64url(info.encode("utf-8"))
        with self._lock:
            self._token_count += 1
        return body

    def _new_refresh_token(self, client: EntraClient, user: EntraUser, resolved: _Resolved) -> str:
        token = f"1.devstack.{secrets.token_urlsafe(48)}"
        scope = " ".join(
            [f"{resolved.identifier}/{s}" for s in resolved.scopes] + sorted(resolved.oidc)
        )
        with self._lock:
            self._refresh_grants[token] = _RefreshGrant(
                client.client_id, user.upn, scope, time.time()
            )
        return token

    def _id_token(
        self, client: EntraClient, user: EntraUser, oidc: frozenset[str], now: int, lifetime: int
    ) -> str:
        claims: dict[str, object] = {
            "aud": client.client_id,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "oid": user.object_id,
            "rh": f"0.{_random_id(40)}.",
            "sub": _pairwise_subject(user.object_id, client.client_id),
            "tid": self.tenant_id,
            "uti": _random_id(22),
            "ver": "2.0",
        }
        if "profile" in oidc:
            claims.update(name=user.display_name, preferred_username=user.upn)
        if "email" in oidc:
            claims["email"] = user.upn
        return self._sign(claims, x5t=False)


# -- running it on its own ----------------------------------------------------------------

SAMPLE_CLIENT_ID: Final = "5d1a9c3e-7b2f-4e60-8a14-2c9f6b3d7e05"
SAMPLE_USER: Final = "svc-cmremediate@contoso.example"
SAMPLE_PASSWORD: Final = "devstack-Passw0rd!"
SAMPLE_CLIENT_SECRET: Final = "devstack-client-secret"


def main() -> None:
    """Serve a sample tenant until Ctrl-C: ``python -m devstack.entra``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ca = LocalCA()
    simulator = EntraSimulator(ca)
    try:
        simulator.start()
    except UserRealmUnavailable as error:
        print(f"note: {error}\n      running without the user realm responder")
        simulator = EntraSimulator(ca, user_realm=False)
        simulator.start()
    with simulator:
        simulator.add_api()
        simulator.add_client(SAMPLE_CLIENT_ID, public=True, secret=SAMPLE_CLIENT_SECRET)
        simulator.add_user(SAMPLE_USER, SAMPLE_PASSWORD)
        print(f"authority       {simulator.authority}")
        print(f"token endpoint  {simulator.token_endpoint}")
        print(f"CA bundle       {ca.bundle_path}  (clients: verify=<this>, trust_env=False)")
        print(f"client          {SAMPLE_CLIENT_ID} (public; secret {SAMPLE_CLIENT_SECRET})")
        print(f"sample user     {SAMPLE_USER} / {SAMPLE_PASSWORD}")
        print(f"scope           {CONFIGMGR_APP_ID_URI}/{CONFIGMGR_SCOPE}")
        print(
            f"settings        ENTRA_AUTHORITY_HOST={simulator.authority_host} "
            f"ENTRA_TENANT_ID={simulator.tenant_id} ENTRA_CLIENT_ID={SAMPLE_CLIENT_ID}"
        )
        print("serving until Ctrl-C")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
