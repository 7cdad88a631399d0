"""The fault-injection suite's own stack and the scenario harness.

The suite stops and restarts servers, so it runs on servers of its own rather than
the session's: a site database, a persistent Azurite (a graceful restart keeps the
data), an Entra ID simulator on a loopback address of its own, and a fresh
AdminService simulator per scenario. Each scenario gets its own workload, site codes,
queue, audit table and export state, and ends with the ledger of
``tests/faults/ledger.py``.

The app runs as on Azure: its functions are invoked by Microsoft's Python worker
library through the session's ``functions_host``; the scenario's app settings are in
the environment and the functions build the process runtime from them. The export is
a tick of the ``export_status_messages`` timer; the queue is drained by the host's
queue listener (``devstack.queue_host``: batches, concurrent invocations, the suite's
1 s visibility timeout, maxDequeueCount) feeding ``apply_remediation``, which parks a
failing last attempt in the poison queue itself. A scenario
tunes that process runtime before the first invocation: small export pages, a hooked
site database client, an AdminService client with short backoff waits. A second app
instance is a child process with a Functions host of its own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
import requests
from azure.storage.queue import QueueClient

from devstack.adminservice import AdminServiceSimulator, StatusMessageReader
from devstack.app_runtime import ExportProgress, RecordingExporter, recording_exporter
from devstack.azurite import Azurite
from devstack.datagen import M365_RULES, Workload, generate_workload
from devstack.entra import EntraSimulator
from devstack.functions_host import FunctionsHost
from devstack.queue_host import DrainReport, QueueTriggerListener
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.app.overrides import Overrides
from shared.app.runtime import Runtime, get_runtime, install_runtime, reset_runtime
from shared.domain.outcomes import Outcome
from shared.domain.ports import ProgressStore, StatusMessageSource
from shared.export.exporter import Exporter, ExportReport
from shared.export.site_database import SiteDatabaseClient
from shared.export.watermark import SiteWatermark
from shared.export.watermark_store import WatermarkStore
from shared.platform.http import DEFAULT_TIMEOUT
from shared.platform.retry import RetryPolicy
from shared.platform.storage import approximate_depth
from shared.platform.tokens import TokenProvider
from shared.queue.options import QueueOptions
from shared.targets.adminservice import AdminServiceClient
from tests.conftest import InvocationFailed
from tests.faults.ledger import RESULTS, RULE_COLLECTION, Figures, Ledger
from tests.helpers import device, own_loopback

REPO = Path(__file__).resolve().parents[2]
Report = TypeVar("Report")
SERVICE_ACCOUNT = "svc-faults@contoso.example"
SERVICE_PASSWORD = "F4ult-Inj3ction-Only!"
CLIENT_ID = "5a0f0000-0000-4000-8000-00000000fa17"
COLLECTIONS = {cid: f"Remediation: {name}" for name, cid in RULE_COLLECTION.items()}
#: Status messages per scenario (two sites); about half match a rule.
MESSAGES_PER_SCENARIO = 100
#: Small pages, so that every export has several and a fault can land between them.
PAGE_SIZE = 10
#: The visibility timeout of the suite's host.json: a failed message is back in 1 s.
VISIBILITY_TIMEOUT = "00:00:01"
#: Devices that are direct members from the start without any message asking for them.
BYSTANDERS = [device(15_000_001 + n, f"BYSTANDER-{n}") for n in range(len(RULE_COLLECTION))]


# -- the suite's servers -------------------------------------------------------------------


@pytest.fixture(scope="session")
def fault_entra(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    with EntraSimulator(local_ca, host=own_loopback(2)) as simulator:
        simulator.add_user(SERVICE_ACCOUNT, SERVICE_PASSWORD)
        simulator.add_client(CLIENT_ID, public=True)
        simulator.add_api("https://ConfigMgrService", scopes=("user_impersonation",))
        yield simulator


@pytest.fixture(scope="session")
def fault_site_db() -> Iterator[SiteDatabase]:
    with SiteDatabase() as database:
        yield database


@pytest.fixture(scope="session")
def fault_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    # Persistent, so that a graceful restart keeps queues, blobs and tables.
    with Azurite(
        persistent_dir=tmp_path_factory.mktemp("faults-azurite-data"),
        log_dir=tmp_path_factory.mktemp("faults-azurite-log"),
    ) as server:
        yield server


@pytest.fixture(scope="session")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app root like the deployed one: host.json (production's, with a 1 s
    visibility timeout) and the M365 rules the workload is generated for."""
    root = tmp_path_factory.mktemp("faults-app")
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    host["extensions"]["queues"]["visibilityTimeout"] = VISIBILITY_TIMEOUT
    (root / "host.json").write_text(json.dumps(host, indent=2), encoding="utf-8")
    (root / "rules.json").write_text(json.dumps({"rules": M365_RULES}), encoding="utf-8")
    return root


