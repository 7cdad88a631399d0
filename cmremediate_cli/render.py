"""Every table and JSON document the command line (and the demo) prints."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime

from rich.markup import escape
from rich.table import Table

from shared.app.health import Check, Status
from shared.domain.outcomes import Outcome
from shared.domain.requests import RemediationRequest
from shared.export.exporter import ExportReport
from shared.queue.local_host import ProcessReport
from shared.queue.poison import PoisonMessage
from shared.remediation.held import HeldRequest

_STATUS_COLUMNS = (
    "site",
    "newest 39997 (UTC)",
    "newest record",
    "exported up to",
    "last export",
    "state",
)
_OUTCOME_COLUMNS = (
    "recorded (UTC)",
    "site",
    "record",
    "machine",
    "resource",
    "rule",
    "collection",
    "outcome",
    "reason",
)


def when(value: datetime | None) -> str:
    """A UTC time to the second, or "-"."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _name(machine_name: str | None) -> str:
    """A machine name as sent, control characters visible."""
    return repr(machine_name)[1:-1] if machine_name else "-"


def render_requests(requests: list[RemediationRequest], title: str) -> Table:
    """An aligned table of queue messages, one row per (status message, rule)."""
    table = Table(title=title, title_justify="left")
    for column in ("site", "record", "time (UTC)", "machine", "rule", "collection", "action"):
        table.add_column(column, no_wrap=column in ("record", "collection"))
    for r in sorted(requests, key=lambda r: (r.site_code, r.record_id, r.rule)):
        table.add_row(
            r.site_code,
            str(r.record_id),
            r.time_utc.strftime("%Y-%m-%d %H:%M:%S"),
            _name(r.machine_name),
            r.rule,
            r.collection_id,
            r.action,
        )
    return table


def render_export(report: ExportReport) -> Table:
    """Per-site figures of one export run."""
    table = Table(title="export run", title_justify="left")
    for column in ("site", "read", "already seen", "matched", "enqueued", "floor", "high", "state"):
        table.add_column(column, justify="left" if column in ("site", "state") else "right")
    for site in report.sites.values():
        state = "busy (another run)" if site.busy else ("done" if site.complete else "more waiting")
        table.add_row(
            site.site_code,
            str(site.read),
            str(site.skipped_seen),
            str(site.matched),
            str(site.enqueued),
            str(site.floor_record_id),
            str(site.high_record_id),
            state,
        )
    return table


def export_report_json(report: ExportReport) -> dict[str, object]:
    """The report as plain JSON values."""
    return {
        "started_utc": report.started_utc.isoformat(),
        "ended_utc": report.ended_utc.isoformat() if report.ended_utc else None,
        "dry_run": report.dry_run,
        "bounded": report.bounded,
        "read": report.read,
        "enqueued": report.enqueued,
        "sites": {
            code: {
                "read": s.read,
                "already_seen": s.skipped_seen,
                "matched": s.matched,
                "enqueued": s.enqueued,
                "floor_record_id": s.floor_record_id,
                "high_record_id": s.high_record_id,
                "complete": s.complete,
                "busy": s.busy,
            }
            for code, s in report.sites.items()
        },
        "requests": [json.loads(r.to_json()) for r in report.requests],
    }


def render_process(report: ProcessReport) -> Table:
    """What one drain of the queue did."""
    table = Table(title="queue processing", title_justify="left")
    table.add_column("figure")
    table.add_column("count", justify="right")
    for kind, count in sorted(report.outcomes.items()):
        table.add_row(kind, str(count))
    for label, value in (
        ("retried later (device not discovered yet)", report.requeued),
        ("failed (left for a retry)", report.failed),
        ("moved to the poison queue", report.poisoned),
    ):
        table.add_row(label, str(value))
    return table


def process_json(report: ProcessReport) -> dict[str, object]:
    """The drain's figures as plain JSON values."""
    return {
        "processed": report.processed,
        "failed": report.failed,
        "poisoned": report.poisoned,
        "requeued": report.requeued,
        "outcomes": dict(report.outcomes),
    }


