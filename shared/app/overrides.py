"""What a test or the dev stack may put in place of what the runtime builds.

``Runtime(settings, overrides=Overrides(...))`` for one runtime (``install_runtime``
makes it the one the functions use); ``use_overrides`` for every runtime the process
builds from the environment (the functions' ``get_runtime()`` and the CLI's), both in
``shared.app.runtime``. Each field left None is built from settings, as in production;
the fakes type-check against the ports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from shared.domain.clock import Clock
from shared.domain.ports import (
    DeviceSource,
    Guard,
    MembershipClaims,
    MembershipTarget,
    OutcomeStore,
    ProgressStore,
    RequestSender,
    StatusMessageSource,
)
from shared.domain.rules import RuleSet
from shared.export.exporter import Exporter, ExportOptions
from shared.export.watermark import SiteWatermark
from shared.platform.relay.tokens import RelayTokens
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import TokenProvider
from shared.remediation.guard import Decision
from shared.targets.adminservice import AdminServiceClient

#: Makes an HTTPS session that trusts the given CA bundle (``new_session``'s shape).
SessionFactory = Callable[[Path], requests.Session]
#: Makes the AdminService client from its URL, tokens and session (the class's shape).
AdminServiceFactory = Callable[[str, TokenProvider, requests.Session], AdminServiceClient]


class ExporterFactory(Protocol):
    """Makes the exporter from its ports (``Exporter`` itself, or a subclass)."""

    def __call__(
        self,
        *,
        status_source: StatusMessageSource,
        request_sender: RequestSender,
        progress_store: ProgressStore[SiteWatermark],
        rules: RuleSet,
        options: ExportOptions,
        clock: Clock,
    ) -> Exporter:
        """The exporter the timer function runs."""
        ...


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """Parts to use instead of the ones the runtime would build; None builds its own."""

    #: Every "now" of the pipeline: exporter, remediator, audit log, guard.
    clock: Clock | None = None
    #: The clock of pauses (a refused sign-in's, collection refreshes'); None:
    #: ``time.monotonic``.
    monotonic: Callable[[], float] | None = None
    #: The HTTPS session of MSAL, the AdminService and the web services.
    http: SessionFactory | None = None
    #: The service account's tokens for the AdminService.
    delegated_tokens: TokenProvider | None = None
    #: The app's own tokens for the REST web service.
    app_tokens: TokenProvider | None = None
    adminservice: AdminServiceFactory | None = None
    #: How the HTTP services (AdminService, web services) retry; None: 5 attempts.
    http_retry: RetryPolicy | None = None
    #: How the site database reader retries; None: its own policy.
    site_db_retry: RetryPolicy | None = None
    #: The sender's tokens for the site database's hybrid connection (Entra ID in a test).
    relay_tokens: RelayTokens | None = None
    #: Key Vault for the AdminService session: the credential, and an azure-core
    #: transport (the local vault's address; its TLS is checked as ever).
    vault_credential: Any = None
    vault_transport: Any = None
    #: How often the Azure SDK retries a storage call; None: ``STORAGE_RETRIES``.
    storage_retries: int | None = None
    #: The exporter's ports.
    status_source: StatusMessageSource | None = None
    progress_store: ProgressStore[SiteWatermark] | None = None
    request_sender: RequestSender | None = None
    exporter: ExporterFactory | None = None
    #: The remediator's ports (the request sender too).
    outcome_store: OutcomeStore | None = None
    guard: Guard[Decision] | None = None
    claims: MembershipClaims | None = None
    device_source: DeviceSource | None = None
    targets: Mapping[str, MembershipTarget] | None = None
    #: What becoming the process-wide runtime does to the Azure SDK's loggers (by
    #: default it quietens them: ``shared.app.runtime.quiet_sdk_logs``).
    sdk_logs: Callable[[], None] | None = None
