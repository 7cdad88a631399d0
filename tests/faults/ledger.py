"""The ledger of a fault scenario: what the generated workload says must have happened
(known by construction in ``devstack.datagen``), held against what the audit table, the
AdminService simulator and the queues show at the end.

Nothing here asks the code under test what to expect: resolutions come from
``Workload.expected_resolution``, matches from ``GeneratedStatusMessage.expected_rules``
and the outcome of the hostile machine names is written out below by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from devstack.adminservice import AdminServiceSimulator
from devstack.datagen import HOSTILE_MACHINE_NAMES, M365_RULES, Workload
from shared.domain.outcomes import Outcome

RULE_COLLECTION: Final = {rule["name"]: rule["collection_id"] for rule in M365_RULES}

#: datagen's hostile machine names (none has a discovery record) and their outcome
#: under the NetBIOS naming rules: at most 15 characters, no whitespace and none of
#: \ / : * ? " < > |. Written by hand from those rules, not computed.
HOSTILE_MACHINE_OUTCOMES: Final = {
    "PC01'; DROP TABLE v_R_System; --": "rejected-input",  # 32 characters, spaces
    "' OR 1=1 --": "rejected-input",  # spaces
    "%": "unknown-device",  # a valid name nobody has
    "💻-LAPTOP": "unknown-device",  # 8 characters, none forbidden
    "NAME\tWITH\tTABS": "rejected-input",  # tabs
    "LINE\nBREAK": "rejected-input",  # a line break
}
# A new hostile name in datagen must get its expected outcome here first.
assert set(HOSTILE_MACHINE_OUTCOMES) == set(HOSTILE_MACHINE_NAMES)

#: Outcomes that mean "the device is in the collection now".
MEMBER_KINDS: Final = frozenset({"added", "already-member"})

RequestKey = tuple[str, int, str]  # site code, RecordID, rule
Membership = tuple[str, int]  # collection, ResourceID


@dataclass(frozen=True, slots=True)
class Expected:
    """The outcome one (status message, rule) must end with."""

    machine_name: str
    collection_id: str
    kinds: frozenset[str]
    #: The device an admin would pick, for the outcomes that name one.
    resource_id: int | None


@dataclass
class Figures:
    """One scenario's numbers, for the terminal summary."""

    scenario: str
    messages: int = 0
    requests: int = 0
    deliveries: int = 0
    failed_deliveries: int = 0
    poisoned: int = 0
    requeued: int = 0
    outcomes: int = 0
    adds: int = 0
    duplicates: int = 0
    wrong_adds: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    passed: bool = False


#: Every scenario's figures in this test run, in order (read by the terminal summary).
RESULTS: list[Figures] = []


