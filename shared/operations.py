"""What an operator asks: how far is the export, how full are the queues, what happened
lately, is every dependency reachable. The CLI and the ``health`` function share it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.errors import CmRemediateError
from shared.runtime import Runtime


@dataclass
class SiteStatus:
    """Export progress of one site against what its database holds."""

    site_code: str
    newest_record_id: int | None = None
    newest_time_utc: datetime | None = None
    exported_high_record_id: int | None = None
    exported_floor_record_id: int | None = None
    last_export_utc: datetime | None = None

    def lag(self, now: datetime) -> timedelta | None:
        """How far behind the export is: zero when it has examined the newest generic
        message, else the time since its last checkpoint (None: never exported)."""
        if self.caught_up:
            return timedelta(0)
        if self.last_export_utc is None:
            return None
        return max(timedelta(0), now - self.last_export_utc)

    @property
    def caught_up(self) -> bool:
        """True when the export has examined the site's newest generic message."""
        return (
            self.newest_record_id is not None
            and self.exported_high_record_id is not None
            and self.exported_high_record_id >= self.newest_record_id
        )


@dataclass
class Status:
    """The ``status`` figures."""

    sites: list[SiteStatus] = field(default_factory=list)
    queue_depth: int | None = None
    poison_depth: int | None = None
    outcomes_24h: dict[str, int] = field(default_factory=dict)
    #: Adds the blast-radius guard holds for an operator, per collection (any age).
    held: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    checked_utc: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (times as ISO 8601, lag in seconds)."""

        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        def lag(site: SiteStatus) -> float | None:
            value = site.lag(self.checked_utc) if self.checked_utc else None
            return None if value is None else value.total_seconds()

        return {
            "checked_utc": plain(self.checked_utc),
            "sites": [
                {
                    **{k: plain(v) for k, v in asdict(s).items()},
                    "caught_up": s.caught_up,
                    "lag_seconds": lag(s),
                }
                for s in self.sites
            ],
            "queue_depth": self.queue_depth,
            "poison_depth": self.poison_depth,
            "outcomes_24h": self.outcomes_24h,
            "held": self.held,
            "errors": self.errors,
        }


def queue_depth(runtime: Runtime, name: str) -> int:
    """Approximately how many messages the queue holds (0 when it does not exist)."""
    try:
        properties = runtime.storage.queue(name).get_queue_properties()
        return int(properties.approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def collect_status(runtime: Runtime) -> Status:
    """Gather the figures; a dependency that fails is reported, not raised."""
    status = Status(checked_utc=runtime.clock())
    sites: dict[str, SiteStatus] = {}
    try:
        for summary in runtime.site_database.sites():
            sites[summary.site_code] = SiteStatus(
                summary.site_code, summary.newest_record_id, summary.newest_time_utc
            )
    except CmRemediateError as error:
        status.errors.append(f"site database: {error}")
    try:
        for code in sorted(sites):
            state, _ = runtime.watermarks.load(code)
            if state is not None:
                site = sites[code]
                site.exported_high_record_id = state.high_record_id
                site.exported_floor_record_id = state.floor_record_id
                site.last_export_utc = state.updated_utc
        status.queue_depth = queue_depth(runtime, runtime.settings.remediation_queue)
        status.poison_depth = queue_depth(runtime, runtime.settings.poison_queue)
        since = runtime.clock() - timedelta(hours=24)
        status.outcomes_24h = dict(Counter(o.kind for o in runtime.audit.query(since=since)))
        status.held = dict(
            Counter(
                h.request.collection_id for h in runtime.held.pending() if not h.outcome.dry_run
            )
        )
    except (CmRemediateError, AzureError) as error:
        status.errors.append(f"storage: {error}")
    status.sites = [sites[code] for code in sorted(sites)]
    return status


@dataclass(frozen=True)
class Check:
    """One dependency check: what, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