# -- the AdminService client the runtimes build ---------------------------------------------

#: Production's five attempts, with waits of tens of milliseconds instead of seconds.
FAST_RETRY = RetryPolicy(
    attempts=5, initial_backoff_seconds=0.05, max_backoff_seconds=0.2, max_retry_after_seconds=2.0
)


@dataclass
class AdminClientTuning:
    """How the scenario's runtimes build their AdminService client: production's
    number of attempts with short waits (each one recorded), and a timeout a scenario
    may shorten."""

    retry: RetryPolicy = FAST_RETRY
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    waits: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)

    def build(
        self, base_url: str, tokens: TokenProvider, session: requests.Session
    ) -> AdminServiceClient:
        return AdminServiceClient(
            base_url, tokens, session, retry=self.retry, timeout=self.timeout, sleep=self.sleep
        )


@dataclass
class ExporterTuning:
    """How the scenario's runtime builds the exporter the timer function runs, on its
    first export: a recorder with small pages, whose site database client, watermark
    store and ExportOptions a scenario may replace until then."""

    database: SiteDatabaseClient | None = None
    watermarks: WatermarkStore | None = None
    options: dict[str, Any] = field(default_factory=dict)
    built: RecordingExporter | None = None

    def build(
        self,
        *,
        status_source: StatusMessageSource,
        progress_store: ProgressStore[SiteWatermark],
        **ports: Any,
    ) -> Exporter:
        make = recording_exporter(page_size=PAGE_SIZE, **self.options)
        exporter = make(
            status_source=self.database or status_source,
            progress_store=self.watermarks or progress_store,
            **ports,
        )
        assert isinstance(exporter, RecordingExporter)
        self.built = exporter
        return exporter


# -- one scenario ------------------------------------------------------------------------


def error_names(base: type[BaseException]) -> set[str]:
    """``base`` and every subclass of it, by the name the host logs an error with."""
    names = {base.__name__}
    for subclass in base.__subclasses__():
        names |= error_names(subclass)
    return names


#: The tally's key for a delivery that decided nothing yet (the request was requeued).
REQUEUED = "requeued"


