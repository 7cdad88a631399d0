"""The composition root: settings and rules in, long-lived clients out.

Built once per process (a function app instance, a CLI run), on first use, and reused
by every invocation, as the Azure SDK, MSAL and pyodbc are meant to be used. Building
it validates settings and rules (including that every target a rule names is
configured) and touches no network; the clients connect when first called.

The stages get their ports from here; tests and the dev stack replace any of them (or
the clients behind them) with ``Overrides``: for one runtime, made the functions' with
:func:`install_runtime`, or for every runtime the process builds from the environment
with :func:`use_overrides`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import requests

from shared.app.adminservice_tokens import adminservice_tokens, session_store
from shared.app.configuration import load_configuration, validate_targets
from shared.app.export_function import ExportFunction
from shared.app.overrides import Overrides
from shared.app.queue_function import QueueFunction
from shared.app.secret_settings import register_secrets
from shared.domain.clock import utc_now
from shared.domain.ports import (
    DeviceSource,
    MembershipClaims,
    MembershipSource,
    MembershipTarget,
    OutcomeStore,
    ProgressStore,
    RequestSender,
    StatusMessageSource,
)
from shared.domain.rules import RuleSet, load_rules
from shared.errors import ConfigurationError
from shared.export.adminservice_source import AdminServiceStatusMessages
from shared.export.exporter import Exporter, ExportOptions
from shared.export.site_database import SiteDatabaseClient
from shared.export.watermark import SiteWatermark
from shared.export.watermark_store import WatermarkStore
from shared.platform.connection_strings import through_tunnel
from shared.platform.http import new_session, trust_store
from shared.platform.probes import Probes
from shared.platform.relay.setup import open_tunnel
from shared.platform.relay.tunnel import RelayTunnel
from shared.platform.session_store import SessionStore
from shared.platform.settings import Settings
from shared.platform.storage import STORAGE_RETRIES, StorageAccount
from shared.platform.telemetry import telemetry
from shared.platform.tokens import AppTokens
from shared.queue.local_host import LocalQueueHost
from shared.queue.options import QueueOptions
from shared.queue.poison import PoisonQueue
from shared.queue.sender import RemediationQueue
from shared.remediation.audit_log import AuditLog, audit_table_name
from shared.remediation.claims import TableMembershipClaims, claims_table_name
from shared.remediation.expiry import Expiry
from shared.remediation.guard import BlastRadiusGuard, guard_table_name
from shared.remediation.held import HeldRequests
from shared.remediation.remediator import Remediator
from shared.remediation.retry import Retries
from shared.targets.adminservice import AdminServiceClient
from shared.targets.adminservice_batches import DeviceBatches, MembershipBatches
from shared.targets.adminservice_membership import AdminServiceMembership, CollectionRefresher
from shared.targets.configmgr_webservice import ConfigMgrWebServiceTarget
from shared.targets.rest_webservice import RestWebServiceTarget


class Runtime:
    """Settings, rules and the clients built from them (or given in ``overrides``)."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet | None = None,
        *,
        overrides: Overrides | None = None,
    ) -> None:
        self.settings = settings
        self.overrides = overrides if overrides is not None else Overrides()
        #: Every "now" of the pipeline (tests may replace it before first use).
        self.clock = self.overrides.clock or utc_now
        #: Measures pauses and windows (never dates anything).
        self.monotonic = self.overrides.monotonic or time.monotonic
        self.rules = rules if rules is not None else load_rules(settings.rules_path)
        validate_targets(settings, self.rules)
        register_secrets(settings)
        #: The probes of health, `check` and `status`: one in flight per check at most.
        self.probes = Probes()

    @classmethod
    def from_environment(
        cls, values: Mapping[str, str] | None = None, *, overrides: Overrides | None = None
    ) -> Runtime:
        """Settings from ``values`` or the environment, and the rules file they name;
        one ConfigurationError names every problem (shared.app.configuration).
        ``overrides`` default to the process's (:func:`use_overrides`)."""
        settings, rules = load_configuration(values)
        return cls(settings, rules, overrides=overrides if overrides is not None else _overrides)

    @cached_property
    def storage(self) -> StorageAccount:
        """The storage account behind AzureWebJobsStorage."""
        retries = self.overrides.storage_retries
        return StorageAccount(
            self.settings, retries=STORAGE_RETRIES if retries is None else retries
        )

    @cached_property
    def site_database(self) -> SiteDatabaseClient:
        """The site database reader (EXPORT_SOURCE or IDENTITY_SOURCE sitedb), through
        the hybrid connection's loopback tunnel when SITE_DB_RELAY_* are set."""
        connection = self.settings.site_db_connection
        if connection is None:
            raise ConfigurationError(
                "SITE_DB_CONNECTION is required: EXPORT_SOURCE or IDENTITY_SOURCE is sitedb"
            )
        odbc, tunnel = connection.get_secret_value(), self.relay_tunnel
        if tunnel is not None:
            odbc = through_tunnel(odbc, tunnel.port)
        return SiteDatabaseClient(odbc, retry=self.overrides.site_db_retry, path=tunnel)

    @cached_property
    def relay_tunnel(self) -> RelayTunnel | None:
        """The loopback tunnel to the site database's hybrid connection (SITE_DB_RELAY_*)."""
        if not self.settings.relay_configured:
            return None
        return open_tunnel(self.settings, self.trust_store, self.overrides.relay_tokens)

    @cached_property
    def adminservice_status_messages(self) -> AdminServiceStatusMessages:
        """Status messages through the AdminService (EXPORT_SOURCE=adminservice)."""
        return AdminServiceStatusMessages(self.adminservice.service)

    @cached_property
    def queue(self) -> RemediationQueue:
        """The remediation queue (sending side)."""
        return RemediationQueue(self.storage.queue(self.settings.remediation_queue))

    @cached_property
    def watermarks(self) -> WatermarkStore:
        """Export progress per site."""
        return WatermarkStore(self.storage.container(self.settings.state_container))

    def export_options(self) -> ExportOptions:
        """The exporter's tuning, from settings."""
        return ExportOptions(
            overlap=self.settings.export_overlap,
            max_messages_per_run=self.settings.export_max_messages_per_run,
            start_time_utc=self.settings.export_start_time,
        )

    @property
    def status_source(self) -> StatusMessageSource:
        """Where the exporter reads status messages (EXPORT_SOURCE)."""
        if self.overrides.status_source is not None:
            return self.overrides.status_source
        if self.settings.export_source == "adminservice":
            return self.adminservice_status_messages
        return self.site_database

    @property
    def progress_store(self) -> ProgressStore[SiteWatermark]:
        """Where the exporter keeps its progress: the watermark store."""
        override = self.overrides.progress_store
        return self.watermarks if override is None else override

    @property
    def request_sender(self) -> RequestSender:
        """Where the exporter, the remediator and ``held`` send requests: the queue."""
        override = self.overrides.request_sender
        return self.queue if override is None else override

    @property
    def outcome_store(self) -> OutcomeStore:
        """Where the remediator and ``held`` record outcomes: the audit log."""
        override = self.overrides.outcome_store
        return self.audit if override is None else override

    @cached_property
    def exporter(self) -> Exporter:
        """The export run of the timer function and of ``cmremediate export``."""
        build = self.overrides.exporter or Exporter
        return build(
            status_source=self.status_source,
            request_sender=self.request_sender,
            progress_store=self.progress_store,
            rules=self.rules,
            options=self.export_options(),
            clock=self.clock,
        )

    @cached_property
    def export_function(self) -> ExportFunction:
        """What the export timer does: a run, then its metrics."""
        names = {
            "remediation": self.settings.remediation_queue,
            "poison": self.settings.poison_queue,
        }
        depths = {role: self.storage.queue(name, raw=True) for role, name in names.items()}
        return ExportFunction(self.exporter, telemetry, depths)

    @cached_property
    def trust_store(self) -> Path:
        """System CAs plus TLS_CA_BUNDLE, for every outbound HTTPS call."""
        return trust_store(self.settings.tls_ca_bundle)

    @cached_property
    def http(self) -> requests.Session:
        """The HTTPS session of MSAL, the AdminService and the web services."""
        return (self.overrides.http or new_session)(self.trust_store)

    def _entra_client_secret(self) -> str | None:
        """The app registration's secret, when it has one (MSAL wants it in plain text)."""
        secret = self.settings.entra_client_secret
        return secret.get_secret_value() if secret is not None else None

    @cached_property
    def adminservice(self) -> AdminServiceClient:
        """The AdminService client, with the service account's delegated tokens."""
        s = self.settings
        if not (s.adminservice_url and s.entra_tenant_id and s.entra_client_id):
            raise ConfigurationError(
                "ADMINSERVICE_URL, ENTRA_TENANT_ID and ENTRA_CLIENT_ID are required"
            )
        tokens = self.overrides.delegated_tokens or adminservice_tokens(
            s, self.http, lambda: self.session_store, self.monotonic
        )
        if self.overrides.adminservice is not None:
            return self.overrides.adminservice(s.adminservice_url, tokens, self.http)
        return AdminServiceClient(
            s.adminservice_url,
            tokens,
            self.http,
            retry=self.overrides.http_retry,
            max_concurrent=s.adminservice_max_concurrency,
        )

    @cached_property
    def session_store(self) -> SessionStore:
        """Where the AdminService session is kept (ADMINSERVICE_AUTH=refresh-token)."""
        o = self.overrides
        return session_store(self.settings, self.storage, o.vault_credential, o.vault_transport)

    @cached_property
    def device_source(self) -> DeviceSource:
        """Where machine names become ResourceIDs (IDENTITY_SOURCE, else EXPORT_SOURCE)."""
        if self.overrides.device_source is not None:
            return self.overrides.device_source
        if self.settings.identity == "adminservice":
            # Names looked up side by side go out together.
            return DeviceBatches(self.adminservice.find_devices_named)
        return self.site_database

    @cached_property
    def membership_source(self) -> MembershipSource:
        """Where a device's membership in a collection is read: the site database's
        v_FullCollectionMembership when identity comes from it, else the AdminService's
        SMS_FullCollectionMembership, asked about many devices at once."""
        if self.settings.identity == "sitedb":
            return self.site_database
        return MembershipBatches(self.adminservice.memberships)

    @cached_property
    def claims(self) -> MembershipClaims:
        """The claims that make one add per (collection, device) across instances."""
        if self.overrides.claims is not None:
            return self.overrides.claims
        outcomes = self.outcome_store
        return TableMembershipClaims(
            self.storage.table(claims_table_name(self.settings.remediation_queue)),
            standing=timedelta(hours=self.settings.membership_claim_hours),
            outcome_of=lambda site, record, rule, dry_run, decision: outcomes.kind_of(
                site, record, rule, dry_run=dry_run, decision=decision
            ),
        )

    @cached_property
    def audit(self) -> AuditLog:
        """The audit trail of outcomes."""
        table = self.storage.table(audit_table_name(self.settings.remediation_queue))
        return AuditLog(table, clock=self.clock)

    @cached_property
    def targets(self) -> Mapping[str, MembershipTarget]:
        """The membership targets the rules use."""
        if self.overrides.targets is not None:
            return self.overrides.targets
        targets: dict[str, MembershipTarget] = {}
        if any(r.target == "adminservice" for r in self.rules.rules):
            refresher = CollectionRefresher(
                self.adminservice.request_refresh,
                enabled=self.settings.adminservice_request_refresh,
                clock=self.monotonic,
            )
            targets["adminservice"] = AdminServiceMembership(
                self.adminservice, refresher, self.membership_source
            )
        if any(r.target == "webservice" for r in self.rules.rules):
            targets["webservice"] = self._webservice()
        return targets

    def _webservice(self) -> MembershipTarget:
        s = self.settings
        assert s.webservice_url is not None  # validate_targets made sure
        if s.webservice_kind == "configmgr-webservice":
            assert s.webservice_secret is not None
            return ConfigMgrWebServiceTarget(
                s.webservice_url,
                s.webservice_secret.get_secret_value(),
                self.http,
                retry=self.overrides.http_retry,
            )
        assert s.webservice_scope and s.entra_tenant_id and s.entra_client_id
        tokens = self.overrides.app_tokens
        if tokens is None:
            tokens = AppTokens(
                authority_host=s.entra_authority_host,
                tenant_id=s.entra_tenant_id,
                client_id=s.entra_client_id,
                scope=s.webservice_scope,
                session=self.http,
                client_secret=self._entra_client_secret(),
                certificate_path=s.entra_client_certificate_path,
                monotonic=self.monotonic,
            )
        return RestWebServiceTarget(
            s.webservice_url, self.http, tokens, retry=self.overrides.http_retry
        )

    @cached_property
    def guard(self) -> BlastRadiusGuard:
        """The blast-radius guard: its per-collection window of adds."""
        return BlastRadiusGuard(
            self.storage.table(guard_table_name(self.settings.remediation_queue)),
            self.settings.max_adds_per_collection_per_hour,
        )

    @cached_property
    def held(self) -> HeldRequests:
        """Adds the guard held, for `cmremediate held`."""
        return HeldRequests(self.outcome_store, self.request_sender)

    @cached_property
    def expiry(self) -> Expiry:
        """Memberships that end: the daily sweep and `cmremediate expire`."""
        return Expiry(self.audit, self.rules, self.targets, self.guard, self.claims, self.clock)

    @cached_property
    def retries(self) -> Retries:
        """Decisions taken again, for `cmremediate retry`."""
        return Retries(self.audit, self.request_sender, self.clock)

    @cached_property
    def remediator(self) -> Remediator:
        """The queue function's handler, and ``cmremediate process``'s."""
        guard = self.overrides.guard
        return Remediator(
            rules=self.rules,
            devices=self.device_source,
            targets=self.targets,
            outcomes=self.outcome_store,
            retry_sender=self.request_sender,
            resolve_retry=timedelta(hours=self.settings.resolve_retry_hours),
            resolve_retry_delay_seconds=self.settings.resolve_retry_delay_seconds,
            guard=self.guard if guard is None else guard,
            claims=self.claims,
            # A claim is held for seconds: look again soon, not after an unknown
            # device's long wait.
            busy_retry_seconds=min(30, self.settings.resolve_retry_delay_seconds),
            dry_run=self.settings.dry_run,
            clock=self.clock,
        )

    @cached_property
    def local_host(self) -> LocalQueueHost:
        """The CLI's stand-in for the Functions host (``cmremediate process``): the
        host's receive → handle → delete/poison loop, in this process."""
        return LocalQueueHost(
            self.storage.queue(self.settings.remediation_queue, raw=True),
            self.poison,
            self.remediator,
            self.queue_options,
        )

    @cached_property
    def poison(self) -> PoisonQueue:
        """The poison queue and the way back out of it."""
        return PoisonQueue(
            self.storage.queue(self.settings.poison_queue, raw=True),
            self.storage.queue(self.settings.remediation_queue, raw=True),
        )

    @cached_property
    def queue_function(self) -> QueueFunction:
        """What ``apply_remediation`` does with a delivery (last attempts parked)."""
        return QueueFunction(self.remediator, self.poison, self.queue_options.max_dequeue_count)

    @cached_property
    def queue_options(self) -> QueueOptions:
        """The host's queue options (host.json and their app-setting overrides)."""
        return QueueOptions.from_host_json(self.settings.app_root)

    def close(self) -> None:
        """Release connections and threads (the CLI and tests; the host just exits)."""
        if "site_database" in self.__dict__:
            self.site_database.close()
        if self.__dict__.get("relay_tunnel") is not None:
            self.relay_tunnel.close()  # type: ignore[union-attr]
        if "queue" in self.__dict__:
            self.queue.close()
        if "http" in self.__dict__:
            self.http.close()


