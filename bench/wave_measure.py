"""How ``bench/upgrade_wave.py`` measures: SQL statements from the server's own log, the
resident memory of this process, percentiles, and the AdminService call log."""

from __future__ import annotations

import math
import os
import re
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from azure.core.exceptions import AzureError

from devstack.adminservice.calls import Call
from devstack.queue_host import DrainReport, QueueTriggerListener

#: The login cm-remediate reads the site database with (devstack.sitedb.READER_LOGIN).
READER: Final = "cm_reader"

# One server log entry: "2024-11-04 06:00:00.123 UTC [pid] user@db LOG:  text"; the
# lines after it that start with a tab continue it (a statement over several lines).
_ENTRY = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] (?P<user>[^@\s]*)@\S* (?P<level>[A-Z]+):  "
    r"(?P<text>.*)$"
)
#: What the production SQL reads, by the view (and shape) of the statement.
_KINDS: Final = (
    ("sites", re.compile(r"GROUP BY SiteCode", re.IGNORECASE)),
    ("insertion strings", re.compile(r"\bv_StatMsgInsStrings\b", re.IGNORECASE)),
    ("status message pages", re.compile(r"\bv_StatusMessage\b", re.IGNORECASE)),
    ("device lookups (v_R_System)", re.compile(r"\bv_R_System\b", re.IGNORECASE)),
    ("membership reads", re.compile(r"\bv_FullCollectionMembership\b", re.IGNORECASE)),
)


@dataclass
class StatementCount:
    """Statements the reader login sent in one phase: the app's own, by what they read,
    and the ODBC driver's (psqlODBC's DEALLOCATE of a prepared plan, catalog lookups)."""

    app: Counter[str] = field(default_factory=Counter)
    driver: int = 0

    @property
    def app_total(self) -> int:
        """The app's statements, all kinds together."""
        return sum(self.app.values())

    def as_dict(self) -> dict[str, object]:
        """For the JSON file."""
        return {
            "app_statements": self.app_total,
            "app_by_kind": dict(self.app.most_common()),
            "driver_statements": self.driver,
            "all_statements": self.app_total + self.driver,
        }


def _classify(text: str) -> str | None:
    """The app statement's kind, or None for the driver's own."""
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return "other views" if re.search(r"\bv_\w+", text) else None


class StatementLog:
    """Counts the statements the site database received, from its server log
    (``log_statement = all``: every statement, logged as the server gets it).

    PostgreSQL has no ``pg_stat_statements`` here, and counting on the client would
    count calls, not what reached the server; the log shows both the app's statements
    (sent as prepared statements: ``execute <plan>: SELECT ...``) and what the driver
    adds around them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """Where the log ends now (the start of a phase)."""
        return self.path.stat().st_size

    def count(self, since: int, until: int | None = None) -> StatementCount:
        """The reader login's statements logged between two marks."""
        counted = StatementCount()
        entry: list[str] = []
        position = since
        with self.path.open("rb") as log:
            log.seek(since)
            for raw in log:  # line by line: the log of a large wave is hundreds of MB
                position += len(raw)
                if until is not None and position > until:
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("\t") and entry:
                    entry.append(line)
                    continue
                self._add(entry, counted)
                entry = [line] if _ENTRY.match(line) else []
        self._add(entry, counted)
        return counted

    @staticmethod
    def _add(entry: list[str], counted: StatementCount) -> None:
        if not entry:
            return
        match = _ENTRY.match(entry[0])
        if match is None or match["user"] != READER or match["level"] != "LOG":
            return
        text = "\n".join([match["text"], *entry[1:]])
        if not text.startswith(("statement:", "execute ")):
            return
        kind = _classify(text)
        if kind is None:
            counted.driver += 1
        else:
            counted.app[kind] += 1


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The peak resident memory of this process since it started."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """The peak resident memory of this process while the block runs (sampled every
    ``interval`` seconds: a shorter spike can slip between two samples)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mib(self) -> float:
        """The peak in MiB."""
        return self.peak / 2**20


