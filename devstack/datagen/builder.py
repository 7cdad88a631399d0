"""The workload builder: machines with their discovery records, then their messages.

``WorkloadBuilder`` is the shared machinery of ``generate_workload()`` and
``m365_demo_scenario()``. It draws every random choice from one ``random.Random(seed)``
in a fixed order, so a seed always gives the same workload, and labels each machine
and message with its expected outcome as it builds it.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from devstack.datagen.catalog import (
    CANONICAL_KINDS,
    EXTRA_STRINGS,
    HOSTILE_MACHINE_NAMES,
    HOSTILE_STRINGS,
    NON_ASCII_MACHINES,
    OTHER_MESSAGES,
    OTHER_MSGTYPES,
    OTHER_VALUES,
    SCENARIO_RECORDS,
    Rec,
)
from devstack.datagen.model import (
    DEFAULT_START,
    GENERIC_ERROR,
    GENERIC_INFO,
    GENERIC_WARNING,
    INSERTION_STRING_MAX_LENGTH,
    M365_RULES,
    MESSAGE_TYPE_MILESTONE,
    MSG_TYPE_OFFICE365_UPGRADE,
    GeneratedDevice,
    GeneratedStatusMessage,
    Workload,
)

# (rule name, the value in InsertionString2) for building messages that match.
_RULE_VALUES: Final = tuple(
    (rule["name"], rule["match"]["InsertionString2"]) for rule in M365_RULES
)


def _case_variant(rng: random.Random, value: str) -> str:
    """A different upper/lower mix of ``value`` (SQL Server's `=` still matches it)."""
    for _ in range(8):
        style = rng.randrange(4)
        if style == 0:
            variant = value.lower()
        elif style == 1:
            variant = value.upper()
        elif style == 2:
            variant = value.swapcase()
        else:
            variant = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in value)
        if variant != value:
            return variant
    return value.upper() if value.upper() != value else value.lower()


