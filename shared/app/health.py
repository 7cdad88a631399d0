"""What an operator asks: how far is the export, how full are the queues, what happened
lately, is every dependency reachable. The CLI and the ``health`` function share it.

Everything that may touch the network (building a client included) runs as a bounded
probe (shared.platform.probes): all at once, each with the caller's deadline, so a dependency
that never answers costs the deadline, not the clients' own timeouts and retries.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from azure.core.exceptions import AzureError

from shared.app.configuration import binding_problems
from shared.app.runtime import Runtime, get_runtime
from shared.domain.rules import Rule
from shared.errors import CmRemediateError, ConfigurationError
from shared.export.watermark import SiteWatermark
from shared.platform.probes import Answer, Deadline, Pending
from shared.platform.storage import approximate_depth
from shared.targets.adminservice_review import TargetReview

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The health endpoint's budget: every check and figure has answered or is reported as
#: late by then, and the function answers a moment later (well within 10 s).
HEALTH_SECONDS = 8.0
#: ``cmremediate check`` and ``status``: an operator can wait longer, and mostly gets the
#: clients' own, more precise errors (a login timeout, a refused token) instead.
OPERATOR_SECONDS = 60.0


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
    return approximate_depth(runtime.storage.queue(name))


def _settled(answer: Answer[T], deadline: Deadline, what: str) -> tuple[T | None, str | None]:
    """A probe's value, or the one-line text of why there is none. An unexpected
    exception is logged (the log redacts secrets), not shown, and not raised: the
    health endpoint must answer whatever a probe does."""
    if not answer.done:
        return None, answer.late(deadline)
    error = answer.error
    if error is None:
        return answer.value, None
    if isinstance(error, CmRemediateError | AzureError):
        return None, str(error).splitlines()[0][:300]
    log.error("%s: unexpected %s", what, type(error).__name__, exc_info=error)
    return None, f"unexpected {type(error).__name__} (details in the log)"


def _sites(runtime: Runtime) -> list[SiteStatus]:
    return [
        SiteStatus(summary.site_code, summary.newest_record_id, summary.newest_time_utc)
        for summary in runtime.status_source.sites()
    ]


def _export_progress(runtime: Runtime, codes: list[str]) -> dict[str, SiteWatermark | None]:
    return {code: runtime.watermarks.load(code)[0] for code in codes}


@dataclass
class _StorageFigures:
    queue_depth: int
    poison_depth: int
    outcomes_24h: dict[str, int]
    held: dict[str, int]


def _storage_figures(runtime: Runtime) -> _StorageFigures:
    since = runtime.clock() - timedelta(hours=24)
    return _StorageFigures(
        queue_depth=queue_depth(runtime, runtime.settings.remediation_queue),
        poison_depth=queue_depth(runtime, runtime.settings.poison_queue),
        outcomes_24h=dict(Counter(o.kind for o in runtime.audit.query(since=since))),
        held=dict(
            Counter(
                h.request.collection_id for h in runtime.held.pending() if not h.outcome.dry_run
            )
        ),
    )


@dataclass
class _StatusProbes:
    """The figures' probes, started; the export progress waits for the site list."""

    sites: Pending[list[SiteStatus]]
    storage: Pending[_StorageFigures]


def _source_name(runtime: Runtime) -> str:
    """What the site figures are read from, in words an operator knows."""
    if runtime.settings.export_source == "adminservice":
        return "status messages (AdminService)"
    return "site database"


def _start_status(runtime: Runtime) -> _StatusProbes:
    return _StatusProbes(
        sites=runtime.probes.start(f"figures: {_source_name(runtime)}", partial(_sites, runtime)),
        storage=runtime.probes.start("figures: storage", partial(_storage_figures, runtime)),
    )


def _finish_status(runtime: Runtime, started: _StatusProbes, deadline: Deadline) -> Status:
    status = Status(checked_utc=runtime.clock())
    source = _source_name(runtime)
    sites, error = _settled(started.sites.wait(deadline), deadline, f"figures: {source}")
    if error is not None:
        status.errors.append(f"{source}: {error}")
    status.sites = sorted(sites or [], key=lambda site: site.site_code)
    if status.sites:
        progress = runtime.probes.start(
            "figures: export progress",
            partial(_export_progress, runtime, [site.site_code for site in status.sites]),
        )
        states, error = _settled(progress.wait(deadline), deadline, "figures: export progress")
        if error is not None:
            status.errors.append(f"storage: export progress: {error}")
        for site in status.sites:
            state = (states or {}).get(site.site_code)
            if state is not None:
                site.exported_high_record_id = state.high_record_id
                site.exported_floor_record_id = state.floor_record_id
                site.last_export_utc = state.updated_utc
    figures, error = _settled(started.storage.wait(deadline), deadline, "figures: storage")
    if error is not None:
        status.errors.append(f"storage: {error}")
    if figures is not None:
        status.queue_depth = figures.queue_depth
        status.poison_depth = figures.poison_depth
        status.outcomes_24h = figures.outcomes_24h
        status.held = figures.held
    return status


