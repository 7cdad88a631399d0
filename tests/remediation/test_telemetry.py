"""The metrics of an end-to-end run, read with an in-memory metric reader: export and
remediation through Microsoft's worker on the local stack, every figure checked against
what the run did by construction (the workload, the simulator's own call log)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Sum,
)

from devstack.datagen import M365_RULES, generate_workload
from shared.domain.devices import netbios_problem
from shared.platform.telemetry import METER_NAME, SPECS
from tests.conftest import InvocationFailed
from tests.remediation.conftest import body_of, fixture, install_fixed_clock_runtime

pytestmark = pytest.mark.stack

RULE_COLLECTION = {r["name"]: r["collection_id"] for r in M365_RULES}

Key = tuple[str, frozenset[tuple[str, object]]]


@dataclass
class Points:
    """One reading of every point of the app's meter: sums, histogram counts and sums,
    gauge values, by (metric name, attributes)."""

    values: dict[Key, float] = field(default_factory=dict)
    counts: dict[Key, int] = field(default_factory=dict)

    def since(self, before: Points, name: str) -> dict[frozenset[tuple[str, object]], float]:
        """What a counter or histogram (its sum) added since ``before``, by attributes."""
        return {
            attrs: value - before.values.get((metric, attrs), 0)
            for (metric, attrs), value in self.values.items()
            if metric == name and value != before.values.get((metric, attrs), 0)
        }

    def counted(self, before: Points, name: str) -> dict[frozenset[tuple[str, object]], int]:
        """How many values a histogram recorded since ``before``, by attributes."""
        return {
            attrs: count - before.counts.get((metric, attrs), 0)
            for (metric, attrs), count in self.counts.items()
            if metric == name and count != before.counts.get((metric, attrs), 0)
        }

    def gauge(self, name: str) -> dict[frozenset[tuple[str, object]], float]:
        """A gauge's last values, by attributes."""
        return {attrs: v for (metric, attrs), v in self.values.items() if metric == name}


