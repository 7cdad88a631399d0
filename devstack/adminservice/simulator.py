"""The AdminService simulator as a service: its options, the scenario and fault controls
tests drive, the call log they assert on, and starting and stopping the HTTPS server."""

from __future__ import annotations

import logging
import ssl
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, Self

from devstack.adminservice.actions import Actions
from devstack.adminservice.auth import DEFAULT_AUDIENCE, BearerAuth
from devstack.adminservice.calls import Call, CallLog, StatusQuery
from devstack.adminservice.dispatch import Dispatcher
from devstack.adminservice.faults import FaultPlan, FaultStatus
from devstack.adminservice.queries import Queries
from devstack.adminservice.routes import _prefixes
from devstack.adminservice.server import _AdminServer
from devstack.adminservice.site import Site
from devstack.adminservice.status_messages import StatusMessageReader
from devstack.adminservice.targeting import APPLICATION, GENERAL, REQUIRED
from devstack.datagen import GeneratedDevice
from devstack.lifecycle import Service
from devstack.ports import LOOPBACK
from devstack.tls import LocalCA

if TYPE_CHECKING:
    from devstack.sitedb import SiteDatabase

log = logging.getLogger(__name__)

#: The numeric id in the CMG path; any 64-bit number, this one is a typical value.
DEFAULT_CMG_ID: Final = 72057594037927939