def _check(name: str, hint: str, probe: Callable[[], object], passed: str) -> Check:
    try:
        detail = probe()
        return Check(name, True, detail if isinstance(detail, str) else passed)
    except (CmRemediateError, AzureError) as error:
        return Check(name, False, str(error).splitlines()[0][:300], hint)


def run_checks(runtime: Runtime) -> list[Check]:
    """Test each dependency for real, in the order a deployment needs them."""
    s = runtime.settings
    checks = [
        Check("settings and rules", True, f"{len(runtime.rules.rules)} rules from {s.rules_path}"),
        _check(
            "site database",
            "check SITE_DB_CONNECTION (Server=host,port; SQL login; ODBC Driver 18) and that "
            "the login may SELECT v_StatusMessage, v_StatMsgInsStrings and v_R_System",
            runtime.site_database.ping,
            "v_StatusMessage, v_StatMsgInsStrings and v_R_System answered",
        ),
        _check(
            "storage queue",
            "check AzureWebJobsStorage and the identity's Storage Queue Data Contributor role",
            lambda: f"{s.remediation_queue}: {queue_depth(runtime, s.remediation_queue)} messages",
            "",
        ),
        _check(
            "storage blobs",
            "check the identity's Storage Blob Data Owner role (the export's watermarks and "
            "site leases)",
            partial(runtime.watermarks.load, "CHK"),
            "the watermark container is readable",
        ),
        _check(
            "storage tables",
            "check the identity's Storage Table Data Contributor role (the audit trail and "
            "the blast-radius guard)",
            partial(_tables_readable, runtime),
            "the audit and add-limit tables are readable",
        ),
    ]
    if "adminservice" in runtime.targets or s.identity_source == "adminservice":
        admin = runtime.adminservice
        checks.append(
            _check(
                "token",
                "check ENTRA_TENANT_ID, ENTRA_CLIENT_ID, ADMINSERVICE_USERNAME/PASSWORD and "
                "ADMINSERVICE_SCOPE; the service account must not need MFA",
                admin.token,
                "Entra ID issued a token for the service account",
            )
        )
        checks.append(
            _check(
                "AdminService",
                "check ADMINSERVICE_URL (the CMG's CCM_Proxy_ServerAuth URL), that the CMG "
                "allows AdminService traffic, and TLS_CA_BUNDLE for a private certificate",
                admin.check,
                f"{admin.base_url}v1.0/$metadata answered",
            )
        )
        for rule in runtime.rules.rules:
            if rule.target != "adminservice":
                continue
            checks.append(
                _check(
                    f"collection {rule.collection_id}",
                    f"create the collection or fix collection_id of rule {rule.name!r}",
                    partial(_collection_exists, runtime, rule.collection_id),
                    f"{rule.collection_id} exists",
                )
            )
    return checks


def _tables_readable(runtime: Runtime) -> None:
    runtime.audit.query(since=runtime.clock())  # creates the table if missing
    runtime.add_limiter.usage("CHECK0000", runtime.clock())


def _collection_exists(runtime: Runtime, collection_id: str) -> None:
    if runtime.adminservice.collection_rules(collection_id) is None:
        raise CmRemediateError(f"collection {collection_id} does not exist")


def attention(figures: Status) -> list[str]:
    """What waits for an operator although every dependency is up (alert on these)."""
    notes: list[str] = []
    if figures.poison_depth:
        notes.append(
            f"{figures.poison_depth} message(s) in the poison queue: fix the cause, then "
            "`cmremediate poison requeue --all`"
        )
    for collection_id, count in sorted(figures.held.items()):
        notes.append(
            f"{count} add(s) to {collection_id} held by the blast-radius guard: "
            f"`cmremediate held list --collection {collection_id}`"
        )
    return notes


def health_report(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The ``health`` function's answer: 200 when every dependency is up, else 503."""
    checks = run_checks(runtime)
    figures = collect_status(runtime)
    healthy = all(c.ok for c in checks) and not figures.errors
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checks": [asdict(c) for c in checks],
        "attention": attention(figures),
        "figures": figures.to_json(),
    }
    return (200 if healthy else 503), body