def quiet_sdk_logs() -> None:
    """The Azure SDK logs every HTTP request at INFO; operators need our lines, not those."""
    logging.getLogger("azure").setLevel(logging.WARNING)


_lock = threading.Lock()
_runtime: Runtime | None = None
_overrides = Overrides()


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use from the environment (with the
    process's overrides, see :func:`use_overrides`).

    A bad configuration raises its ConfigurationError on every call, checked afresh each
    time (no network): each timer or queue invocation fails naming the problems, and the
    first call after the fix builds the runtime.
    """
    global _runtime
    with _lock:
        if _runtime is None:
            (_overrides.sdk_logs or quiet_sdk_logs)()
            _runtime = Runtime.from_environment()
        return _runtime


def install_runtime(runtime: Runtime) -> None:
    """Make ``runtime`` the process-wide runtime until :func:`reset_runtime` (the one
    before is closed). For tests and the dev stack: a runtime built with ``Overrides``,
    where the functions will use it."""
    global _runtime
    with _lock:
        if _runtime is not runtime:
            _forget_runtime()
        (runtime.overrides.sdk_logs or quiet_sdk_logs)()
        _runtime = runtime


def reset_runtime() -> None:
    """Forget the process-wide runtime (tests change the environment between apps)."""
    with _lock:
        _forget_runtime()


def use_overrides(overrides: Overrides) -> None:
    """From now on, build every runtime from the environment (``get_runtime()``'s, the
    CLI's) with ``overrides``; ``Overrides()`` for none. The process-wide runtime is
    closed and forgotten, so the next ``get_runtime()`` builds with them. For tests and
    the dev stack, which put fakes or tuned clients where the functions will use them."""
    global _overrides
    with _lock:
        _forget_runtime()
        _overrides = overrides


def process_overrides() -> Overrides:
    """The overrides :func:`use_overrides` set for this process (none at first)."""
    return _overrides


def _forget_runtime() -> None:
    """Close and forget the process-wide runtime; the caller holds ``_lock``."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
    _runtime = None