class FunctionTally:
    """What ``apply_remediation`` did inside the worker's threads that the host does
    not see: the outcome the remediator returned for each delivery, and each failing
    last attempt the function parked in the poison queue itself (it then returns, so
    the host deletes the original instead of poisoning it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._parked = 0

    def outcome(self, outcome: Outcome | None) -> None:
        with self._lock:
            self._outcomes[REQUEUED if outcome is None else outcome.kind] += 1

    def park(self) -> None:
        with self._lock:
            self._parked += 1

    def snapshot(self) -> tuple[Counter[str], int]:
        """The outcomes and the parked count so far."""
        with self._lock:
            return Counter(self._outcomes), self._parked


@dataclass(frozen=True)
class Processed:
    """One :meth:`Scenario.process` so far: what the host's queue listener did, and what
    the queue function did meanwhile."""

    deliveries: int
    #: Deliveries that failed: the invocation raised (the host retries it or poisons
    #: it), or it was a last attempt the function parked in the poison queue.
    failed: int
    #: Messages moved to the poison queue: by the function (parked), or by the host.
    poisoned: int
    max_in_flight: int
    outcomes: Counter[str]

    @property
    def succeeded(self) -> int:
        """Deliveries that were handled (their message was deleted, nothing parked)."""
        return self.deliveries - self.failed


@dataclass
class Scenario:
    """One fault scenario on the suite's stack: its workload, queue and simulators, and
    the app run through the session's Functions host."""

    name: str
    site_db: SiteDatabase
    azurite: Azurite
    entra: EntraSimulator
    adminservice: AdminServiceSimulator
    ca: LocalCA
    app_root: Path
    queue_name: str
    workload: Workload
    ledger: Ledger
    tuning: AdminClientTuning
    figures: Figures
    host: FunctionsHost
    monkeypatch: pytest.MonkeyPatch
    tally: FunctionTally = field(default_factory=FunctionTally)
    exporter_tuning: ExporterTuning = field(default_factory=ExporterTuning)
    started: float = field(default_factory=time.monotonic)
    _queues: dict[str, QueueClient] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def settings_values(self, **overrides: str) -> dict[str, str]:
        """App settings pointing at the suite's stack, as the host would set them."""
        return {
            "SITE_DB_CONNECTION": self.site_db.reader_connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "AzureWebJobsScriptRoot": str(self.app_root),
            "REMEDIATION_QUEUE": self.queue_name,
            "EXPORT_SCHEDULE": "0 */5 * * * *",
            "REMEDIATION_RULES_FILE": "rules.json",
            "ADMINSERVICE_URL": self.adminservice.cmg_url,
            "ENTRA_AUTHORITY_HOST": self.entra.authority_host,
            "ENTRA_TENANT_ID": self.entra.tenant_id,
            "ENTRA_CLIENT_ID": CLIENT_ID,
            "ADMINSERVICE_USERNAME": SERVICE_ACCOUNT,
            "ADMINSERVICE_PASSWORD": SERVICE_PASSWORD,
            "TLS_CA_BUNDLE": str(self.ca.bundle_path),
            **overrides,
        }

    def app_runtime(self, **overrides: str) -> Runtime:
        """Put the app settings in the environment, as the host does for a new worker,
        and return the runtime the functions use, built from them (a fresh one) and
        tuned for the suite: the AdminService client by :class:`AdminClientTuning`,
        the exporter by :class:`ExporterTuning`, what the queue function does tallied."""
        for name, value in self.settings_values(**overrides).items():
            self.monkeypatch.setenv(name, value)
        self.exporter_tuning = ExporterTuning()
        runtime = Runtime.from_environment(
            overrides=Overrides(adminservice=self.tuning.build, exporter=self.exporter_tuning.build)
        )
        install_runtime(runtime)
        remediator, poison = runtime.remediator, runtime.poison
        handle, park = remediator.handle, poison.park

        def tallied(body: bytes | str, *, message_id: str | None = None) -> Outcome | None:
            outcome = handle(body, message_id=message_id)
            self.tally.outcome(outcome)
            return outcome

        def parked(body: bytes) -> None:
            park(body)
            self.tally.park()

        remediator.handle = tallied  # type: ignore[method-assign]
        poison.park = parked  # type: ignore[method-assign]
        return runtime

    def install_exporter(
        self,
        runtime: Runtime,
        *,
        database: SiteDatabaseClient | None = None,
        watermarks: WatermarkStore | None = None,
        **options: Any,
    ) -> RecordingExporter:
        """The exporter the timer function runs, built now: the runtime's, with small
        pages; ``database`` and ``watermarks`` replace the runtime's clients (a client
        with a hook, a shorter lease), ``options`` fields of its ExportOptions."""
        tuning = self.exporter_tuning
        assert tuning.built is None, "the exporter is tuned before its first export"
        tuning.database, tuning.watermarks, tuning.options = database, watermarks, options
        exporter = runtime.exporter
        assert isinstance(exporter, RecordingExporter)
        return exporter

    def export(self, *, progress: ExportProgress | None = None) -> ExportReport:
        """One tick of ``export_status_messages``, invoked by the worker; the report of
        the run it made. ``progress`` hears about every page of this run. Raises
        :class:`InvocationFailed` (``"<Type>: <message>"`` as the host logs it) when
        the function failed."""
        exporter = get_runtime().exporter
        assert isinstance(exporter, RecordingExporter), "app_runtime() tunes the exporter"
        exporter.progress = progress
        runs = len(exporter.reports)
        try:
            invocation = self.host.call_timer("export_status_messages")
        finally:
            exporter.progress = None
        if not invocation.ok:
            raise InvocationFailed(invocation)
        assert len(exporter.reports) == runs + 1
        return exporter.reports[-1]

    def site_database_client(self, **kwargs: Any) -> SiteDatabaseClient:
        """A site database client like the runtime's, with e.g. a ``sleep`` hook."""
        client = SiteDatabaseClient(self.site_db.reader_connection_string, **kwargs)
        self._closers.append(client.close)
        return client

    def queue_client(self, name: str | None = None) -> QueueClient:
        """A raw client of the scenario's queue (or of ``name``)."""
        name = name or self.queue_name
        if name not in self._queues:
            self._queues[name] = QueueClient.from_connection_string(
                self.azurite.connection_string, name
            )
            self._closers.append(self._queues[name].close)
        return self._queues[name]

    def depths(self) -> tuple[int, int]:
        """Messages on the queue and on the poison queue."""
        return (
            approximate_depth(self.queue_client()),
            approximate_depth(self.queue_client(f"{self.queue_name}-poison")),
        )

    def process(
        self,
        *,
        progress: Callable[[Processed], None] | None = None,
        timeout: float = 120.0,
    ) -> Processed:
        """Feed ``apply_remediation`` from the queue through the host's queue listener
        (the suite's host.json: 1 s visibility timeout) until the queue is empty,
        polling again for failed messages that come back, as the host keeps polling.
        ``progress`` hears about every finished invocation."""
        options = QueueOptions.from_host_json(self.app_root)
        total = DrainReport()
        outcomes_before, parked_before = self.tally.snapshot()

        def so_far(current: DrainReport) -> Processed:
            outcomes, parked = self.tally.snapshot()
            parked -= parked_before
            return Processed(
                deliveries=len(total.invocations) + len(current.invocations),
                failed=total.failed + current.failed + parked,
                poisoned=total.poisoned + current.poisoned + parked,
                max_in_flight=max(total.max_in_flight, current.max_in_flight),
                outcomes=outcomes - outcomes_before,
            )

        def heard(current: DrainReport) -> None:
            if progress is not None:
                progress(so_far(current))

        deadline = time.monotonic() + timeout
        with QueueTriggerListener(self.host, "apply_remediation", options=options) as listener:
            while True:
                total.merge(listener.drain(progress=heard))
                left = listener.depth()
                if left == 0:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{left} message(s) still queued after {timeout}s")
                time.sleep(0.2)
        done = so_far(DrainReport())
        self.figures.deliveries += done.deliveries
        self.figures.failed_deliveries += done.failed
        self.figures.poisoned += done.poisoned
        return done

    def settle(self, runtime: Runtime) -> None:
        """After the fault healed: requeue what the fault poisoned (the operator's
        ``poison requeue --all``), and let the host process it."""
        for _ in range(3):
            moved = runtime.poison.requeue()
            self.figures.requeued += moved
            if not moved and self.depths()[0] == 0:
                return
            self.process()
        raise AssertionError("the poison queue keeps filling after the fault healed")

    def assert_ledger(self, runtime: Runtime) -> Figures:
        """Check the end state against the ledger; record the figures either way."""
        # A slow request the client gave up on may still be changing the collection.
        assert self.adminservice.wait_idle(timeout=30), "AdminService requests still running"
        queue, poison = self.depths()
        figures = self.ledger.check(
            self.figures,
            outcomes=runtime.audit.query(),
            adminservice=self.adminservice,
            queue_depth=queue,
            poison_depth=poison,
        )
        figures.seconds = time.monotonic() - self.started
        assert figures.duplicates == 0, figures.problems
        assert figures.wrong_adds == 0, figures.problems
        assert figures.problems == [], "\n".join(figures.problems)
        assert self.adminservice.internal_errors == []
        figures.passed = True
        return figures

    def close(self) -> None:
        reset_runtime()  # closes the process runtime's clients
        for close in self._closers:
            close()


