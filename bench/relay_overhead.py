"""What the hybrid connection costs an export run, on the local stack.

Usage: .venv/bin/python bench/relay_overhead.py [--messages N] [--runs R]

Generates N status messages (default 5,000) and runs the same export R times (default
3, onto a fresh queue each time) three ways: straight to the PostgreSQL stand-in, and
through the app's relay tunnel, the relay double and each on-premises listener (Azure
Relay Bridge, Hybrid Connection Manager). Prints, per way, the median wall time and
rate, the extra time against the straight run, the tunnel links opened (a pooled ODBC
connection keeps its link: one per run while pages are read one after another) and the
median time to open one (connect, rendezvous, preamble), and the SQL statements per run,
which on Azure each cost a round trip to the relay and back (multiply by that latency).
The relay double runs on this machine, so its own network delay is none: what shows is
the tunnel's work (TLS to the relay, the WebSocket framing, two more hops).
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from devstack.datagen import generate_workload
from devstack.relay import (
    AuthorizationRule,
    HybridConnection,
    HybridConnectionManagerListener,
    RelayBridgeListener,
    RelayDouble,
)
from devstack.relay.agent import RelayAgent
from devstack.stack import LocalStack
from shared.app.overrides import Overrides
from shared.app.runtime import Runtime, quiet_sdk_logs
from shared.export.site_database import SiteDatabaseClient
from shared.platform.connection_strings import through_tunnel
from shared.platform.relay.tokens import SasTokens
from shared.platform.relay.tunnel import ListenerKind, RelayRoute, RelayTunnel
from shared.platform.settings import load_settings

PATH = "site-db"
SEND, LISTEN = "cmremediate-send", "onprem-listen"


class _Counted(SiteDatabaseClient):
    """The site database client, counting the statements it sends."""

    statements = 0

    def _execute(self, sql: str, params: Sequence[object]) -> list[Any]:
        type(self).statements += 1
        return super()._execute(sql, params)


def _export_once(stack: LocalStack, client: SiteDatabaseClient) -> tuple[float, int]:
    """One export onto a fresh queue (so a fresh watermark): seconds and messages read."""
    settings = load_settings(
        stack.settings_values(REMEDIATION_QUEUE=f"relay{uuid.uuid4().hex[:8]}")
    )
    runtime = Runtime(settings, overrides=Overrides(status_source=client))
    try:
        started = time.perf_counter()
        report = runtime.exporter.run()
        return time.perf_counter() - started, report.read
    finally:
        runtime.close()


def _listener(kind: ListenerKind, relay: RelayDouble, stack: LocalStack) -> RelayAgent:
    def token() -> str:
        return relay.sas_token(PATH, LISTEN)

    target = ("127.0.0.1", stack.site_db.port)
    if kind == "bridge":
        return RelayBridgeListener(
            relay.endpoint(PATH), token, targets={"sql": target}, ca_bundle=stack.ca.bundle_path
        )
    metadata = f'[{{"key":"endpoint","value":"127.0.0.1:{stack.site_db.port}"}}]'
    return HybridConnectionManagerListener(
        relay.endpoint(PATH), token, user_metadata=metadata, ca_bundle=stack.ca.bundle_path
    )


def _measure(
    runs: int, make_client: Callable[[], SiteDatabaseClient], stack: LocalStack
) -> tuple[list[float], int, int]:
    times, read = [], 0
    _Counted.statements = 0
    for _ in range(runs):
        with make_client() as client:
            seconds, read = _export_once(stack, client)
        times.append(seconds)
    return times, read, _Counted.statements // runs


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    quiet_sdk_logs()
    rows: list[tuple[str, float, int, int, int, float | None]] = []
    with LocalStack() as stack:
        workload = generate_workload(seed=11, sites=("PS1",), message_count=args.messages)
        stack.site_db.load_workload(workload)
        odbc = stack.site_db.reader_connection_string
        times, read, statements = _measure(args.runs, lambda: _Counted(odbc), stack)
        rows.append(("straight to SQL", statistics.median(times), read, statements, 0, None))
        hc = HybridConnection(
            PATH,
            rules=(
                AuthorizationRule.create(SEND, "Send"),
                AuthorizationRule.create(LISTEN, "Listen"),
            ),
        )
        with RelayDouble(stack.ca, hybrid_connections=[hc]) as relay:
            rule = relay.hybrid_connection(PATH).rule(SEND)
            assert rule is not None
            for kind in ("bridge", "hcm"):
                with _listener(kind, relay, stack) as listener:
                    listener.wait_online()
                    tunnel = RelayTunnel(
                        RelayRoute(relay.endpoint(PATH), PATH, kind),
                        SasTokens(relay.namespace, PATH, SEND, rule.primary_key),
                        ssl_context=ssl.create_default_context(cafile=str(stack.ca.bundle_path)),
                    )
                    tunnel.start()
                    times, read, statements = _measure(
                        args.runs,
                        lambda t=tunnel: _Counted(through_tunnel(odbc, t.port), path=t),  # type: ignore[misc]
                        stack,
                    )
                    tunnel.close()
                    opened = statistics.median(tunnel.stats.connect_seconds or [0.0])
                    rows.append(
                        (
                            f"tunnel, {'Azure Relay Bridge' if kind == 'bridge' else 'HCM'}",
                            statistics.median(times),
                            read,
                            statements,
                            tunnel.stats.connections // args.runs,
                            opened,
                        )
                    )
    straight = rows[0][1]
    print(f"export of {args.messages:,} generated status messages, median of {args.runs} runs")
    print(
        f"{'path':<30}{'seconds':>9}{'read/s':>9}{'extra':>9}{'links/run':>11}"
        f"{'open ms':>9}{'SQL/run':>9}"
    )
    for name, seconds, read, statements, links, connect in rows:
        extra = f"{seconds - straight:+.2f}s" if name != rows[0][0] else "-"
        open_ms = f"{connect * 1000:.1f}" if connect is not None else "-"
        print(
            f"{name:<30}{seconds:>9.2f}{read / seconds:>9,.0f}{extra:>9}"
            f"{links if connect is not None else '-':>11}{open_ms:>9}{statements:>9}"
        )


if __name__ == "__main__":
    main()