def collect_status(runtime: Runtime, *, seconds: float = OPERATOR_SECONDS) -> Status:
    """Gather the figures in parallel, within ``seconds``; a dependency that fails or
    does not answer in time is reported, not raised."""
    deadline = Deadline.after(seconds)
    return _finish_status(runtime, _start_status(runtime), deadline)


@dataclass(frozen=True)
class Check:
    """One dependency check: what, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    #: What passed but deserves a look (printed and in the JSON; never a failure).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Passed:
    """A probe's value: it passed, with warnings."""

    detail: str
    warnings: list[str]


@dataclass(frozen=True)
class _Probe:
    """A check before it runs: ``call`` is where every network access happens."""

    name: str
    hint: str
    call: Callable[[], object]
    passed: str


def _probes(runtime: Runtime) -> list[_Probe]:
    """The dependency checks, in the order a deployment needs them. Reads settings and
    rules only: no client is built here."""
    s = runtime.settings
    probes = []
    if s.reads_site_database:
        probes.append(
            _Probe(
                "site database",
                "check SITE_DB_CONNECTION (Server=host,port; SQL login; ODBC Driver 18) and "
                "that the login may SELECT v_StatusMessage, v_StatMsgInsStrings, v_R_System and "
                "v_FullCollectionMembership",
                lambda: runtime.site_database.ping(),
                "v_StatusMessage, v_StatMsgInsStrings, v_R_System and v_FullCollectionMembership "
                "answered",
            )
        )
    probes += [
        _Probe(
            "storage queue",
            "check AzureWebJobsStorage and the identity's Storage Queue Data Contributor role",
            lambda: f"{s.remediation_queue}: {queue_depth(runtime, s.remediation_queue)} messages",
            "",
        ),
        _Probe(
            "storage blobs",
            "check the identity's Storage Blob Data Owner role (the export's watermarks and "
            "site leases)",
            lambda: runtime.watermarks.load("CHK"),
            "the watermark container is readable",
        ),
        _Probe(
            "storage tables",
            "check the identity's Storage Table Data Contributor role (the audit trail and "
            "the blast-radius guard)",
            partial(_tables_readable, runtime),
            "the audit and guard tables are readable",
        ),
    ]
    adminservice_rules = [r for r in runtime.rules.rules if r.target == "adminservice"]
    if adminservice_rules or "adminservice" in (s.identity, s.export_source):
        probes += [
            _Probe(
                "token",
                "check ENTRA_TENANT_ID, ENTRA_CLIENT_ID, ADMINSERVICE_USERNAME/PASSWORD and "
                "ADMINSERVICE_SCOPE; the service account must not need MFA",
                lambda: runtime.adminservice.token(),
                "Entra ID issued a token for the service account",
            ),
            _Probe(
                "AdminService",
                "check ADMINSERVICE_URL (the CMG's CCM_Proxy_ServerAuth URL), that the CMG "
                "allows AdminService traffic, and TLS_CA_BUNDLE for a private certificate",
                lambda: runtime.adminservice.check(),
                f"{s.adminservice_url}v1.0/$metadata answered",
            ),
        ]
    if s.export_source == "adminservice":
        probes.append(
            _Probe(
                "status messages",
                "check that the service account's ConfigMgr role may read status messages "
                "(SMS_StatusMessage, SMS_StatMsgWithInsStrings) and sites (SMS_Site)",
                lambda: runtime.adminservice_status_messages.ping(),
                "SMS_StatMsgWithInsStrings and SMS_Site answered through the AdminService",
            )
        )
    if adminservice_rules:
        # One read of every rule's collection, shared by their checks.
        review = TargetReview(
            lambda: runtime.adminservice, [rule.collection_id for rule in adminservice_rules]
        )
        probes += [
            _Probe(
                f"collection {rule.collection_id}",
                f"create the collection or fix collection_id of rule {rule.name!r}",
                partial(_collection_checked, review, rule),
                f"{rule.collection_id} exists",
            )
            for rule in adminservice_rules
        ]
    return probes


