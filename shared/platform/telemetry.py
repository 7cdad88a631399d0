"""The app's own metrics, through the OpenTelemetry metrics API.

On Azure the Python worker configures the Azure Monitor distro
(``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``, host.json ``telemetryMode``
``OpenTelemetry``): every instrument here then lands in Application Insights'
``customMetrics`` table under its name, its attributes in ``customDimensions``.
Without a configured provider (local runs, the command line) the API is a no-op.

:data:`METRICS` is the catalogue: each metric's name, kind, unit and the attribute
keys it carries. The workbook and the alert rules in ``infra/`` may query only what it
names (a test checks), and a test reads an end-to-end run's metrics against it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter, _Gauge

MetricKind = Literal["counter", "histogram", "gauge"]

#: The meter's name: the instrumentation scope in Application Insights.
METER_NAME: Final = "cm-remediate"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it counts and the attributes each point carries."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    attributes: tuple[str, ...]


METRICS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "cmremediate.outcomes",
        "counter",
        "{outcome}",
        "Recorded outcomes of remediation requests",
        ("kind", "rule", "collection_id", "site_code", "dry_run"),
    ),
    MetricSpec(
        "cmremediate.export.runs",
        "counter",
        "{run}",
        "Export runs that finished (bounded: stopped at EXPORT_MAX_MESSAGES_PER_RUN)",
        ("bounded",),
    ),
    MetricSpec(
        "cmremediate.export.messages_read",
        "counter",
        "{message}",
        "Status messages examined for the first time",
        ("site_code",),
    ),
    MetricSpec(
        "cmremediate.export.requests_enqueued",
        "counter",
        "{request}",
        "Remediation requests sent to the queue",
        ("site_code",),
    ),
    MetricSpec(
        "cmremediate.export.lag",
        "gauge",
        "s",
        "How far behind the site's newest status message the export is at the end of a "
        "run: 0 when it read everything there was",
        ("site_code",),
    ),
    MetricSpec(
        "cmremediate.queue.depth",
        "gauge",
        "{message}",
        "Approximate messages in the remediation queue and in its poison queue",
        ("queue",),
    ),
    MetricSpec(
        "cmremediate.adminservice.duration",
        "histogram",
        "ms",
        "AdminService requests: time to the answer",
        ("operation", "status"),
    ),
    MetricSpec(
        "cmremediate.adminservice.failures",
        "counter",
        "{request}",
        "AdminService requests that failed, by kind",
        ("operation", "failure"),
    ),
    MetricSpec(
        "cmremediate.token.failures",
        "counter",
        "{token}",
        "Token requests Entra ID refused (failure: its error code) or that could not be "
        "made (unavailable, tls)",
        ("credential", "failure"),
    ),
)

SPECS: Final[Mapping[str, MetricSpec]] = {spec.name: spec for spec in METRICS}

Attributes = Mapping[str, str | int | float | bool]


class Telemetry:
    """The instruments of :data:`METRICS` on one meter; thread-safe, create once."""

    def __init__(self, meter: Meter | None = None) -> None:
        self._meter = meter
        self._lock = threading.Lock()
        self._instruments: dict[str, Counter | Histogram | _Gauge] | None = None

    def _instrument(self, name: str) -> Counter | Histogram | _Gauge:
        instruments = self._instruments  # no lock on the hot path once they exist
        if instruments is None:
            with self._lock:
                if self._instruments is None:
                    # Late: on Azure the worker installs the provider before the first
                    # invocation, after this module may have been imported.
                    meter = self._meter or metrics.get_meter(METER_NAME)
                    self._instruments = {spec.name: _create(meter, spec) for spec in METRICS}
                instruments = self._instruments
        return instruments[name]

    def record(self, name: str, value: float, attributes: Attributes | None = None) -> None:
        """Add to a counter, record a histogram value or set a gauge; the attributes
        must be exactly the metric's own (a programming error otherwise)."""
        spec = SPECS[name]
        given = dict(attributes or {})
        if set(given) != set(spec.attributes):
            raise ValueError(f"{name} takes attributes {spec.attributes}, got {sorted(given)}")
        instrument = self._instrument(name)
        if isinstance(instrument, Counter):
            instrument.add(value, given)
        elif isinstance(instrument, Histogram):
            instrument.record(value, given)
        else:
            instrument.set(value, given)


def _create(meter: Meter, spec: MetricSpec) -> Counter | Histogram | _Gauge:
    if spec.kind == "counter":
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    if spec.kind == "histogram":
        return meter.create_histogram(spec.name, unit=spec.unit, description=spec.description)
    return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)


#: The process's telemetry (the global meter provider).
telemetry: Final = Telemetry()