@pytest.fixture(scope="session")
def metric_reader() -> Iterator[InMemoryMetricReader]:
    """The process's meter provider, read in memory (set once: the OpenTelemetry API
    allows one; the app's instruments, created earlier or later, bind to it)."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    yield reader


def read(reader: InMemoryMetricReader) -> Points:
    points = Points()
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != METER_NAME:
                continue
            for metric in scope.metrics:
                assert metric.name in SPECS, f"{metric.name} is not in the catalogue"
                for point in metric.data.data_points:
                    attrs = frozenset(dict(point.attributes or {}).items())
                    assert {k for k, _ in attrs} == set(SPECS[metric.name].attributes)
                    key = (metric.name, attrs)
                    if isinstance(metric.data, (Sum, Gauge)):
                        points.values[key] = float(point.value)  # type: ignore[union-attr]
                    elif isinstance(metric.data, Histogram):
                        points.values[key] = float(point.sum)  # type: ignore[union-attr]
                        points.counts[key] = int(point.count)  # type: ignore[union-attr]
    return points


def by(attrs: frozenset[tuple[str, object]], *names: str) -> tuple[object, ...]:
    found = dict(attrs)
    return tuple(found[n] for n in names)


def test_the_metrics_of_an_end_to_end_run(metric_reader, make_remediation, monkeypatch, caplog):
    remediation = make_remediation()
    workload = generate_workload(seed=47, sites=("PS1", "PS2"), message_count=300)
    remediation.stack.site_db.reset()
    record_ids = remediation.stack.site_db.load_workload(workload)
    remediation.adminservice.clear_devices()
    for device in workload.devices:
        remediation.adminservice.add_device(device)
    monkeypatch.setenv("REMEDIATION_RULES_FILE", "rules.json")
    remediation.runtime = install_fixed_clock_runtime()
    for collection_id in RULE_COLLECTION.values():
        remediation.adminservice.set_direct_members(collection_id, ())
    calls_before = len(remediation.adminservice.calls)
    before = read(metric_reader)

    remediation.app.export()
    exported = read(metric_reader)
    with (
        caplog.at_level(logging.INFO, logger="shared.remediation.remediator"),
        remediation.app.listener(visibility_timeout_seconds=0) as listener,
    ):
        report = listener.drain_until_empty()
    assert report.poisoned == 0
    after = read(metric_reader)

    # -- the export, by construction of the workload ------------------------------------
    per_site = Counter(m.site_code for m in workload.messages if m.message_id == 39997)
    wanted = Counter(m.site_code for m in workload.messages for _ in m.expected_rules)
    assert exported.since(before, "cmremediate.export.runs") == {frozenset({("bounded", False)}): 1}
    assert {
        by(a, "site_code")[0]: v
        for a, v in exported.since(before, "cmremediate.export.messages_read").items()
    } == per_site
    assert {
        by(a, "site_code")[0]: v
        for a, v in exported.since(before, "cmremediate.export.requests_enqueued").items()
    } == wanted
    lag = {by(a, "site_code")[0]: v for a, v in exported.gauge("cmremediate.export.lag").items()}
    assert lag["PS1"] == lag["PS2"] == 0  # the run read everything there was
    depth = {by(a, "queue")[0]: v for a, v in exported.gauge("cmremediate.queue.depth").items()}
    assert depth == {"remediation": sum(wanted.values()), "poison": 0}

    # -- the outcomes, against what the run must have decided ----------------------------
    expected: Counter[tuple[str, str]] = Counter()
    for message in workload.messages:
        resolution = workload.expected_resolution.get(message.machine_name.upper())
        for rule in message.expected_rules:
            if netbios_problem(message.machine_name):
                kind = "rejected-input"
            elif isinstance(resolution, int):
                kind = "added"
            else:
                kind = resolution or "unknown-device"
            expected[(kind, rule)] += 1
    counted: Counter[tuple[object, ...]] = Counter()
    for attrs, n in after.since(exported, "cmremediate.outcomes").items():
        counted[by(attrs, "kind", "rule")] += int(n)
    # a device named by several messages is added once, then already a member
    merged = Counter({key: n for key, n in counted.items() if key[0] not in ("already-member",)})
    for (kind, rule), n in counted.items():
        if kind == "already-member":
            merged[("added", rule)] += n
    assert merged == expected
    for attrs in after.since(exported, "cmremediate.outcomes"):
        kind, rule, collection, site, dry = by(
            attrs, "kind", "rule", "collection_id", "site_code", "dry_run"
        )
        assert collection == RULE_COLLECTION[str(rule)] and site in ("PS1", "PS2") and dry is False

    # -- the AdminService requests, against the simulator's own log ----------------------
    calls = remediation.adminservice.calls[calls_before:]
    timed = after.counted(before, "cmremediate.adminservice.duration")
    assert sum(timed.values()) == len(calls)
    adds = sum(n for a, n in timed.items() if by(a, "operation")[0] == "POST AddMembershipRule")
    assert adds == sum(1 for c in calls if c.route == "AddMembershipRule")
    assert adds == sum(n for (kind, _), n in counted.items() if kind == "added")
    assert after.since(before, "cmremediate.adminservice.failures") == {}
    assert after.since(before, "cmremediate.token.failures") == {}

    # -- every log line about a request carries its fields as attributes ----------------
    decided = [r for r in caplog.records if hasattr(r, "outcome")]
    assert len(decided) >= sum(counted.values())  # one line per decision, at least
    for record in decided:
        assert record.record_id in record_ids
        assert {"site_code", "machine_name", "collection_id", "rule"} <= set(vars(record))
        assert f"record={record.record_id} " in record.getMessage()


@pytest.mark.parametrize(
    "remediation", [{"ADMINSERVICE_PASSWORD": "wrong-password"}], indirect=True
)
def test_a_refused_sign_in_is_counted_and_decides_nothing(metric_reader, remediation):
    before = read(metric_reader)
    with pytest.raises(InvocationFailed, match=r"^TokenError: "):
        remediation.deliver(body_of(fixture("01-add")))
    after = read(metric_reader)
    assert after.since(before, "cmremediate.token.failures") == {
        frozenset({("credential", "service account"), ("failure", "invalid_grant")}): 1
    }
    assert after.since(before, "cmremediate.outcomes") == {}  # retried later, not decided
    assert after.counted(before, "cmremediate.adminservice.duration") == {}  # never sent


@pytest.mark.usefixtures("one_http_attempt")
def test_adminservice_failures_are_counted_by_operation_and_kind(metric_reader, remediation):
    remediation.adminservice.storm(503, count=2)
    before = read(metric_reader)
    # the add meets the storm: not decided (the delivery fails, or is sent again for later)
    remediation.app.deliver(body_of(fixture("01-add")), message_id="in-the-storm", check=False)
    assert remediation.outcome(fixture("01-add")["body"]) is None
    failed = read(metric_reader)
    failures = failed.since(before, "cmremediate.adminservice.failures")
    assert sum(failures.values()) == remediation.adminservice.count_calls(status=503) == 2
    assert {by(a, "failure")[0] for a in failures} == {"AdminServiceUnavailable"}
    operations = {str(by(a, "operation")[0]) for a in failures}
    assert all(op.split(" ", 1)[0] in ("GET", "POST") and "(" not in op for op in operations)

    remediation.deliver(body_of(fixture("01-add")), message_id="after-the-storm")
    after = read(metric_reader)
    assert after.since(failed, "cmremediate.adminservice.failures") == {}
    assert {by(a, "kind")[0] for a in after.since(failed, "cmremediate.outcomes")} == {"added"}
    statuses = {
        by(a, "status")[0] for a in after.counted(failed, "cmremediate.adminservice.duration")
    }
    assert statuses <= {"200", "201"}
