"""The user realm endpoint MSAL's username/password flow asks first, on port 443.

MSAL asks ``https://<authority host>/common/userrealm/`` on port 443 whatever the
authority's port, so one responder per loopback address serves every simulator of the
process that uses that address.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from dataclasses import dataclass
from typing import Final, Self
from urllib.parse import unquote

from devstack.https import HttpExchange, HttpRequest, HttpResponse, LocalHttpsServer, PortInUse
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.tls import LocalCA

#: Header every devstack user realm responder sets, so another one can recognise it.
USER_REALM_MARKER: Final = "X-Devstack-Service"


def certificate_names(host: str) -> tuple[str, ...]:
    """Names a server certificate needs for a bind address (default: localhost too)."""
    return () if host == LOOPBACK else (host,)


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
                    self._ca.server_context(*certificate_names(self.host)),
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
