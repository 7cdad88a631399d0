"""The remediation wave of ``bench/upgrade_wave.py``: status messages a Microsoft 365 upgrade
wave sends, the discovery records behind them, and the fleet already in one collection.

Built with devstack's workload builder (``devstack.datagen.builder.WorkloadBuilder``),
which labels every machine and message with its expected outcome as it makes it. The
mix is the wave's, not ``generate_workload()``'s (that one is half noise): almost every
message matches a rule, and

- ~5 % are 39997 messages that match no rule (near-misses, hostile strings, ...);
- ~3 % are repeated sends: the same device sends the same fact again, later;
- ~1 % come from machines without any discovery record (unknown devices);
- ~3 % of the devices are re-imaged (an obsolete old record beside the active new one)
  and a few (0.2 %, at least one) have two records that tie exactly (ambiguous).

The devices are ``messages // 2``; each sends one to three different facts. The fleet
is ``preexisting`` other devices that already hold a direct rule in the first rule's
collection before the wave starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from devstack.datagen import GENERIC_INFO, M365_RULES, GeneratedDevice, Workload
from devstack.datagen.builder import Machine, MessageSpec, WorkloadBuilder

SITE: Final = "PS1"
#: Shares of the wave's status messages (the rest are facts that match a rule).
NON_MATCHING_SHARE: Final = 0.05
REPEAT_SHARE: Final = 0.03
UNKNOWN_SHARE: Final = 0.01
#: Shares of the devices with duplicate discovery records.
REIMAGED_SHARE: Final = 0.03
TIE_SHARE: Final = 0.002
#: 39997 messages built to match no rule (datagen's message kinds).
NON_MATCHING_KINDS: Final = (
    "nonmatching-msgtype", "nonmatching-value", "wrong-position", "only-one-string",
    "suffix", "leading-space", "no-strings", "empty-string", "hostile", "max-length",
)  # fmt: skip
#: The datagen kind that carries each rule's exact strings, in M365_RULES order.
RULE_KINDS: Final = ("project", "visio", "room-plugin")
#: The messages arrive over this window, ending when the wave is generated.
ARRIVAL_SPAN: Final = timedelta(minutes=30)
#: The fleet's ResourceIDs start here: far from the builder's (16,777,220 + 10^7).
FLEET_FIRST_RESOURCE_ID: Final = 2**25


@dataclass(frozen=True)
class Wave:
    """The workload and what the benchmark checks it against."""

    workload: Workload
    #: Devices of the first rule's collection before the wave (not in any message).
    fleet: tuple[GeneratedDevice, ...]
    #: The collection the fleet is in.
    fleet_collection: str
    #: Machines with one healthy record: the baseline adds a sample of them.
    clean_names: tuple[str, ...]
    devices: int
    reimaged: int
    ties: int
    unknown_machines: int
    #: Messages by purpose: facts, repeats, non-matching, unknown (device).
    message_mix: dict[str, int]

    @property
    def expected_requests(self) -> int:
        """Queue messages the export must send: one per (39997 message, matching rule)."""
        return sum(
            len(m.expected_rules) for m in self.workload.messages if m.message_id == GENERIC_INFO
        )

    @property
    def expected_waiting(self) -> int:
        """Requests whose machine has no discovery record: the queue function puts them
        back to try again later (RESOLVE_RETRY_DELAY_SECONDS), so they stay queued."""
        unknown = {
            name
            for name, pick in self.workload.expected_resolution.items()
            if pick == "unknown-device"
        }
        return sum(
            len(m.expected_rules)
            for m in self.workload.messages
            if m.machine_name.upper() in unknown
        )


def _share(total: int, share: float, *, least: int = 0) -> int:
    return max(least, round(total * share))


def build_wave(messages: int, *, seed: int, now: datetime, preexisting: int = 20_000) -> Wave:
    """The wave of ``messages`` status messages, arriving until ``now`` (naive UTC)."""
    if messages < 100:
        raise ValueError("a wave has at least 100 status messages")
    builder = WorkloadBuilder(seed=seed, sites=(SITE,), start=now - ARRIVAL_SPAN, span=ARRIVAL_SPAN)
    rng = random.Random(seed + 1)  # the wave's own choices; the builder keeps its stream
    devices = messages // 2
    ties = _share(devices, TIE_SHARE, least=1)
    reimaged = _share(devices, REIMAGED_SHARE, least=1)
    known: list[Machine] = [builder.add_scenario(SITE, "tie") for _ in range(ties)]
    known += [builder.add_scenario(SITE, "reimaged") for _ in range(reimaged)]
    known += [builder.add_clean(SITE) for _ in range(devices - ties - reimaged)]
    unknown_messages = _share(messages, UNKNOWN_SHARE, least=1)
    for _ in range(max(1, unknown_messages // 2)):
        builder.add_unknown(SITE)
    non_matching = _share(messages, NON_MATCHING_SHARE)
    repeats = _share(messages, REPEAT_SHARE)
    facts = messages - unknown_messages - non_matching - repeats

    # Every device sends one fact; the rest are more facts of devices, never one twice.
    rng.shuffle(known)
    pairs = [(machine, rng.randrange(len(RULE_KINDS))) for machine in known]
    sent = {pairs_key(m, r) for m, r in pairs}
    spare = [(m, r) for m in known for r in range(len(RULE_KINDS)) if pairs_key(m, r) not in sent]
    pairs += rng.sample(spare, facts - len(pairs))
    specs: list[MessageSpec] = [builder.build_kind(RULE_KINDS[r], m) for m, r in pairs]
    specs += [
        builder.build_kind(rng.choice(NON_MATCHING_KINDS), rng.choice(known))
        for _ in range(non_matching)
    ]
    specs += [builder.build_kind("unknown-machine") for _ in range(unknown_messages)]
    # Arrivals in the first 70 % of the window; a repeat comes 20-30 % of it later,
    # so it is seldom in flight together with its original.
    for spec in specs:
        spec.arrival = builder.start + ARRIVAL_SPAN * 0.7 * rng.random()
    originals = specs[:facts]
    for original in rng.sample(originals, repeats):
        specs.append(
            MessageSpec(
                kind="repeat",
                site=original.site,
                machine=original.machine,
                strings=original.strings,
                rules=original.rules,
                arrival=original.arrival + ARRIVAL_SPAN * rng.uniform(0.2, 0.3),
            )
        )
    workload = builder.finish(specs)
    return Wave(
        workload=workload,
        fleet=fleet_devices(preexisting, now),
        fleet_collection=str(M365_RULES[0]["collection_id"]),
        clean_names=tuple(m.name for m in builder.clean),
        devices=devices,
        reimaged=reimaged,
        ties=ties,
        unknown_machines=len(builder.unknown),
        message_mix={
            "facts": facts,
            "repeats": repeats,
            "non-matching": non_matching,
            "unknown device": unknown_messages,
        },
    )


def pairs_key(machine: Machine, rule: int) -> tuple[str, int]:
    """A (machine, rule) pair as a set key."""
    return machine.name, rule


def fleet_devices(count: int, now: datetime) -> tuple[GeneratedDevice, ...]:
    """``count`` healthy client records that are not part of the wave."""
    created = now.replace(microsecond=0) - timedelta(days=400)
    return tuple(
        GeneratedDevice(
            resource_id=FLEET_FIRST_RESOURCE_ID + index,
            name=f"FLEET-{index:06d}",
            netbios_name=f"FLEET-{index:06d}",
            sms_unique_identifier=f"GUID:0F1EE700-0000-4000-8000-{index:012X}",
            domain="CONTOSO",
            full_domain="contoso.com",
            client=1,
            active=1,
            obsolete=0,
            decommissioned=0,
            creation_date=created,
        )
        for index in range(count)
    )