def _start_checks(runtime: Runtime) -> list[tuple[_Probe, Pending[object]]]:
    return [(probe, runtime.probes.start(probe.name, probe.call)) for probe in _probes(runtime)]


def _finish_checks(
    runtime: Runtime, started: list[tuple[_Probe, Pending[object]]], deadline: Deadline
) -> list[Check]:
    checks = [
        Check(
            "settings and rules",
            True,
            f"{len(runtime.rules.rules)} rules from {runtime.settings.rules_path}",
        )
    ]
    for probe, pending in started:
        value, error = _settled(pending.wait(deadline), deadline, probe.name)
        if error is not None:
            checks.append(Check(probe.name, False, error, probe.hint))
            continue
        if isinstance(value, Passed):
            checks.append(Check(probe.name, True, value.detail, warnings=value.warnings))
            continue
        checks.append(Check(probe.name, True, value if isinstance(value, str) else probe.passed))
    return checks


def run_checks(runtime: Runtime, *, seconds: float = OPERATOR_SECONDS) -> list[Check]:
    """Test each dependency for real, all at once; a check without an answer within
    ``seconds`` fails as late (its probe goes on in the background, see shared.platform.probes)."""
    deadline = Deadline.after(seconds)
    return _finish_checks(runtime, _start_checks(runtime), deadline)


def _tables_readable(runtime: Runtime) -> None:
    runtime.audit.query(since=runtime.clock())  # creates the table if missing
    runtime.guard.usage("CHECK0000", runtime.clock())


def _collection_checked(review: TargetReview, rule: Rule) -> Passed:
    """The rule's collection exists (else raises); what to know about it."""
    warnings = review.warnings(rule.name, rule.collection_id, rule.action)
    return Passed(f"{rule.collection_id} exists", warnings)


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


#: What to do about a configuration that does not load (health's failed check).
CONFIGURATION_HINT = (
    "fix every setting and rules problem listed under 'configuration'; until then every "
    "timer and queue invocation fails with the same error (queue messages are retried, then "
    "poisoned: `cmremediate poison requeue --all` after the fix)"
)


#: What to do about a binding setting the host cannot resolve.
BINDING_HINT = (
    "set the app setting; the host reads bindings at start, so the function runs once "
    "the app has restarted with it (changing an app setting restarts the app)"
)


def configuration_report(problems: list[str]) -> dict[str, Any]:
    """Health's answer when settings or rules do not load: every problem, no figures."""
    return {
        "status": "unhealthy",
        "configuration": problems,
        "checks": [
            asdict(Check("settings and rules", False, "; ".join(problems), CONFIGURATION_HINT))
        ],
        "attention": [],
        "figures": None,
    }


def health_report(
    runtime: Runtime | None = None, *, seconds: float = HEALTH_SECONDS
) -> tuple[int, dict[str, Any]]:
    """The ``health`` function's answer: 200 when every dependency is up, else 503.

    Every check and figure runs at once with one deadline, ``seconds`` from now, so the
    answer comes within about that, whatever the dependencies do. Without ``runtime``:
    the process-wide one, and a configuration that does not load answers 503 naming
    every problem instead of failing; so does a binding setting the host cannot resolve.
    """
    unbound: list[str] = []
    if runtime is None:
        unbound = binding_problems(os.environ)
        try:
            runtime = get_runtime()
        except ConfigurationError as error:
            log.error("health: the configuration does not load:\n%s", error)
            return 503, configuration_report([*error.problems, *unbound])
    deadline = Deadline.after(seconds)
    figures_started = _start_status(runtime)
    checks = _finish_checks(runtime, _start_checks(runtime), deadline)
    figures = _finish_status(runtime, figures_started, deadline)
    if unbound:
        log.error("health: the host cannot resolve a binding:\n%s", "\n".join(unbound))
        checks.insert(1, Check("function bindings", False, "; ".join(unbound), BINDING_HINT))
    healthy = all(c.ok for c in checks) and not figures.errors
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "configuration": unbound,
        "checks": [asdict(c) for c in checks],
        "attention": attention(figures),
        "figures": figures.to_json(),
    }
    return (200 if healthy else 503), body