@pytest.fixture
def admin_tuning() -> AdminClientTuning:
    """How this test's runtimes build their AdminService client."""
    return AdminClientTuning()


_scenario_numbers = iter(range(1, 100))


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    local_ca: LocalCA,
    fault_entra: EntraSimulator,
    fault_site_db: SiteDatabase,
    fault_azurite: Azurite,
    app_root: Path,
    admin_tuning: AdminClientTuning,
    functions_host: FunctionsHost,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Scenario]]:
    """Build this test's scenario: a fresh workload on two sites of its own in the
    site database, its devices and the three (seeded) collections in a fresh
    AdminService simulator, and a fresh queue; the app runs through the session's
    Functions host."""
    built: list[Scenario] = []

    def make(*, seed: int, message_count: int = MESSAGES_PER_SCENARIO) -> Scenario:
        number = next(_scenario_numbers)
        sites = (f"A{number:02d}", f"B{number:02d}")
        workload = generate_workload(
            seed=seed, sites=sites, message_count=message_count, devices_per_site=24
        )
        # The exporter reads every site in the database: only this scenario's.
        fault_site_db.reset()
        record_ids = fault_site_db.load_workload(workload)
        adminservice = AdminServiceSimulator(
            local_ca,
            jwks_uri=fault_entra.jwks_uri,
            issuer=fault_entra.issuer_v1,  # the ConfigMgr server app gets v1.0 tokens
            admins=[SERVICE_ACCOUNT],
            devices=[*workload.devices, *BYSTANDERS],
            collections=COLLECTIONS,
            status_messages=StatusMessageReader.for_site_database(fault_site_db),
            site_database=fault_site_db,  # v_FullCollectionMembership follows
        ).start()
        ledger = Ledger(workload, record_ids)
        # Each collection starts with a bystander and with one device a request asks
        # for (that request must find it a member and add nothing).
        for index, collection_id in enumerate(sorted(COLLECTIONS)):
            ledger.initial[collection_id] = {BYSTANDERS[index].resource_id}
        for collection_id, resource_id in sorted(ledger.memberships()):
            if len(ledger.initial[collection_id]) < 2:
                ledger.initial[collection_id].add(resource_id)
        for collection_id, members in ledger.initial.items():
            adminservice.set_direct_members(collection_id, members)
        name = request.node.name.removeprefix("test_")
        current = Scenario(
            name=name,
            site_db=fault_site_db,
            azurite=fault_azurite,
            entra=fault_entra,
            adminservice=adminservice,
            ca=local_ca,
            app_root=app_root,
            queue_name=f"f{number:02d}-{uuid.uuid4().hex[:10]}",
            workload=workload,
            ledger=ledger,
            tuning=admin_tuning,
            figures=Figures(
                scenario=name, messages=len(workload.messages), requests=ledger.requests
            ),
            host=functions_host,
            monkeypatch=monkeypatch,
        )
        RESULTS.append(current.figures)
        built.append(current)
        return current

    yield make
    for current in built:
        if not current.figures.passed:  # the ledger sets it on success
            current.figures.seconds = time.monotonic() - current.started
        current.close()
        current.adminservice.stop()
    # A failed scenario must not leave the next one with a fault still in place.
    fault_entra.set_down(False)
    if not fault_site_db.running:
        fault_site_db.start()
    if not fault_azurite.running:
        fault_azurite.start()


