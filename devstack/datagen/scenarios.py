"""The workloads: ``generate_workload()`` for volume, ``m365_demo_scenario()`` for a demo.

Each is a mix of message kinds (how many of each) over a set of machines; the builder
does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from devstack.datagen.builder import Machine, MessageSpec, WorkloadBuilder
from devstack.datagen.catalog import CANONICAL_KINDS, DEVICE_SCENARIOS, NON_ASCII_MACHINES
from devstack.datagen.model import DEFAULT_START, Workload

#: Share of each kind in generate_workload() (sums to 1; 'other-message' absorbs rounding).
WORKLOAD_MIX: Final[dict[str, float]] = {
    "project": 0.09, "visio": 0.09, "room-plugin": 0.09,
    "match-case": 0.06, "match-trailing-space": 0.05, "match-extra-strings": 0.04,
    "repeat": 0.06, "hostile-machine": 0.01, "unknown-machine": 0.01,
    "nonmatching-msgtype": 0.03, "nonmatching-value": 0.03, "wrong-position": 0.02,
    "only-one-string": 0.02, "suffix": 0.015, "leading-space": 0.015, "no-strings": 0.01,
    "empty-string": 0.01, "hostile": 0.03, "max-length": 0.01,
    "warning-39998": 0.04, "error-39999": 0.03,
    "other-message": 0.22, "other-id-matching-strings": 0.02,
}  # fmt: skip

_DEMO_MIX: Final[dict[str, int]] = {
    "project": 9, "visio": 8, "room-plugin": 7, "match-case": 3, "match-trailing-space": 2,
    "repeat": 2, "unknown-machine": 1,
    "nonmatching-msgtype": 1, "nonmatching-value": 2, "wrong-position": 1, "suffix": 1,
    "leading-space": 1, "only-one-string": 1, "hostile": 1,
    "warning-39998": 2, "error-39999": 1, "other-message": 17,
}  # fmt: skip

# The demo's device scenarios: the first two on PS1, the other two on PS2.
_DEMO_SCENARIOS: Final = ("reimaged", "ad-only-beside-client", "tie", "obsolete-null")


def _counts(mix: dict[str, float], total: int) -> dict[str, int]:
    counts = {kind: int(share * total) for kind, share in mix.items()}
    if total >= 2 * len(mix):
        counts = {kind: max(1, n) for kind, n in counts.items()}
    counts["other-message"] += total - sum(counts.values())
    if counts["other-message"] < 0:
        raise ValueError(f"message_count {total} is too small for the mix")
    return counts


def _build_messages(
    builder: WorkloadBuilder, counts: dict[str, int], must_send: Sequence[Machine]
) -> list[MessageSpec]:
    canonical_kinds = [k for k in CANONICAL_KINDS if counts.get(k, 0) > 0]
    specs: list[MessageSpec] = []
    # Every special and unknown machine sends at least one matching message, so each
    # device scenario reaches the resolver.
    remaining = dict(counts)
    for i, machine in enumerate(must_send):
        kind = canonical_kinds[i % len(canonical_kinds)]
        if remaining[kind] <= 0:
            continue
        remaining[kind] -= 1
        spec = builder.build_kind(kind, machine)
        if machine.scenario == "unknown":
            spec.kind = "unknown-machine"
            if remaining.get("unknown-machine", 0) > 0:
                remaining["unknown-machine"] -= 1
                remaining[kind] += 1
        specs.append(spec)
    for kind, count in remaining.items():
        if kind == "repeat":
            continue
        specs.extend(builder.build_kind(kind) for _ in range(count))
    for spec in specs:
        spec.arrival = builder.arrival()
    originals = [s for s in specs if s.kind in CANONICAL_KINDS or s.kind.startswith("match-")]
    if remaining.get("repeat", 0):
        specs.extend(builder.repeats(originals, remaining["repeat"]))
    return specs


def generate_workload(
    *,
    seed: int,
    sites: Sequence[str] = ("PS1", "PS2"),
    message_count: int = 10_000,
    devices_per_site: int = 250,
    start: datetime = DEFAULT_START,
    span: timedelta = timedelta(days=2),
) -> Workload:
    """A large, realistic mix of status messages and discovery records for ``sites``.

    ``devices_per_site`` counts machines with discovery records (one or more each):
    the site server, one machine of every DEVICE_SCENARIOS entry, the non-ASCII
    machines and healthy ones. Each site also has three machines without any record.
    About half the messages match a rule (see WORKLOAD_MIX).
    """
    if message_count < 0:
        raise ValueError("message_count must not be negative")
    builder = WorkloadBuilder(seed=seed, sites=sites, start=start, span=span)
    # Non-ASCII machines: Ñandú-PC (re-imaged) on the first site, ПК-ОФИС (two healthy
    # records, newest wins) on the second, or on the first when there is only one.
    non_ascii: dict[int, list[tuple[str, str]]] = {0: [(NON_ASCII_MACHINES[0], "reimaged")]}
    non_ascii.setdefault(min(1, len(builder.sites) - 1), []).append(
        (NON_ASCII_MACHINES[1], "duplicate-newest")
    )
    fixed = 1 + len(DEVICE_SCENARIOS) + 2  # server, scenarios, up to two non-ASCII
    if devices_per_site < fixed + 1:
        raise ValueError(f"devices_per_site must be at least {fixed + 1}")
    for index, site in enumerate(builder.sites):
        builder.add_server(site)
        for scenario in DEVICE_SCENARIOS:
            builder.add_scenario(site, scenario)
        extra = non_ascii.get(index, [])
        for name, scenario in extra:
            builder.add_scenario(site, scenario, name=name)
        for _ in range(3):
            builder.add_unknown(site)
        for _ in range(devices_per_site - 1 - len(DEVICE_SCENARIOS) - len(extra)):
            builder.add_clean(site)
    counts = _counts(WORKLOAD_MIX, message_count) if message_count else {}
    if not counts:
        return builder.finish([])
    must_send = [*builder.special, *builder.unknown]
    return builder.finish(_build_messages(builder, counts, must_send))


def m365_demo_scenario(*, seed: int = 365, start: datetime = DEFAULT_START) -> Workload:
    """A small, readable demo: ~50 devices on PS1 and PS2, ~60 messages over 8 hours.

    The three M365 rules, a few duplicate records (re-imaged, AD-only beside the
    client, a tie), one unknown machine and one hostile string.
    """
    builder = WorkloadBuilder(seed=seed, sites=("PS1", "PS2"), start=start, span=timedelta(hours=8))
    for index, site in enumerate(builder.sites):
        builder.add_server(site)
        scenarios = _DEMO_SCENARIOS[index * 2 : index * 2 + 2]
        for scenario in scenarios:
            builder.add_scenario(site, scenario)
        for _ in range(25 - 1 - len(scenarios)):
            builder.add_clean(site)
    builder.add_unknown("PS2")
    counts = dict(_DEMO_MIX)
    must_send = [*builder.special, *builder.unknown]
    return builder.finish(_build_messages(builder, counts, must_send))
