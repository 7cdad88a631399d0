"""The demo (``python -m devstack.demo``, ``scripts/demo.sh``): the whole pipeline on the
local stack, Microsoft 365 scenario.

The functions run as Azure runs them: a :class:`FunctionsHost` drives
``function_app.py`` through Microsoft's Python worker library, the export timer fires
once, and the host's queue listener feeds the queue function; the app settings are the
local stack's, in the environment, as the host gives them to the worker.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from cmremediate_cli.console import configure_logging, console
from cmremediate_cli.render import render_export
from devstack.app_runtime import HOST_SETTINGS, app_settings, recording_runtime, succeeded
from devstack.datagen import (
    GENERIC_ERROR,
    GENERIC_INFO,
    GENERIC_WARNING,
    Workload,
    m365_demo_scenario,
)
from devstack.functions_host import REPO, FunctionsHost
from devstack.queue_host import QueueTriggerListener
from devstack.stack import LocalStack
from devstack.tls import LocalCA
from shared.app.runtime import reset_runtime
from shared.domain.outcomes import Outcome

EXPORT_FUNCTION = "export_status_messages"
QUEUE_FUNCTION = "apply_remediation"
_MESSAGE_KINDS = {GENERIC_INFO: "info", GENERIC_WARNING: "warning", GENERIC_ERROR: "error"}
_STYLE = {
    "added": "green",
    "already-member": "green",
    "removed": "green",
    "not-member": "green",
    "ambiguous": "yellow",
    "unknown-device": "yellow",
    "rejected-input": "red",
    "target-refused": "red",
}


@contextmanager
def functions_host(host: FunctionsHost | None = None) -> Iterator[FunctionsHost]:
    """``host`` if the caller runs one (one per process), else a host of our own."""
    if host is not None:
        yield host
        return
    with FunctionsHost(REPO) as own:
        yield own


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(
    console: Console,
    *,
    ca: LocalCA | None = None,
    host: FunctionsHost | None = None,
    export_source: str = "sitedb",
) -> None:
    """Start the stack, load the scenario, export, remediate, show every decision.

    The functions run through ``host`` when given (a process holds one), else through
    a Functions host the demo starts and stops. ``export_source="adminservice"`` reads
    the status messages (and devices) through the AdminService, with no
    SITE_DB_CONNECTION in the app's settings at all."""
    console.rule("cm-remediate demo")
    console.print("Starting the local stack...")
    with LocalStack(ca=ca) as stack:
        console.print(
            f"  site database stand-in  127.0.0.1:{stack.site_db.port} (PostgreSQL via ODBC "
            "over verified TLS, views v_StatusMessage, v_StatMsgInsStrings, v_R_System)\n"
            f"  Azurite                 queue 127.0.0.1:{stack.azurite.queue_port}, "
            f"table 127.0.0.1:{stack.azurite.table_port}\n"
            f"  Entra ID simulator      {stack.entra.authority}\n"
            f"  AdminService simulator  {stack.adminservice.cmg_url}\n"
            f"The export reads status messages from "
            + (
                "the AdminService (SMS_StatMsgWithInsStrings); the app has no SQL connection."
                if export_source == "adminservice"
                else "the site database over SQL."
            )
        )
        workload = m365_demo_scenario()
        record_ids = stack.load(workload)
        console.print(
            f"Loaded {len(workload.messages)} status messages from "
            f"{len({m.machine_name for m in workload.messages})} machines and "
            f"{len(workload.devices)} discovery records (duplicates included) on sites "
            f"{', '.join(workload.sites)}."
        )
        with (
            app_settings({**stack.settings_values(export_source=export_source), **HOST_SETTINGS}),
            functions_host(host) as functions,
        ):
            reset_runtime()
            try:
                _run_functions(console, stack, workload, record_ids, functions)
            finally:
                reset_runtime()
    console.print("Local stack stopped.")


