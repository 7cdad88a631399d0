"""One export run: new 39997 status messages → remediation requests on the queue.

Per site: read pages above the floor, skip rows already examined, enqueue one request
per (status message, matching rule), then checkpoint. Enqueue happens before the
checkpoint, so a crash in between re-sends (at-least-once) and never loses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain.clock import Clock, utc_now
from shared.domain.ports import ProgressStore, RequestSender, SiteLease, StatusMessageSource
from shared.domain.requests import RemediationRequest
from shared.domain.rules import RuleSet
from shared.domain.status_messages import StatusMessage
from shared.export.watermark import Scan, SiteWatermark

log = logging.getLogger(__name__)


@dataclass
class SiteReport:
    """What one run did for one site."""

    site_code: str
    read: int = 0
    skipped_seen: int = 0
    matched: int = 0
    enqueued: int = 0
    floor_record_id: int = 0
    high_record_id: int = 0
    complete: bool = False
    busy: bool = False
    #: Time of the newest status message read this run (the site's clock, UTC).
    newest_time_utc: datetime | None = None

    def lag_seconds(self, now: datetime) -> float:
        """How far behind the export is: 0 once the run read everything there was,
        else the age of the newest message it reached."""
        if self.complete or self.newest_time_utc is None:
            return 0.0
        return max(0.0, (now - self.newest_time_utc).total_seconds())


@dataclass
class ExportReport:
    """What one run did, per site, and whether it stopped at the per-run bound."""

    started_utc: datetime
    ended_utc: datetime | None = None
    sites: dict[str, SiteReport] = field(default_factory=dict)
    bounded: bool = False
    dry_run: bool = False
    requests: list[RemediationRequest] = field(default_factory=list)

    @property
    def read(self) -> int:
        """Status messages examined for the first time, over all sites."""
        return sum(s.read for s in self.sites.values())

    @property
    def enqueued(self) -> int:
        """Queue messages sent, over all sites."""
        return sum(s.enqueued for s in self.sites.values())


@dataclass
class _SiteRun:
    site_code: str
    lease: SiteLease
    state: SiteWatermark
    etag: str | None
    pages: Iterator[list[StatusMessage]]
    report: SiteReport
    reached: int
    last_save: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class ExportOptions:
    """Tuning of one exporter (from settings; the tests shrink the numbers)."""

    overlap: timedelta = timedelta(minutes=10)
    max_messages_per_run: int = 50_000
    start_time_utc: datetime | None = None
    page_size: int = 1000
    checkpoint_seconds: float = 5.0


class Exporter:
    """Runs exports; holds no state between runs besides its clients."""

    def __init__(
        self,
        *,
        status_source: StatusMessageSource,
        request_sender: RequestSender,
        progress_store: ProgressStore[SiteWatermark],
        rules: RuleSet,
        options: ExportOptions,
        clock: Clock = utc_now,
    ) -> None:
        self._source = status_source
        self._sender = request_sender
        self._progress = progress_store
        self._rules = rules
        self._options = options
        self._clock = clock

    def run(
        self,
        *,
        dry_run: bool = False,
        progress: Callable[[ExportReport], None] | None = None,
    ) -> ExportReport:
        """One export run over every site; safe to repeat and to overlap with another.
        ``progress`` hears about every page."""
        report = ExportReport(started_utc=self._clock(), dry_run=dry_run)
        runs = self._open_sites(report)
        try:
            budget = self._options.max_messages_per_run
            # Round-robin by page, so one site's backlog cannot starve the others.
            while budget > 0 and any(not r.done for r in runs):
                for run in runs:
                    if not run.done and budget > 0:
                        budget -= self._export_page(run, budget, dry_run, report)
                        if progress is not None:
                            progress(report)
            report.bounded = any(not r.done for r in runs)
            if report.bounded:
                log.warning(
                    "export stopped at EXPORT_MAX_MESSAGES_PER_RUN=%d; the rest waits for "
                    "the next run",
                    self._options.max_messages_per_run,
                )
            for run in runs:
                self._finish(run, report, dry_run)
        except BaseException:
            # Keep what was already enqueued, so the next run does not send it again.
            if not dry_run:
                for run in runs:
                    self._save_progress_after_failure(run)
            raise
        finally:
            for run in runs:
                run.lease.release()
        report.ended_utc = self._clock()
        log.info(
            "export finished: read=%d enqueued=%d sites=%s bounded=%s",
            report.read,
            report.enqueued,
            ",".join(report.sites) or "-",
            report.bounded,
        )
        return report

    def _open_sites(self, report: ExportReport) -> list[_SiteRun]:
        runs: list[_SiteRun] = []
        for summary in self._source.sites():
            site = summary.site_code
            lease = self._progress.lock(site)
            if lease is None:
                log.warning("site=%s: another export run holds this site; skipped this time", site)
                report.sites[site] = SiteReport(site_code=site, busy=True)
                continue
            try:
                state, etag = self._progress.load(site)
            except BaseException:
                lease.release()
                raise
            if state is None:
                state = SiteWatermark(site_code=site, start_time_utc=self._options.start_time_utc)
                log.info(
                    "site=%s: first export; reading messages %s",
                    site,
                    f"from {state.start_time_utc.isoformat()}"
                    if state.start_time_utc
                    else "still in the database",
                )
            site_report = SiteReport(
                site_code=site,
                floor_record_id=state.floor_record_id,
                high_record_id=state.high_record_id,
            )
            report.sites[site] = site_report
            pages = self._source.iter_pages(
                site,
                after_record_id=state.floor_record_id,
                page_size=self._options.page_size,
                since=state.start_time_utc,
            )
            runs.append(
                _SiteRun(
                    site,
                    lease,
                    state,
                    etag,
                    pages,
                    site_report,
                    reached=state.floor_record_id,
                    last_save=time.monotonic(),
                )
            )
        return runs

    def _export_page(self, run: _SiteRun, budget: int, dry_run: bool, report: ExportReport) -> int:
        """Export the site's next page within ``budget``; return how many new rows it took."""
        page = next(run.pages, None)
        if page is None:
            run.done = True
            return 0
        taken: list[StatusMessage] = []
        for message in page:
            if run.state.is_examined(message.record_id):
                run.report.skipped_seen += 1
                run.reached = message.record_id
                continue
            if len(taken) == budget:
                break  # the rest of the page waits for the next run
            taken.append(message)
            run.reached = message.record_id
        self._enqueue(taken, run.report, report, dry_run)
        run.state.mark_examined(m.record_id for m in taken)
        if len(taken) < len(page) and len(taken) == budget:
            return len(taken)  # bounded: leave the site unfinished
        if not dry_run and time.monotonic() - run.last_save >= self._options.checkpoint_seconds:
            self._save(run)
        return len(taken)

    def _enqueue(
        self, messages: list[StatusMessage], site: SiteReport, report: ExportReport, dry_run: bool
    ) -> None:
        """One queue message per (status message, matching rule); log each decision."""
        requests = [
            RemediationRequest.for_match(message, rule, exported_utc=self._clock())
            for message in messages
            for rule in self._rules.matching(message)
        ]
        if dry_run:
            report.requests.extend(requests)
        else:
            self._sender.send(requests)
        for request in requests:
            log.info(
                "%s site=%s record=%d machine=%r collection=%s rule=%s action=%s",
                "would enqueue" if dry_run else "enqueued",
                request.site_code,
                request.record_id,
                request.machine_name,
                request.collection_id,
                request.rule,
                request.action,
                extra=request.log_attributes(),
            )
        site.read += len(messages)
        if messages:
            newest = max(m.time_utc for m in messages)
            if site.newest_time_utc is None or newest > site.newest_time_utc:
                site.newest_time_utc = newest
        site.matched += len({r.record_id for r in requests})
        site.enqueued += 0 if dry_run else len(requests)

    def backfill(
        self,
        *,
        since: datetime | None = None,
        site_code: str | None = None,
        after_record_id: int = 0,
        dry_run: bool = False,
        update_watermark: bool = False,
        progress: Callable[[ExportReport], None] | None = None,
    ) -> ExportReport:
        """Re-read from a time or a RecordID, ignoring the saved watermark, and enqueue
        every match again. Redeliveries are harmless (the audit keeps the first outcome).
        With ``update_watermark`` the rows read count as examined for the timer's runs."""
        report = ExportReport(started_utc=self._clock(), dry_run=dry_run)
        sites = [site_code] if site_code else [s.site_code for s in self._source.sites()]
        for site in sites:
            site_report = report.sites.setdefault(site, SiteReport(site_code=site))
            read: list[int] = []
            for page in self._source.iter_pages(
                site,
                after_record_id=after_record_id,
                page_size=self._options.page_size,
                since=since,
            ):
                self._enqueue(page, site_report, report, dry_run)
                read += [m.record_id for m in page]
                if progress is not None:
                    progress(report)
            site_report.complete = True
            if update_watermark and not dry_run and read:
                state, etag = self._progress.load(site)
                state = state or SiteWatermark(
                    site_code=site, start_time_utc=self._options.start_time_utc
                )
                state.mark_examined(read)
                state, _ = self._progress.save_merged(state, etag, self._options.overlap)
                site_report.floor_record_id = state.floor_record_id
                site_report.high_record_id = state.high_record_id
        report.ended_utc = self._clock()
        log.info(
            "backfill finished: read=%d enqueued=%d sites=%s watermark %s",
            report.read,
            report.enqueued,
            ",".join(report.sites) or "-",
            "updated" if update_watermark and not dry_run else "untouched",
        )
        return report

    def _save(self, run: _SiteRun) -> None:
        if not run.lease.renew():
            log.warning("site=%s: lost the site lease; continuing, writes stay safe", run.site_code)
        run.state.updated_utc = self._clock()
        run.state, run.etag = self._progress.save_merged(run.state, run.etag, self._options.overlap)
        run.last_save = time.monotonic()

    def _save_progress_after_failure(self, run: _SiteRun) -> None:
        try:
            self._save(run)
        except Exception as error:  # the original failure matters more
            log.warning(
                "site=%s: could not save progress after a failure (%s); the next run "
                "re-sends what this one enqueued since its last checkpoint",
                run.site_code,
                error,
            )

    def _finish(self, run: _SiteRun, report: ExportReport, dry_run: bool) -> None:
        run.report.complete = run.done
        if dry_run:
            return
        run.state.complete_scan(
            Scan(
                started_utc=report.started_utc,
                ended_utc=self._clock(),
                reached_record_id=max(run.reached, run.state.floor_record_id),
            ),
            self._options.overlap,
        )
        self._save(run)
        run.report.floor_record_id = run.state.floor_record_id
        run.report.high_record_id = run.state.high_record_id
        log.info(
            "site=%s: read=%d already-seen=%d matched=%d enqueued=%d floor=%d high=%d%s",
            run.site_code,
            run.report.read,
            run.report.skipped_seen,
            run.report.matched,
            run.report.enqueued,
            run.state.floor_record_id,
            run.state.high_record_id,
            "" if run.done else " (more waiting)",
        )
