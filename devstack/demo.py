"""``cmremediate demo``: the export on the local stack with the Microsoft 365 scenario."""

from __future__ import annotations

import base64
from collections import defaultdict

from azure.storage.queue import QueueClient
from rich.console import Console
from rich.table import Table

from devstack.datagen import m365_demo_scenario
from devstack.stack import LocalStack
from shared.cli import render_export, render_requests
from shared.queue_messages import RemediationRequest, decode
from shared.runtime import Runtime
from shared.settings import load_settings

_MESSAGE_KINDS = {39997: "info", 39998: "warning", 39999: "error"}


def _take_all(connection_string: str, queue_name: str) -> tuple[list[RemediationRequest], str]:
    """Every message on the queue, decoded, and the raw text of the first one."""
    client = QueueClient.from_connection_string(connection_string, queue_name)
    requests: list[RemediationRequest] = []
    first_raw = ""
    with client:
        while batch := list(
            client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=300)
        ):
            for message in batch:
                first_raw = first_raw or message.content
                requests.append(decode(base64.b64decode(message.content).decode("utf-8")))
    return requests, first_raw


def run_demo(console: Console) -> None:
    """Start the stack, load the scenario, run the export twice, show what happened."""
    console.rule("cm-remediate demo: export")
    console.print("Starting the local stack (PostgreSQL through ODBC, Azurite)...")
    with LocalStack() as stack:
        console.print(
            f"  site database stand-in: 127.0.0.1:{stack.site_db.port} "
            "(driver 'PostgreSQL Unicode', views v_StatusMessage, v_StatMsgInsStrings, ...)"
        )
        console.print(f"  Azurite: queue service on 127.0.0.1:{stack.azurite.queue_port}")
        workload = m365_demo_scenario()
        record_ids = stack.site_db.load_workload(workload)
        console.print(
            f"Loaded {len(workload.messages)} status messages from "
            f"{len({m.machine_name for m in workload.messages})} machines on sites "
            f"{', '.join(workload.sites)}."
        )

        runtime = Runtime(load_settings(stack.settings_values()))
        try:
            console.print(f"Rules: {', '.join(r.name for r in runtime.rules.rules)}")
            report = runtime.exporter.run()
            console.print(render_export(report))
            requests, first_raw = _take_all(
                stack.azurite.connection_string, runtime.settings.remediation_queue
            )
            again = runtime.exporter.run()
        finally:
            runtime.close()

        by_record: dict[int, list[RemediationRequest]] = defaultdict(list)
        for request in requests:
            by_record[request.record_id].append(request)
        table = Table(title="every status message and what the export did", title_justify="left")
        for column in ("site", "record", "machine", "message", "strings", "export"):
            table.add_column(column)
        for message, record_id in zip(workload.messages, record_ids, strict=True):
            matched = by_record.get(record_id, [])
            if matched:
                decision = "; ".join(f"→ {r.rule} ({r.collection_id})" for r in matched)
            elif message.message_id != 39997:
                decision = "[dim]ignored: not a 39997 message[/]"
            else:
                decision = "[dim]no rule matches[/]"
            strings = " | ".join(repr(s)[1:-1] for s in message.insertion_strings[:3] if s)
            table.add_row(
                message.site_code,
                str(record_id),
                repr(message.machine_name)[1:-1],
                f"{message.message_id} {_MESSAGE_KINDS.get(message.message_id, '')}",
                strings[:60] + ("…" if len(strings) > 60 else ""),
                decision,
            )
        console.print(table)
        console.print(render_requests(requests, f"queue '{runtime.settings.remediation_queue}'"))
        console.print(
            f"The queue holds {len(requests)} messages, base64 as the queue trigger expects; "
            f"the first one as stored: [dim]{first_raw[:72]}…[/]"
        )
        console.print(
            f"A second export run enqueued {again.enqueued} messages: everything was already "
            "exported, nothing is sent twice."
        )
    console.print("Local stack stopped.")