class Trigger(Generic[Report]):
    """A progress callback (of the export or of the queue processing) that runs
    ``action`` once, as soon as ``condition`` holds: the fault lands mid-run,
    between two pages or two messages."""

    def __init__(self, condition: Callable[[Report], bool], action: Callable[[], None]) -> None:
        self._condition = condition
        self._action = action
        self.fired = False
        self.report: Report | None = None

    def __call__(self, report: Report) -> None:
        self.report = report  # the run's report so far, even if the run then raises
        if not self.fired and self._condition(report):
            self.fired = True
            self._action()


def restart_later(action: Callable[[], None], delay: float) -> threading.Thread:
    """Run ``action`` (bring a server back) after ``delay`` seconds, in the background,
    while the code under test keeps running into the outage."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, name="fault-heal", daemon=True)
    thread.start()
    return thread


# -- the suite's figures -----------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's figures, when any of its scenarios ran."""
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault injection ledger")
    write(
        f"scenarios run: {len(RESULTS)}   "
        f"status messages generated: {sum(f.messages for f in RESULTS)}   "
        f"(message, rule) requests: {sum(f.requests for f in RESULTS)}   "
        f"outcomes recorded: {sum(f.outcomes for f in RESULTS)}   "
        f"duplicates: {sum(f.duplicates for f in RESULTS)}   "
        f"wrong adds: {sum(f.wrong_adds for f in RESULTS)}   "
        f"scenario time: {sum(f.seconds for f in RESULTS):.0f}s"
    )
    width = max(len("scenario"), *(len(f.scenario) for f in RESULTS))
    write(
        f"{'scenario':<{width}} {'msgs':>5} {'reqs':>5} {'deliv':>6} {'failed':>6} "
        f"{'poison':>6} {'requeued':>8} {'outcomes':>8} {'adds':>5} {'dup':>4} {'wrong':>5} "
        f"{'secs':>6}  result"
    )
    for f in RESULTS:
        write(
            f"{f.scenario:<{width}} {f.messages:>5} {f.requests:>5} {f.deliveries:>6} "
            f"{f.failed_deliveries:>6} {f.poisoned:>6} {f.requeued:>8} {f.outcomes:>8} "
            f"{f.adds:>5} {f.duplicates:>4} {f.wrong_adds:>5} {f.seconds:>6.1f}  "
            f"{'ok' if f.passed else 'FAILED'}"
        )