def _round_time(value: datetime) -> datetime:
    # 10 ms steps are exact in SQL Server's datetime (1/300 s ticks) and in timestamp(3).
    return value.replace(microsecond=value.microsecond // 10_000 * 10_000)


@dataclass
class Machine:
    """A machine of the workload and the scenario its discovery records follow."""

    name: str  # as the discovery record spells it
    site: str
    scenario: str
    message_name: str  # as the client reports it in MachineName


@dataclass
class MessageSpec:
    """One message before its event time is drawn; ``arrival`` orders the workload."""

    kind: str
    site: str
    machine: str
    strings: tuple[str | None, ...]
    rules: frozenset[str]
    message_id: int = GENERIC_INFO
    severity: int | None = None
    message_type: int = MESSAGE_TYPE_MILESTONE
    component: str = "Task Sequence Manager"
    module_name: str = "SMS Client"
    arrival: datetime = DEFAULT_START


class WorkloadBuilder:
    """Shared machinery of generate_workload() and m365_demo_scenario()."""

    def __init__(
        self, *, seed: int, sites: Sequence[str], start: datetime, span: timedelta
    ) -> None:
        if not sites:
            raise ValueError("at least one site")
        codes = tuple(s.upper() for s in sites)
        for code in codes:
            if len(code) != 3 or not code.isalnum() or not code.isascii():
                raise ValueError(f"site code {code!r} is not 3 letters or digits")
        if len(set(codes)) != len(codes):
            raise ValueError("site codes must be distinct")
        if span <= timedelta(0):
            raise ValueError("span must be positive")
        self.rng = random.Random(seed)
        self.sites = codes
        self.start = start
        self.span = span
        self.devices: list[GeneratedDevice] = []
        self.resolution: dict[str, int | str] = {}
        self.scenarios: dict[str, str] = {}
        self.clean: list[Machine] = []
        self.special: list[Machine] = []
        self.unknown: list[Machine] = []
        self.servers: dict[str, Machine] = {}
        self._used_numbers: set[int] = set()
        self._used_resource_ids: set[int] = set()

    # -- devices ----------------------------------------------------------------------

    def _domain(self, site: str) -> tuple[str, str]:
        index = self.sites.index(site)
        return (("CONTOSO", "contoso.com"), ("FABRIKAM", "fabrikam.com"),
                ("NORTHWIND", "northwind.local"))[index % 3]  # fmt: skip

    def _guid(self) -> str:
        hexdigits = "0123456789ABCDEF"
        raw = "".join(self.rng.choice(hexdigits) for _ in range(32))
        return f"GUID:{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"

    def _unique(self, used: set[int], low: int, high: int) -> int:
        while True:
            value = self.rng.randint(low, high)
            if value not in used:
                used.add(value)
                return value

    def _new_name(self) -> str:
        number = self._unique(self._used_numbers, 10000, 99999)
        return f"{self.rng.choice(('LT', 'WS', 'NB', 'VM'))}-{number}"

    def _add_records(self, name: str, site: str, recs: Sequence[Rec]) -> list[int]:
        domain, fqdn = self._domain(site)
        ids: list[int] = []
        base_time = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        for rec in recs:
            # Random, so that "highest ResourceID" is no stand-in for "newest record".
            resource_id = self._unique(self._used_resource_ids, 16777220, 16777220 + 9_999_999)
            spelled = name.lower() if rec.lower_name else name
            workgroup = not rec.ad_only and self.rng.random() < 0.03
            self.devices.append(
                GeneratedDevice(
                    resource_id=resource_id,
                    name=spelled,
                    netbios_name=spelled,
                    sms_unique_identifier=None if rec.ad_only else self._guid(),
                    domain="WORKGROUP" if workgroup else domain,
                    full_domain=None if workgroup else fqdn,
                    client=rec.client,
                    active=rec.active,
                    obsolete=rec.obsolete,
                    decommissioned=rec.decommissioned,
                    # Whole seconds so that records built as a tie are exactly equal.
                    creation_date=base_time - timedelta(days=rec.age_days, hours=9),
                )
            )
            ids.append(resource_id)
        return ids

    def add_clean(self, site: str, name: str | None = None) -> Machine:
        """A machine with one healthy client record."""
        name = name or self._new_name()
        age = self.rng.uniform(20, 1200)
        (resource_id,) = self._add_records(name, site, [Rec(age_days=round(age, 2))])
        machine = Machine(name, site, "clean", name)
        self.resolution[name.upper()] = resource_id
        self.scenarios[name.upper()] = "clean"
        self.clean.append(machine)
        return machine

    def add_scenario(self, site: str, scenario: str, name: str | None = None) -> Machine:
        """A machine whose records follow one of the duplicate/edge scenarios."""
        recs, expected = SCENARIO_RECORDS[scenario]
        name = name or self._new_name()
        ids = self._add_records(name, site, recs)
        reported = name.lower() if scenario == "message-lowercase" else name
        machine = Machine(name, site, scenario, reported)
        self.resolution[name.upper()] = ids[expected] if isinstance(expected, int) else expected
        self.scenarios[name.upper()] = scenario
        self.special.append(machine)
        return machine

    def add_unknown(self, site: str, name: str | None = None) -> Machine:
        """A machine that sends messages but has no discovery record at all."""
        name = name or "DESKTOP-" + "".join(
            self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(7)
        )
        machine = Machine(name, site, "unknown", name)
        self.resolution[name.upper()] = "unknown-device"
        self.scenarios[name.upper()] = "unknown"
        self.unknown.append(machine)
        return machine

    def add_server(self, site: str) -> None:
        """The site server, sender of server-side status messages."""
        machine = self.add_clean(site, name=f"CM-{site}")
        self.clean.remove(machine)
        self.servers[site] = machine

    # -- messages ---------------------------------------------------------------------

    def _sender(self) -> Machine:
        # Mostly ordinary machines; the special ones send now and then too.
        if self.special and self.rng.random() < 0.12:
            return self.rng.choice(self.special)
        return self.rng.choice(self.clean)

    def _rule(self) -> tuple[str, str]:
        return self.rng.choice(_RULE_VALUES)

    def _spec(
        self,
        kind: str,
        machine: Machine,
        strings: tuple[str | None, ...],
        rules: frozenset[str] = frozenset(),
        **extra: object,
    ) -> MessageSpec:
        spec = MessageSpec(
            kind=kind, site=machine.site, machine=machine.message_name, strings=strings, rules=rules
        )
        for key, value in extra.items():
            setattr(spec, key, value)
        return spec

    def _reported_name(self, machine: Machine) -> str:
        # Clients of a non-ASCII machine sometimes report the name in upper case.
        if machine.name in NON_ASCII_MACHINES and self.rng.random() < 0.3:
            return machine.name.upper()
        return machine.message_name

    def build_kind(self, kind: str, machine: Machine | None = None) -> MessageSpec:
        """One message of ``kind`` (not 'repeat': see :meth:`repeats`)."""
        rng = self.rng
        m = machine or self._sender()
        msg = MSG_TYPE_OFFICE365_UPGRADE
        if kind in CANONICAL_KINDS:
            name, value = _RULE_VALUES[CANONICAL_KINDS[kind]]
            spec = self._spec(kind, m, (msg, value), frozenset({name}))
            spec.machine = self._reported_name(m)
            return spec
        if kind == "match-case":
            name, value = self._rule()
            which = rng.randrange(3)
            s1 = _case_variant(rng, msg) if which != 1 else msg
            s2 = _case_variant(rng, value) if which != 0 else value
            return self._spec(kind, m, (s1, s2), frozenset({name}))
        if kind == "match-trailing-space":
            name, value = self._rule()
            which = rng.randrange(3)
            s1 = msg + " " * rng.randint(1, 3) if which != 1 else msg
            s2 = value + " " * rng.randint(1, 5) if which != 0 else value
            if rng.random() < 0.1:
                s2 = value.ljust(INSERTION_STRING_MAX_LENGTH)  # padded to the very limit
            if rng.random() < 0.3:
                s2 = _case_variant(rng, s2)
            return self._spec(kind, m, (s1, s2), frozenset({name}))
        if kind == "match-extra-strings":
            name, value = self._rule()
            extras: list[str | None] = [rng.choice(EXTRA_STRINGS) for _ in range(rng.randint(1, 8))]
            if rng.random() < 0.3:
                extras[rng.randrange(len(extras))] = None  # a gap: no row for that index
            if rng.random() < 0.4:
                extras[rng.randrange(len(extras))] = rng.choice(HOSTILE_STRINGS)
            if extras[-1] is None:
                extras[-1] = rng.choice(EXTRA_STRINGS)
            return self._spec(kind, m, (msg, value, *extras), frozenset({name}))
        if kind in ("hostile-machine", "unknown-machine"):
            name, value = self._rule()
            if kind == "hostile-machine":
                hostile = rng.choice(HOSTILE_MACHINE_NAMES)
                host = Machine(hostile, rng.choice(self.sites), "unknown", hostile)
            else:
                host = rng.choice(self.unknown)
            return self._spec(kind, host, (msg, value), frozenset({name}))
        if kind == "nonmatching-msgtype":
            s1 = rng.choice(OTHER_MSGTYPES)
            return self._spec(kind, m, (s1, self._rule()[1]))
        if kind == "nonmatching-value":
            return self._spec(kind, m, (msg, rng.choice(OTHER_VALUES)))
        if kind == "wrong-position":
            value = self._rule()[1]
            layouts: tuple[tuple[str | None, ...], ...] = (
                (value, msg),
                (msg, None, value),
                (None, msg, value),
                (msg, "", value),
                (rng.choice(EXTRA_STRINGS), msg, value),
            )
            return self._spec(kind, m, rng.choice(layouts))
        if kind == "only-one-string":
            value = self._rule()[1]
            return self._spec(kind, m, rng.choice(((msg,), (None, value), (value,))))
        if kind == "suffix":
            value = self._rule()[1]
            layouts = ((msg, value + "X"), (msg + "X", value), (msg, value + "."),
                       (msg, value + "2"), (msg, "x" + value))  # fmt: skip
            return self._spec(kind, m, rng.choice(layouts))
        if kind == "leading-space":
            value = self._rule()[1]
            layouts = ((msg, " " + value), (" " + msg, value), (msg, "  " + value + " "))
            return self._spec(kind, m, rng.choice(layouts))
        if kind == "no-strings":
            return self._spec(kind, m, ())
        if kind == "empty-string":
            value = self._rule()[1]
            return self._spec(kind, m, rng.choice(((msg, ""), (msg, "   "), ("", value))))
        if kind == "hostile":
            hostile = rng.choice(HOSTILE_STRINGS)
            layouts = ((msg, hostile), (hostile, self._rule()[1]),
                       (hostile, rng.choice(HOSTILE_STRINGS), hostile))  # fmt: skip
            return self._spec(kind, m, rng.choice(layouts))
        if kind == "max-length":
            n = INSERTION_STRING_MAX_LENGTH
            value = self._rule()[1]
            layouts = ((msg, (value + "x" * n)[:n]), ((msg + "_" * n)[:n], value),
                       (msg, "Ж" * n), ("z" * n, value, msg))  # fmt: skip
            return self._spec(kind, m, rng.choice(layouts))
        if kind in ("warning-39998", "error-39999"):
            name, value = self._rule()
            s1 = msg if rng.random() < 0.8 else _case_variant(rng, msg)
            mid = GENERIC_WARNING if kind == "warning-39998" else GENERIC_ERROR
            return self._spec(kind, m, (s1, value), message_id=mid)
        if kind in ("other-message", "other-id-matching-strings"):
            mid, module, component, mtype, severity, server, count = rng.choice(OTHER_MESSAGES)
            sender = self.servers.get(m.site, m) if server else m
            if kind == "other-id-matching-strings":
                other: tuple[str | None, ...] = (msg, self._rule()[1])
            else:
                other = tuple(rng.choice(EXTRA_STRINGS) for _ in range(count))
            return self._spec(
                kind, sender, other, message_id=mid, severity=severity,
                message_type=mtype, component=component, module_name=module,
            )  # fmt: skip
        raise ValueError(f"unknown message kind {kind!r}")

    def repeats(self, originals: Sequence[MessageSpec], count: int) -> list[MessageSpec]:
        """Re-sends of facts already sent: same machine, same strings, later arrival."""
        out: list[MessageSpec] = []
        for _ in range(count):
            original = self.rng.choice(originals)
            later = original.arrival + timedelta(minutes=self.rng.uniform(1, 240))
            end = self.start + self.span
            if later >= end:
                later = original.arrival + (end - original.arrival) * self.rng.random()
            out.append(MessageSpec(
                kind="repeat", site=original.site, machine=original.machine,
                strings=original.strings, rules=original.rules, arrival=later,
            ))  # fmt: skip
        return out

    def arrival(self) -> datetime:
        """When a message reaches the site: anywhere in the workload's span."""
        return self.start + self.span * self.rng.random()

    def event_time(self, arrival: datetime) -> datetime:
        """When the client raised it: shortly before arrival, sometimes hours before."""
        roll = self.rng.random()
        if roll < 0.93:
            delay = self.rng.uniform(0.05, 2)
        elif roll < 0.97:
            delay = self.rng.uniform(2, 600)
        else:
            delay = self.rng.uniform(600, 12 * 3600)  # a client that reports late
        return _round_time(arrival - timedelta(seconds=delay))

    def finish(self, specs: list[MessageSpec]) -> Workload:
        """The workload: ``specs`` in arrival order as messages, and the ground truth."""
        specs.sort(key=lambda s: s.arrival)
        messages = tuple(
            GeneratedStatusMessage(
                site_code=s.site,
                machine_name=s.machine,
                time_utc=self.event_time(s.arrival),
                message_id=s.message_id,
                insertion_strings=s.strings,
                severity=s.severity,
                message_type=s.message_type,
                component=s.component,
                expected_rules=s.rules,
                kind=s.kind,
                module_name=s.module_name,
            )
            for s in specs
        )
        for message in messages:
            key = message.machine_name.upper()
            if key not in self.resolution:
                self.resolution[key] = "unknown-device"
                self.scenarios[key] = "unknown"
        return Workload(
            sites=self.sites,
            devices=tuple(self.devices),
            messages=messages,
            expected_resolution=dict(self.resolution),
            machine_scenarios=dict(self.scenarios),
        )