class Drain:
    """The host's listener, draining as the host keeps polling, timed per settled
    request. A storage call of the listener that fails (Azurite stalls under load: a
    read timeout) ends one ``drain()`` call: its figures so far are kept, the error
    counted, and the next call goes on. The listener never settles what was still
    running then: those messages come back after its fetch visibility (10 minutes),
    their outcome already recorded."""

    def __init__(self, listener: QueueTriggerListener) -> None:
        self.listener = listener
        self.report = DrainReport()
        #: perf_counter() of every settled request.
        self.done: list[float] = []
        self.errors: Counter[str] = Counter()
        self._current: DrainReport | None = None

    def _settled(self, report: DrainReport) -> None:
        self.done.append(time.perf_counter())
        self._current = report

    def once(self) -> bool:
        """One ``drain()``: until nothing is visible and nothing runs. False when a
        storage call of the listener failed."""
        self._current = None
        try:
            self.report.merge(self.listener.drain(progress=self._settled))
        except AzureError as error:
            self.errors[f"{type(error).__name__}: {error}"[:300]] += 1
            if self._current is not None:
                self.report.merge(self._current)
            return False
        return True


def _stat_cpu_seconds(stat: Path) -> float | None:
    """User + system CPU seconds so far from a /proc ``stat`` file (Linux), else None."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command: state is field 3, utime field 14 and stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of another process so far, else None."""
    return None if pid is None else _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _thread_cpu_seconds(native_id: int | None) -> float:
    """CPU seconds of one of this process's threads so far (0 when unknown)."""
    if native_id is None:
        return 0.0
    return _stat_cpu_seconds(Path(f"/proc/self/task/{native_id}/stat")) or 0.0


class CpuUse:
    """The CPU this process (the host, the worker, the simulators) and Azurite (a node
    process of its own) used while the block ran: which one a phase waits for. With
    ``app_threads`` (the worker's pool), also the CPU of the functions themselves: what
    an instance on Azure spends, without the simulators and the host's own work."""

    def __init__(
        self,
        azurite_pid: int | None,
        app_threads: Callable[[], Sequence[threading.Thread]] | None = None,
    ) -> None:
        self._pid = azurite_pid
        self._app_threads = app_threads
        self.figures: dict[str, float | None] = {}

    def _app_cpu(self) -> dict[int, float]:
        threads = self._app_threads() if self._app_threads is not None else []
        return {t.native_id: _thread_cpu_seconds(t.native_id) for t in threads if t.native_id}

    def __enter__(self) -> CpuUse:
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._azurite = _cpu_seconds(self._pid)
        self._app = self._app_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        after = _cpu_seconds(self._pid)
        azurite = after - self._azurite if after is not None and self._azurite is not None else None
        # A pool thread started during the block counts from zero.
        app = sum(
            seconds - self._app.get(native_id, 0.0)
            for native_id, seconds in self._app_cpu().items()
        )
        self.figures = {
            "wall_seconds": wall,
            "this_process_cpu_seconds": own,
            "this_process_cores": own / wall if wall else None,
            "azurite_cpu_seconds": azurite,
            "azurite_cores": azurite / wall if azurite is not None and wall else None,
            "app_cpu_seconds": app if self._app_threads is not None else None,
            "app_cores": app / wall if self._app_threads is not None and wall else None,
        }


def rates_by_quarter(done: Sequence[float], started: float) -> list[float]:
    """Completions per second in each quarter of them (by completion time): whether a
    drain slows down as it goes."""
    times = sorted(done)
    if len(times) < 4:
        return []
    rates = []
    previous = started
    for quarter in range(4):
        chunk = times[len(times) * quarter // 4 : len(times) * (quarter + 1) // 4]
        span = chunk[-1] - previous
        rates.append(len(chunk) / span if span > 0 else 0.0)
        previous = chunk[-1]
    return rates


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` 0.5 is the median); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class RouteFigures:
    """AdminService calls of one route (kind) in one phase."""

    calls: int
    response_bytes: int
    statuses: dict[str, int]


def by_route(calls: Iterable[Call]) -> dict[str, RouteFigures]:
    """The calls by route (``metadata``, ``SMS_R_System``, ``AddMembershipRule``, ...)."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = {}
    for call in calls:
        route = call.route or "unrouted"
        counts[route] += 1
        sizes[route] += call.response_bytes
        statuses.setdefault(route, Counter())[str(call.status)] += 1
    return {
        route: RouteFigures(counts[route], sizes[route], dict(statuses[route]))
        for route, _ in counts.most_common()
    }