class Ledger:
    """Expectations of one workload, and the check of one scenario's end state."""

    def __init__(
        self,
        workload: Workload,
        record_ids: Sequence[int],
        initial_members: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        self.workload = workload
        #: Direct members of each collection before the scenario ran.
        self.initial = {cid: set(m) for cid, m in (initial_members or {}).items()}
        self.expected: dict[RequestKey, Expected] = {}
        for message, record_id in zip(workload.messages, record_ids, strict=True):
            for rule in message.expected_rules:
                resolution = workload.expected_resolution[message.machine_name.upper()]
                if message.machine_name in HOSTILE_MACHINE_OUTCOMES:
                    kinds, resource = {HOSTILE_MACHINE_OUTCOMES[message.machine_name]}, None
                elif isinstance(resolution, int):
                    kinds, resource = set(MEMBER_KINDS), resolution
                else:
                    kinds, resource = {resolution}, None  # 'ambiguous' or 'unknown-device'
                key = (message.site_code.upper(), record_id, rule)
                self.expected[key] = Expected(
                    message.machine_name, RULE_COLLECTION[rule], frozenset(kinds), resource
                )

    @property
    def requests(self) -> int:
        """How many (status message, rule) pairs the export must carry."""
        return len(self.expected)

    def adminservice_requests(self) -> list[RequestKey]:
        """The requests that reach the AdminService: their device resolves and is not a
        member at the start (the site database's v_FullCollectionMembership says so
        without a call)."""
        return [
            key
            for key, e in self.expected.items()
            if e.resource_id is not None
            and e.resource_id not in self.initial.get(e.collection_id, set())
        ]

    def memberships(self) -> set[Membership]:
        """Every (collection, device) some request asks for."""
        return {
            (e.collection_id, e.resource_id)
            for e in self.expected.values()
            if e.resource_id is not None
        }

    def expected_adds(self) -> set[Membership]:
        """The memberships that need an AddMembershipRule: not there at the start."""
        return {(c, r) for c, r in self.memberships() if r not in self.initial.get(c, set())}

    def final_members(self) -> dict[str, set[int]]:
        """Direct members every collection must have at the end."""
        members = {cid: set(m) for cid, m in self.initial.items()}
        for collection_id, resource_id in self.expected_adds():
            members.setdefault(collection_id, set()).add(resource_id)
        return members

    def check(
        self,
        figures: Figures,
        *,
        outcomes: Sequence[Outcome],
        adminservice: AdminServiceSimulator,
        queue_depth: int,
        poison_depth: int,
    ) -> Figures:
        """Fill ``figures`` with the end state and every way it departs from the ledger."""
        problems = figures.problems
        figures.messages = len(self.workload.messages)
        figures.requests = self.requests
        figures.outcomes = len(outcomes)

        # Exactly one recorded outcome per (status message, rule), and the expected one.
        # The table's keys make a second row for the same request impossible, so
        # "one" means: present, and nothing recorded that no request asked for.
        seen: set[RequestKey] = set()
        added: Counter[Membership] = Counter()
        for outcome in outcomes:
            if outcome.site_code is None or outcome.record_id is None or outcome.rule is None:
                problems.append(f"outcome for an unparsed message: {outcome.kind} {outcome.reason}")
                continue
            key = (outcome.site_code, outcome.record_id, outcome.rule)
            seen.add(key)
            expected = self.expected.get(key)
            if expected is None:
                problems.append(f"outcome {outcome.kind} for {key}, which no message asked for")
                continue
            if outcome.kind not in expected.kinds:
                problems.append(
                    f"{key} machine={expected.machine_name!r}: {outcome.kind}, expected one of "
                    f"{sorted(expected.kinds)} ({outcome.reason})"
                )
            if outcome.kind in MEMBER_KINDS and outcome.resource_id != expected.resource_id:
                problems.append(
                    f"{key} machine={expected.machine_name!r}: resource {outcome.resource_id}, "
                    f"expected {expected.resource_id}"
                )
            if outcome.kind == "added" and expected.resource_id is not None:
                added[(expected.collection_id, expected.resource_id)] += 1
        for key in self.expected.keys() - seen:
            problems.append(f"no outcome for {key} machine={self.expected[key].machine_name!r}")

        # An "added" outcome claims this request changed the collection: at most once
        # per membership, and never for a device that was a member from the start.
        expected_adds = self.expected_adds()
        for membership, count in added.items():
            if count > 1:
                problems.append(f"{count} 'added' outcomes for {membership}")
            if membership not in expected_adds:
                problems.append(f"'added' outcome for {membership}, a member from the start")

        # No device added twice, none added that no rule allows, none forgotten.
        adds = adminservice.successful_adds()
        figures.adds = sum(adds.values())
        figures.duplicates = sum(n - 1 for n in adds.values() if n > 1)
        figures.wrong_adds = sum(n for m, n in adds.items() if m not in expected_adds)
        for membership, count in sorted(adds.items()):
            if count > 1:
                problems.append(f"{membership} added {count} times")
            if membership not in expected_adds:
                problems.append(f"{membership} added, but no rule asks for it")
        for membership in sorted(expected_adds - set(adds)):
            problems.append(f"{membership} never added")
        final = self.final_members()
        for collection_id in sorted(RULE_COLLECTION.values()):
            members = adminservice.direct_members(collection_id)
            wanted = final.get(collection_id, set())
            if members - wanted:
                problems.append(f"{collection_id}: unexpected members {sorted(members - wanted)}")
            if wanted - members:
                problems.append(f"{collection_id}: missing members {sorted(wanted - members)}")

        if queue_depth:
            problems.append(f"{queue_depth} message(s) left on the queue")
        if poison_depth:
            problems.append(f"{poison_depth} message(s) left on the poison queue")
        return figures