def render_sites(figures: Status) -> Table:
    """Export progress per site."""
    sites = Table(title="export per site", title_justify="left")
    for column in _STATUS_COLUMNS:
        sites.add_column(column)
    for site in figures.sites:
        sites.add_row(
            site.site_code,
            when(site.newest_time_utc),
            str(site.newest_record_id or "-"),
            str(site.exported_high_record_id or "-"),
            when(site.last_export_utc),
            "caught up" if site.caught_up else "[yellow]behind[/]",
        )
    return sites


def render_outcome_counts(figures: Status) -> Table:
    """Outcomes of the last 24 hours, by kind."""
    outcomes = Table(title="outcomes in the last 24 h", title_justify="left")
    outcomes.add_column("outcome")
    outcomes.add_column("count", justify="right")
    for kind, count in sorted(figures.outcomes_24h.items()):
        outcomes.add_row(kind, str(count))
    return outcomes


def outcome_json(outcome: Outcome) -> dict[str, object]:
    """One audit row as plain JSON values."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in asdict(outcome).items()
        if k != "new"
    }


def render_outcomes(found: list[Outcome]) -> Table:
    """Audit rows, as given (newest first)."""
    table = Table(title=f"{len(found)} outcomes, newest first", title_justify="left")
    for column in _OUTCOME_COLUMNS:
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for o in found:
        table.add_row(
            when(o.recorded_utc),
            o.site_code or "-",
            str(o.record_id or "-"),
            _name(o.machine_name),
            str(o.resource_id or "-"),
            o.rule or "-",
            o.collection_id or "-",
            _kind_in_chain(o),
            o.reason,
        )
    return table


def _kind_in_chain(o: Outcome) -> str:
    """The outcome, with its place among the decisions about its (message, rule)."""
    text = o.kind + (" (dry run)" if o.dry_run else "")
    if o.decision > 1:
        text += f" (decision {o.decision}, after {o.decision - 1})"
    if o.retried_as is not None:
        text += f" → decided again as {o.retried_as} by {o.retried_by or '?'}"
    return text


def poison_json(message: PoisonMessage) -> dict[str, object]:
    """One poisoned message as plain JSON values."""
    return {
        "id": message.id,
        "inserted_utc": message.inserted_utc.isoformat() if message.inserted_utc else None,
        "dequeue_count": message.dequeue_count,
        "body": message.body,
        "problem": message.problem,
    }


def render_poison(messages: list[PoisonMessage], queue_name: str) -> Table:
    """Poisoned messages, with the request each carries when it decodes."""
    table = Table(title=f"{queue_name}: {len(messages)} shown", title_justify="left")
    for column in ("id", "inserted (UTC)", "site", "record", "machine", "collection", "problem"):
        table.add_column(column)
    for m in messages:
        r = m.request
        table.add_row(
            m.id,
            when(m.inserted_utc),
            r.site_code if r else "-",
            str(r.record_id) if r else "-",
            _name(r.machine_name) if r else "-",
            r.collection_id if r else "-",
            m.problem or "",
        )
    return table


def held_json(held: list[HeldRequest]) -> list[dict[str, object]]:
    """Held adds as plain JSON values."""
    return [{"id": h.id, **outcome_json(h.outcome)} for h in held]


def render_held(held: list[HeldRequest]) -> Table:
    """Held adds, oldest first, with who released them."""
    table = Table(title=f"{len(held)} held add(s), oldest first", title_justify="left")
    for column in ("id", "held (UTC)", "machine", "resource", "collection", "state", "reason"):
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for h in held:
        o = h.outcome
        state = "dry run" if o.dry_run else f"released by {o.decided_by}" if o.released else "held"
        table.add_row(
            h.id,
            when(o.recorded_utc),
            _name(h.request.machine_name),
            str(o.resource_id or "-"),
            h.request.collection_id,
            state,
            o.reason,
        )
    return table


def render_check(check: Check) -> list[str]:
    """One dependency check as console markup lines: the verdict, the fix if it failed,
    then one line per warning (each names its rule and collection)."""
    mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
    lines = [f"{mark} {check.name}: {check.detail}"]
    if not check.ok:
        lines.append(f"     fix: {check.hint}")
    lines += [f"[yellow]warn[/] {escape(warning)}" for warning in check.warnings]
    return lines