def _run_functions(
    console: Console,
    stack: LocalStack,
    workload: Workload,
    record_ids: list[int],
    functions: FunctionsHost,
) -> None:
    """The timer, the queue and the report, through the Functions host."""
    console.print(
        f"  Functions host          {', '.join(sorted(functions.functions))} "
        "(indexed and invoked by Microsoft's Python worker library)"
    )
    # The very runtime the functions use: the same settings, its exports recorded.
    runtime, exports = recording_runtime()
    console.print(f"Rules: {', '.join(r.name for r in runtime.rules.rules)}\n")
    succeeded(functions.call_timer(EXPORT_FUNCTION))
    console.print(render_export(exports.reports[-1]))
    with QueueTriggerListener(functions, QUEUE_FUNCTION) as listener:
        drained = listener.drain()
        waiting = listener.depth()
    recorded = runtime.audit.query()
    outcomes: dict[tuple[str, int, str], Outcome] = {
        (o.site_code or "", o.record_id or 0, o.rule or ""): o for o in recorded
    }
    console.print(_decisions(workload, record_ids, outcomes))
    kinds = Counter(o.kind for o in recorded)
    console.print(
        f"\nThe queue function handled {drained.succeeded} messages: "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        + (f"; {drained.failed} failed" if drained.failed else "")
        + (f", {drained.poisoned} moved to the poison queue" if drained.poisoned else "")
        + (f"; {waiting} wait on the queue for a retry" if waiting else "")
        + f" (at most {drained.max_in_flight} at once)"
    )
    collections = Table(title="collections in the AdminService", title_justify="left")
    collections.add_column("collection")
    collections.add_column("direct members (ResourceID)")
    for rule in runtime.rules.rules:
        members = sorted(stack.adminservice.direct_members(rule.collection_id))
        collections.add_row(f"{rule.collection_id} ({rule.name})", ", ".join(map(str, members)))
    console.print(collections)
    succeeded(functions.call_timer(EXPORT_FUNCTION))
    again = exports.reports[-1]
    console.print(f"A second export run enqueued {again.enqueued} messages: nothing is sent twice.")


def _decisions(
    workload: Workload, record_ids: list[int], outcomes: dict[tuple[str, int, str], Outcome]
) -> Table:
    """One row per (status message, rule it matched), or per message that was not exported."""
    table = Table(title="every status message, device by device", title_justify="left")
    for column in ("site", "record", "machine", "message", "strings", "rule", "outcome", "why"):
        table.add_column(column, overflow="fold" if column == "why" else "ellipsis")
    rules_of: dict[tuple[str, int], list[str]] = {}
    for site, record_id, rule in outcomes:
        rules_of.setdefault((site, record_id), []).append(rule)
    for message, record_id in zip(workload.messages, record_ids, strict=True):
        strings = " | ".join(repr(s)[1:-1] for s in message.insertion_strings[:2] if s)
        base = [
            message.site_code,
            str(record_id),
            repr(message.machine_name)[1:-1],
            f"{message.message_id} {_MESSAGE_KINDS.get(message.message_id, '')}".strip(),
            _short(strings, 44),
        ]
        rules = sorted(rules_of.get((message.site_code, record_id), []))
        if not rules:
            why = "not a 39997 message" if message.message_id != GENERIC_INFO else "no rule matches"
            table.add_row(*base, "-", "[dim]not exported[/]", f"[dim]{why}[/]")
        for rule in rules:
            outcome = outcomes[(message.site_code, record_id, rule)]
            resource = f"resource {outcome.resource_id}: " if outcome.resource_id else ""
            table.add_row(
                *base,
                rule,
                f"[{_STYLE.get(outcome.kind, '')}]{outcome.kind}[/]",
                _short(resource + outcome.reason, 90),
            )
    return table


def main(argv: list[str] | None = None) -> int:
    """Start the local stack with sample data, run the whole pipeline, show every outcome."""
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=main.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="Log every decision.")
    parser.add_argument(
        "--export-source",
        choices=("sitedb", "adminservice"),
        default="sitedb",
        help="where the export reads status messages (EXPORT_SOURCE)",
    )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    run_demo(console, export_source=args.export_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
