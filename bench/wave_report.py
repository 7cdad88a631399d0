"""What ``bench/upgrade_wave.py`` shows: the table on the terminal, the JSON file of every
figure and parameter, and the bar chart (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def write_json(results: dict[str, Any], path: Path) -> Path:
    """Every figure and parameter, as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} s"


def _size(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB" if value >= 2**20 else f"{value:,.0f} B"


def _mix(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in counts.items()) or "-"


def _statements(sql: dict[str, Any], requests: int | None = None) -> str:
    per = f", {sql['app_statements'] / requests:.2f} per request" if requests else ""
    return (
        f"{sql['app_statements']:,} by the app{per} ({_mix(sql['app_by_kind'])}); "
        f"{sql['driver_statements']:,} by the ODBC driver (DEALLOCATE, catalog)"
    )


def _cpu(cpu: dict[str, Any]) -> str:
    def cores(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    functions = (
        f" (of it the functions, on the worker's threads, {cores(cpu['app_cores'])})"
        if cpu.get("app_cores") is not None
        else ""
    )
    return (
        f"this process {cores(cpu['this_process_cores'])} cores{functions}, Azurite "
        f"{cores(cpu['azurite_cores'])} cores (CPU seconds per second of the phase)"
    )


def table_lines(results: dict[str, Any]) -> list[str]:
    """The table, line by line."""
    p, export, drain = results["parameters"], results["export"], results["drain"]
    admin, base, bound = results["adminservice"], results["baseline"], results["bound"]
    raw, dup = results["raw_queue"], results["duplicates"]
    rules_per = ", ".join(
        f"{n:,} with {k}" for k, n in dup["direct_rules_per_added_device"].items()
    )
    lines = [
        f"remediation wave: {p['messages']:,} status messages, AdminService latency "
        f"{p['latency_ms']:g} ms, identity {p['identity']}",
        f"workload      : {_mix(p['message_mix'])}; {p['devices']:,} devices "
        f"({p['discovery_records']:,} discovery records: {p['reimaged_devices']:,} re-imaged, "
        f"{p['tied_devices']:,} tied), {p['unknown_machines']:,} unknown machines; "
        f"{p['preexisting']:,} direct rules already in {p['fleet_collection']}",
        f"export        : one timer tick through the worker, {_seconds(export['seconds'])}: "
        f"read {export['status_messages_read']:,} ({_rate(export['rows_per_second'])}), "
        f"enqueued {export['enqueued']:,} ({_rate(export['enqueued_per_second'])}; "
        f"{export['expected_requests']:,} expected)",
        f"  SQL         : {_statements(export['sql'])}",
        f"  peak RSS    : {export['peak_rss_mib']:,.0f} MiB during the export "
        f"(process peak {results['process_peak_rss_mib']:,.0f} MiB)",
        f"  CPU         : {_cpu(export['cpu'])}",
        f"drain         : {drain['invocations']:,} invocations in {_seconds(drain['seconds'])} "
        f"({_rate(drain['requests_per_second'])}), up to {drain['max_in_flight']} in flight "
        f"(host.json {drain['batch_size']} + {drain['new_batch_threshold']}; worker threads "
        f"{bound['worker_threads']})",
        "  by quarter  : "
        + (", ".join(f"{r:,.1f}/s" for r in drain["requests_per_second_by_quarter"]) or "-")
        + " (requests settled per second, first to last quarter of them)",
        f"  CPU         : {_cpu(drain['cpu'])}",
        f"  functions   : {drain['app_cpu_ms_per_request']:.1f} ms of CPU per request, "
        f"{drain['app_cpu_ms_per_added_device']:.1f} ms per added device",
        f"  invocation  : p50 {_seconds(drain['invocation_seconds_p50'])}, p95 "
        f"{_seconds(drain['invocation_seconds_p95'])} (request to response, waiting for a "
        "worker thread included)",
        f"  added       : {drain['added_in_first_pass']:,} devices into collections "
        f"({_rate(drain['devices_added_per_second'])}); {drain['distinct_devices_added']:,} "
        f"distinct devices ({_rate(drain['distinct_devices_per_second'])})",
        f"  membership  : p50 {_seconds(drain['membership_seconds_p50'])}, p95 "
        f"{_seconds(drain['membership_seconds_p95'])}, max "
        f"{_seconds(drain['membership_seconds_max'])} from the start of the wave "
        "(export included)",
        f"  outcomes    : {_mix(drain['outcomes'])}",
        f"  queue       : {drain['left_on_queue']:,} left on it "
        f"({drain['expected_unknown_device_requests']:,} requests for unknown devices, tried "
        f"again later); failed invocations {drain['failed_invocations']:,}, poisoned "
        f"{drain['poisoned']:,} (poison queue {drain['poison_queue_depth']:,}); "
        f"{drain['retrying_after_first_pass']:,} back for a retry after the first pass, "
        + ("all settled" if drain["settled"] else "NOT all settled")
        + f" after {_seconds(drain['seconds_until_settled'])}",
        *(f"  failure     : {n}x {error}" for error, n in drain["failures"].items()),
        *(
            f"  listener    : {n}x {error} (the host's own storage call; drained on)"
            for error, n in drain["listener_storage_errors"].items()
        ),
        f"  SQL         : {_statements(drain['sql'], drain['invocations'])}",
        f"  tokens      : {drain['token_requests']:,} token request(s) to Entra ID",
        f"  peak RSS    : {drain['peak_rss_mib']:,.0f} MiB during the drain",
        f"  duplicates  : direct rules per added device: {rules_per or '-'}; most successful "
        f"adds of one pair {dup['most_successful_adds_of_one_pair']}; fleet "
        f"{dup['fleet_direct_rules']:,} rules {'intact' if dup['fleet_intact'] else 'CHANGED'}",
        f"AdminService  : {admin['calls']:,} calls ({admin['calls_per_added_device']:.2f} per "
        f"added device), {_size(admin['response_bytes'])} "
        f"({_size(admin['response_bytes_per_added_device'])} per added device)",
    ]
    for route, figures in admin["by_route"].items():
        lines.append(
            f"  {route:<28}: {figures['calls']:,} calls ({figures['per_added_device']:.2f} per "
            f"added device), {_size(figures['response_bytes_per_added_device'])} per added "
            f"device; status {_mix(figures['statuses'])}"
        )
    lines += [
        f"baseline      : {base['devices']:,} devices one at a time (lookup, "
        f"AddMembershipRule, RequestRefresh) in {_seconds(base['seconds'])}: "
        f"{_rate(base['devices_per_second'])}, {base['calls_per_device']:.2f} calls per device",
        f"bound         : {bound['concurrency']} in flight / ({bound['latency_seconds']:g} s x "
        f"{bound['calls_per_added_device'] or 0:.2f} calls per added device) = "
        f"{_rate(bound['devices_per_second'])}; at the worker's {bound['worker_threads']} "
        f"threads: {_rate(bound['devices_per_second_at_worker_threads'])}; CPU: 1 core / "
        f"{bound['app_cpu_ms_per_added_device'] or 0:.1f} ms per added device = "
        f"{_rate(bound['cpu_devices_per_second'])}",
        f"raw queue     : {raw['messages']:,} small messages, {raw['workers']} senders, "
        f"{_seconds(raw['seconds'])}: {_rate(raw['messages_per_second'])}; the export's "
        f"enqueue rate is {raw['export_enqueue_share']:.0%} of it",
    ]
    ours = drain["devices_added_per_second"]
    versus = [f"{ours / base['devices_per_second']:,.1f}x the baseline"]
    for key, label in (
        ("devices_per_second", "of the bound"),
        ("devices_per_second_at_worker_threads", "of the bound at the worker's threads"),
        ("cpu_devices_per_second", "of the CPU bound"),
    ):
        if bound[key]:
            versus.append(f"{ours / bound[key]:.0%} {label}")
    lines.append(f"comparison    : {_rate(ours)} devices added = {', '.join(versus)}")
    return lines


def print_table(results: dict[str, Any], *, echo: Callable[[str], None] = print) -> list[str]:
    """Print the table; return its lines."""
    lines = table_lines(results)
    for line in lines:
        echo(line)
    return lines


def write_chart(results: dict[str, Any], path: Path) -> Path:
    """Two bar charts: devices added per second (this project, the baseline, the
    bounds) and the export's enqueue rate beside the raw queue's."""
    bound = results["bound"]
    devices = [
        ("cm-remediate\n(wave)", results["drain"]["devices_added_per_second"], "#2b7bba"),
        ("baseline\n(per device)", results["baseline"]["devices_per_second"], "#999999"),
        (f"bound\n({bound['concurrency']} in flight)", bound["devices_per_second"], "#e0a030"),
        (
            f"bound\n({bound['effective_concurrency']} threads)",
            bound["devices_per_second_at_worker_threads"],
            "#f0c870",
        ),
        ("CPU bound\n(1 core)", bound["cpu_devices_per_second"], "#c05050"),
    ]
    queue = [
        ("export\nenqueue", results["export"]["enqueued_per_second"], "#2b7bba"),
        ("export\nread (rows)", results["export"]["rows_per_second"], "#7fb2db"),
        ("raw queue\nsend", results["raw_queue"]["messages_per_second"], "#999999"),
    ]
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    p = results["parameters"]
    figure.suptitle(
        f"remediation wave: {p['messages']:,} status messages, AdminService latency "
        f"{p['latency_ms']:g} ms, identity {p['identity']}"
    )
    for axes, bars, title, unit in (
        (figure.add_subplot(1, 2, 1), devices, "devices added per second", "devices/s"),
        (figure.add_subplot(1, 2, 2), queue, "export vs raw queue", "messages/s"),
    ):
        shown = [(label, value or 0.0, colour) for label, value, colour in bars]
        drawn = axes.bar([b[0] for b in shown], [b[1] for b in shown], color=[b[2] for b in shown])
        axes.bar_label(drawn, labels=[f"{b[1]:,.1f}" for b in shown])
        axes.set_title(title)
        axes.set_ylabel(unit)
        axes.margins(y=0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