class AdminServiceSimulator(Service):
    """The AdminService on ``https://localhost:<port>`` under its three base URLs.

    State (devices, collections, rules) and fault settings are thread-safe and may be
    changed while it serves. ``calls`` logs every request for assertions.
    ``status_messages`` serves the status message classes and SMS_Site from the site
    database (committed rows only); without it they answer an empty ``value``.
    ``site_database`` receives every change of evaluated membership in its
    ``v_FullCollectionMembership`` before the answer goes out (a whole collection on
    ``set_direct_members`` and RequestRefresh, one row on an add or delete that
    evaluates at once); its rows of the initial collections are emptied at construction.
    ``max_filter_nodes`` refuses a ``$filter`` of more nodes with a 400 (None: no limit).
    """

    def __init__(
        self,
        ca: LocalCA,
        *,
        jwks_uri: str,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        extra_audiences: Iterable[str] = (),
        admins: Iterable[str] = (),
        devices: Iterable[GeneratedDevice] = (),
        collections: Mapping[str, str] | None = None,
        port: int | None = None,
        duplicate_add: Literal["error", "ok", "keep"] = "error",
        delete_missing: Literal["error", "ok"] = "error",
        membership_needs_refresh: bool = False,
        mfa_required: bool = False,
        app_only_status: Literal[401, 403] = 403,
        key_get_shape: Literal["value", "entity"] = "value",
        missing_key: Literal["404", "empty"] = "404",
        cmg_id: int = DEFAULT_CMG_ID,
        jwks_refresh_cooldown: float = 0.0,
        status_messages: StatusMessageReader | None = None,
        site_database: SiteDatabase | None = None,
        max_filter_nodes: int | None = None,
    ) -> None:
        self._auth = BearerAuth(
            ca,
            jwks_uri=jwks_uri,
            issuer=issuer,
            audiences=(audience, *extra_audiences),
            admins=admins,
            app_only_status=app_only_status,
            mfa_required=mfa_required,
            jwks_refresh_cooldown=jwks_refresh_cooldown,
        )
        self.ca = ca
        self.cmg_id = cmg_id
        self._site = Site(devices, collections or {}, mirror=site_database)
        self._status_messages = status_messages
        self._calls = CallLog()
        self._wake = threading.Event()  # set on stop: cuts injected latency short
        self._faults = FaultPlan(self._wake)
        self._dispatcher = Dispatcher(
            origin=lambda: f"https://{self.host}:{self.port}",
            prefixes=_prefixes(cmg_id),
            faults=self._faults,
            auth=self._auth,
            queries=Queries(
                self._site,
                status_messages,
                key_get_shape=key_get_shape,
                missing_key=missing_key,
                max_filter_nodes=max_filter_nodes,
            ),
            actions=Actions(
                self._site,
                duplicate_add=duplicate_add,
                delete_missing=delete_missing,
                membership_needs_refresh=membership_needs_refresh,
            ),
            calls=self._calls,
        )

        self._port = port
        self._context = ca.server_context()
        self._untrusted_context: ssl.SSLContext | None = None
        self._untrusted = False
        self._down = False
        self._running = False
        self._server: _AdminServer | None = None
        self._thread: threading.Thread | None = None
        self._service_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 (a free port unless one was given; kept across restarts)."""
        with self._service_lock:
            self._running = True
            self._wake.clear()
            if not self._down:
                self._listen()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections; state is kept. Safe to call twice."""
        with self._service_lock:
            self._running = False
            self._wake.set()
            self._close()
            if self._status_messages is not None:
                self._status_messages.close()

    def _listen(self) -> None:
        if self._server is not None:
            return
        context = self._context
        if self._untrusted:
            if self._untrusted_context is None:
                self._untrusted_context = self.ca.untrusted_server_context()
            context = self._untrusted_context
        server = _AdminServer((LOOPBACK, self._port or 0), self._dispatcher, context)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"adminservice-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.debug("AdminService simulator listening on %s", self.base_url)

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()  # a restart also ends kept-alive connections
        if thread is not None:
            thread.join(timeout=5.0)

    def set_untrusted_certificate(self, untrusted: bool = True) -> None:
        """Serve a certificate from another CA (restarts on the same port)."""
        with self._service_lock:
            if untrusted == self._untrusted:
                return
            self._untrusted = untrusted
            if self._server is not None:
                self._close()
                self._listen()

    def set_down(self, down: bool = True) -> None:
        """Stop listening (connections are refused) or listen again on the same port."""
        with self._service_lock:
            self._down = down
            if down:
                self._close()
            elif self._running:
                self._listen()

    # -- addresses ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host name the certificate is valid for."""
        return "localhost"

    @property
    def port(self) -> int:
        """The TCP port (known once started, or when given)."""
        if self._port is None:
            raise RuntimeError("the AdminService simulator has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``https://localhost:<port>/AdminService/`` (on premises)."""
        return f"https://{self.host}:{self.port}/AdminService/"

    @property
    def token_auth_url(self) -> str:
        """``https://localhost:<port>/AdminService_TokenAuth/`` (on premises, Entra token)."""
        return f"https://{self.host}:{self.port}/AdminService_TokenAuth/"

    @property
    def cmg_url(self) -> str:
        """The AdminService through the cloud management gateway."""
        return f"https://{self.host}:{self.port}/CCM_Proxy_ServerAuth/{self.cmg_id}/AdminService/"

    @property
    def base_urls(self) -> tuple[str, str, str]:
        """All three base URLs; each serves the same routes."""
        return (self.base_url, self.token_auth_url, self.cmg_url)

    # -- scenario ----------------------------------------------------------------------

    def add_device(self, device: GeneratedDevice) -> None:
        """Add (or replace) an SMS_R_System record."""
        self._site.add_device(device)

    def clear_devices(self) -> None:
        """Remove every SMS_R_System record (a scenario of other devices follows)."""
        self._site.clear_devices()

    def add_collection(self, collection_id: str, name: str) -> None:
        """Add an empty device collection (IDs are case-insensitive, like WMI keys)."""
        self._site.add_collection(collection_id, name)

    def set_direct_members(self, collection_id: str, resource_ids: Iterable[int]) -> None:
        """Replace the collection's direct rules; membership follows at once."""
        self._site.set_direct_members(collection_id, resource_ids)

    def direct_members(self, collection_id: str) -> set[int]:
        """ResourceIDs with a direct rule in the collection."""
        return self._site.direct_members(collection_id)

    def set_limiting_collection(self, collection_id: str, limit_to: str) -> None:
        """Limit the collection to ``limit_to`` (a simulated collection, or ``SMS00001``):
        from then on a resource whose rule is added becomes a member only if it is a
        member of ``limit_to``. Evaluates the membership again at once."""
        self._site.set_limiting_collection(collection_id, limit_to)

    def add_deployment(
        self,
        collection_id: str,
        name: str,
        *,
        feature_type: int = APPLICATION,
        intent: int = REQUIRED,
        program: str = "",
    ) -> str:
        """Deploy software named ``name`` to the collection (an ``SMS_DeploymentSummary``
        row; codes in ``devstack.adminservice.targeting``); returns its DeploymentID."""
        return self._site.add_deployment(
            collection_id, name, feature_type=feature_type, intent=intent, program=program
        )

    def add_collection_settings(self, collection_id: str) -> None:
        """Give the collection an ``SMS_CollectionSettings`` instance without windows
        (a collection has none until then: its key GET is a 404)."""
        self._site.add_collection_settings(collection_id)

    def add_service_window(
        self,
        collection_id: str,
        name: str,
        *,
        description: str = "",
        enabled: bool = True,
        window_type: int = GENERAL,
        duration_minutes: int = 120,
    ) -> str:
        """Add a maintenance window (``SMS_ServiceWindow`` in the collection settings'
        ``ServiceWindows``, the settings made if missing); returns its ServiceWindowID."""
        return self._site.add_service_window(
            collection_id,
            name,
            description=description,
            enabled=enabled,
            window_type=window_type,
            duration_minutes=duration_minutes,
        )

    def direct_rule_counts(self, collection_id: str) -> Counter[int]:
        """How many direct rules each ResourceID has in the collection (more than one
        only where ``duplicate_add="keep"`` kept a duplicate)."""
        return self._site.direct_rule_counts(collection_id)

    def members(self, collection_id: str) -> set[int]:
        """The evaluated membership (what SMS_FullCollectionMembership shows)."""
        return self._site.members(collection_id)

    def set_status_message_resource_id(self, record_id: int, resource_id: int | None) -> None:
        """The ResourceID the message ``record_id`` shows in SMS_StatMsgWithInsStrings
        (always null otherwise: the site database stand-in has no such column)."""
        if self._status_messages is None:
            raise RuntimeError("the simulator has no status message source")
        self._status_messages.set_resource_id(record_id, resource_id)

    def expire_tokens_issued_before(self, when: datetime | None) -> None:
        """Treat tokens issued (``iat``) before ``when`` as expired; None undoes it.

        Compared in whole seconds, as ``iat`` is; a naive ``when`` is UTC.
        """
        self._auth.expire_tokens_issued_before(when)

    # -- the call log ------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request so far, oldest first (a copy)."""
        return self._calls.calls

    def reset_calls(self) -> None:
        """Forget the logged calls."""
        self._calls.clear()

    def count_calls(
        self,
        route: str | None = None,
        *,
        collection_id: str | None = None,
        resource_id: int | None = None,
        status: int | None = None,
    ) -> int:
        """How many logged calls match every given criterion."""
        wanted = collection_id.upper() if collection_id else None
        return sum(
            1
            for call in self.calls
            if (route is None or call.route == route)
            and (wanted is None or call.collection_id == wanted)
            and (resource_id is None or call.resource_id == resource_id)
            and (status is None or call.status == status)
        )

    def rule_changes(self, route: str = "AddMembershipRule") -> Counter[tuple[str, int]]:
        """Successful ``route`` calls (AddMembershipRule, DeleteMembershipRule) per
        (collection, device), as the service saw them."""
        return Counter(
            (str(call.collection_id), int(call.resource_id))
            for call in self.calls
            if call.route == route and call.status in (200, 201) and call.resource_id is not None
        )

    def status_message_queries(self) -> list[StatusQuery]:
        """What each status message query asked for, oldest first."""
        return [call.query for call in self.calls if call.query is not None]

    def successful_adds(self) -> Counter[tuple[str, int]]:
        """Successful AddMembershipRule calls per (collection, ResourceID)."""
        return Counter(
            (call.collection_id, call.resource_id)
            for call in self.calls
            if call.route == "AddMembershipRule"
            and call.status in (200, 201)
            and call.collection_id is not None
            and call.resource_id is not None
        )

    @property
    def in_flight(self) -> int:
        """Requests being served right now (a slow one may still change state)."""
        return self._calls.in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served; False if ``timeout`` passed first."""
        return self._calls.wait_idle(timeout)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of simulator bugs (each answered 500); tests assert it stays empty."""
        return self._calls.errors

    @property
    def jwks_fetches(self) -> int:
        """How often the signing keys were fetched."""
        return self._auth.jwks_fetches

    # -- fault injection ---------------------------------------------------------------

    @property
    def latency_seconds(self) -> float:
        """Delay before every answer (a per-route ``set_latency`` overrides it)."""
        return self._faults.latency

    @latency_seconds.setter
    def latency_seconds(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Delay answers of one route (see ROUTES) or, with ``route=None``, of all."""
        self._faults.set_latency(seconds, route)

    def fail_next(
        self,
        n: int = 1,
        status: FaultStatus = 503,
        retry_after: int | None = None,
        *,
        route: str | None = None,
    ) -> None:
        """The next ``n`` requests (of ``route``, if given) fail with ``status``; queued
        after faults already pending."""
        self._faults.fail_next(n, status, retry_after, route)

    def storm(self, status: FaultStatus, count: int, retry_after: int | None = None) -> None:
        """The next ``count`` requests, whatever the route, fail with ``status``; replaces
        faults still pending."""
        self._faults.storm(status, count, retry_after)

    def reset_connections_next(self, n: int = 1, *, route: str | None = None) -> None:
        """Close the connection of the next ``n`` requests with a TCP reset, unanswered."""
        self._faults.reset_next(n, route)

    def slow_next(self, n: int = 1, seconds: float = 1.0, *, route: str | None = None) -> None:
        """Delay the answers of the next ``n`` requests (of ``route``, if given) by
        ``seconds`` on top of any latency, then serve them as usual: past a client's
        timeout, the request still takes effect, as on a slow real server."""
        self._faults.slow_next(n, seconds, route)

    def clear_faults(self) -> None:
        """Drop pending faults, resets and slow answers, and all latency."""
        self._faults.clear()
