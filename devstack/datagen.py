"""Realistic ConfigMgr status messages and discovery records, with ground truth.

Everything is deterministic for a seed and built from ``random.Random(seed)`` only.
The ground truth is set *by construction*: a message generated as "matches rule X"
carries ``expected_rules={X}``, a machine generated as "re-imaged" carries the
ResourceID of its new record in ``Workload.expected_resolution``. Nothing here runs a
matcher or a resolver to label data, so tests can hold the production code to it.

Typical use::

    workload = generate_workload(seed=1)
    with SiteDatabase() as db:          # devstack.sitedb
        record_ids = db.load_workload(workload)
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal, TypedDict

# -- ConfigMgr constants ------------------------------------------------------------

GENERIC_INFO: Final = 39997
GENERIC_WARNING: Final = 39998
GENERIC_ERROR: Final = 39999
GENERIC_MESSAGE_IDS: Final = (GENERIC_INFO, GENERIC_WARNING, GENERIC_ERROR)

# Severity as SQL Server's signed int shows it (0x40000000, 0x80000000, 0xC0000000).
SEVERITY_INFO: Final = 1073741824
SEVERITY_WARNING: Final = -2147483648
SEVERITY_ERROR: Final = -1073741824

MESSAGE_TYPE_MILESTONE: Final = 256
MESSAGE_TYPE_DETAIL: Final = 512
MESSAGE_TYPE_AUDIT: Final = 768

#: Attribute a generic status message carries (``Attribute403`` in the client script).
ATTRIBUTE_GENERIC: Final = 403
GENERIC_ATTRIBUTE_VALUE: Final = "GenericMsg_SeeInsertionStrings"

#: A site's RecordIDs live in their own 2^56-wide range; site i starts at (i + 1) * 2^56.
RECORD_ID_RANGE: Final = 2**56
#: Insertion strings per message, and the client-side length limit of one.
INSERTION_STRING_COUNT: Final = 10
INSERTION_STRING_MAX_LENGTH: Final = 255

DEFAULT_START: Final = datetime(2024, 11, 4, 6, 0, 0)  # a Monday morning, UTC


def site_record_id_base(site_index: int) -> int:
    """First RecordID of the site at ``site_index`` (0-based) in a workload."""
    if not 0 <= site_index < 126:
        raise ValueError("site_index must be 0..125 (RecordIDs are signed 64-bit)")
    return (site_index + 1) * RECORD_ID_RANGE


def default_severity(message_id: int) -> int:
    """Severity ConfigMgr stores for a message ID: 39998 warning, 39999 error, else info."""
    if message_id == GENERIC_WARNING:
        return SEVERITY_WARNING
    if message_id == GENERIC_ERROR:
        return SEVERITY_ERROR
    return SEVERITY_INFO


# -- the scenario's rules ---------------------------------------------------------------


class RuleDict(TypedDict):
    """One entry of the project's rules.json."""

    name: str
    description: str
    match: dict[str, str]
    collection_id: str
    action: Literal["add", "remove"]
    target: Literal["adminservice", "webservice"]


MSG_TYPE_OFFICE365_UPGRADE: Final = "MsgType_Office365Upgrade"

#: The Microsoft 365 scenario, exactly as rules.json entries (``{"rules": M365_RULES}``).
#: Treat as read-only; ``copy.deepcopy`` it to derive variants.
M365_RULES: Final[list[RuleDict]] = [
    {
        "name": "project-64bit-reinstall",
        "description": "Project was installed before the 64-bit Microsoft 365 upgrade: "
        "reinstall it",
        "match": {
            "InsertionString1": MSG_TYPE_OFFICE365_UPGRADE,
            "InsertionString2": "projectInstalled",
        },
        "collection_id": "PS100123",
        "action": "add",
        "target": "adminservice",
    },
    {
        "name": "visio-64bit-reinstall",
        "description": "Visio was installed before the 64-bit Microsoft 365 upgrade: reinstall it",
        "match": {
            "InsertionString1": MSG_TYPE_OFFICE365_UPGRADE,
            "InsertionString2": "visioInstalled",
        },
        "collection_id": "PS100124",
        "action": "add",
        "target": "adminservice",
    },
    {
        "name": "outlook-room-plugin-reinstall",
        "description": "The Outlook room finder plug-in was installed before the upgrade: "
        "reinstall it",
        "match": {
            "InsertionString1": MSG_TYPE_OFFICE365_UPGRADE,
            "InsertionString2": "roomPluginInstalled",
        },
        "collection_id": "PS100125",
        "action": "add",
        "target": "adminservice",
    },
]

# (rule name, the value in InsertionString2) for building messages that match.
_RULE_VALUES: Final = tuple(
    (rule["name"], rule["match"]["InsertionString2"]) for rule in M365_RULES
)


# -- generated records --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedStatusMessage:
    """One status message to load into ``v_StatusMessage`` and its companion views.

    ``insertion_strings[0]`` is InsertionString1; None means the message has no such
    string (no row in ``v_StatMsgInsStrings``). ``severity`` None means "derive from
    message_id" and is replaced in ``__post_init__``, so it is always set afterwards.
    ``expected_rules`` is the ground truth by construction; ``kind`` a short label of
    why the message exists.
    """

    site_code: str
    machine_name: str
    time_utc: datetime
    message_id: int = GENERIC_INFO
    insertion_strings: tuple[str | None, ...] = ()
    severity: int | None = None
    message_type: int = MESSAGE_TYPE_MILESTONE
    component: str = "Task Sequence Manager"
    record_id: int | None = None
    expected_rules: frozenset[str] = frozenset()
    kind: str = ""
    module_name: str = "SMS Client"

    def __post_init__(self) -> None:
        if len(self.insertion_strings) > INSERTION_STRING_COUNT:
            raise ValueError(f"at most {INSERTION_STRING_COUNT} insertion strings")
        if self.time_utc.tzinfo is not None:
            raise ValueError("time_utc is naive UTC, like the site database's datetime")
        if len(self.site_code) != 3:
            raise ValueError(f"site code {self.site_code!r} is not 3 characters")
        if self.severity is None:
            object.__setattr__(self, "severity", default_severity(self.message_id))

    def insertion_string(self, number: int) -> str | None:
        """InsertionString<number> (1-based), or None when the message has none."""
        index = number - 1
        return self.insertion_strings[index] if index < len(self.insertion_strings) else None


@dataclass(frozen=True, slots=True)
class GeneratedDevice:
    """One ``v_R_System`` record. Several records may share a name (duplicates)."""

    resource_id: int
    name: str
    netbios_name: str
    sms_unique_identifier: str | None
    domain: str | None
    full_domain: str | None
    client: int | None
    active: int | None
    obsolete: int | None
    decommissioned: int | None
    creation_date: datetime


@dataclass(frozen=True)
class Workload:
    """Sites, discovery records and status messages, with the expected answers.

    ``messages`` are in arrival order: loading them in this order gives each site
    increasing RecordIDs. ``expected_resolution`` maps every machine name (upper case)
    that appears in a message or a device record to the ResourceID an admin would pick,
    ``'ambiguous'`` or ``'unknown-device'``. ``machine_scenarios`` says why (upper-case
    name -> scenario label such as ``'reimaged'``, ``'tie'``, ``'unknown'``).
    """

    sites: tuple[str, ...]
    devices: tuple[GeneratedDevice, ...]
    messages: tuple[GeneratedStatusMessage, ...]
    expected_resolution: dict[str, int | str]
    machine_scenarios: dict[str, str] = field(default_factory=dict)

    def kind_counts(self) -> Counter[str]:
        """How many messages of each kind."""
        return Counter(m.kind for m in self.messages)

    def matching_messages(self) -> list[GeneratedStatusMessage]:
        """Messages generated to match at least one rule, in arrival order."""
        return [m for m in self.messages if m.expected_rules]

    def site_index(self, site_code: str) -> int:
        """Position of the site in ``sites`` (its RecordID range is that index + 1)."""
        return self.sites.index(site_code.upper())


# -- building blocks ----------------------------------------------------------------------

#: Values hostile to naive SQL, logging, CSV, JSON and display code. No NUL: neither
#: a ConfigMgr client nor PostgreSQL text can carry one. No characters ICU ignores
#: (U+200B, U+00AD, C0 controls other than tab/LF/CR), which would compare unlike SQL
#: Server's collation in the stand-in.
HOSTILE_STRINGS: Final[tuple[str, ...]] = (
    "'",
    "O'Brien's PC",
    "' or 1=1 --",
    "x'); DROP TABLE v_StatusMessage; --",
    ";DROP TABLE StatusMessages",
    "100%",
    "%_[]^",
    '"double" \\back\\slash',
    "line one\nline two",
    "tab\tseparated\tvalue",
    "crlf\r\nline",
    "Ñandú-PC",
    "ПК-ОФИС",
    "办公室电脑",
    "🎉🔥 upgrade done 👍",
    "<script>alert(1)</script>",
    "${jndi:ldap://example.invalid/a}",
    "=cmd|' /C calc'!A0",
    "NULL",
    "a" * INSERTION_STRING_MAX_LENGTH,
    "é" * INSERTION_STRING_MAX_LENGTH,
    ("projectInstalled" + "\u2603" * INSERTION_STRING_MAX_LENGTH)[:INSERTION_STRING_MAX_LENGTH],
)

#: Machine names no discovery record has; every one is an 'unknown-device'.
HOSTILE_MACHINE_NAMES: Final[tuple[str, ...]] = (
    "PC01'; DROP TABLE v_R_System; --",
    "' OR 1=1 --",
    "%",
    "💻-LAPTOP",
    "NAME\tWITH\tTABS",
    "LINE\nBREAK",
)

_NON_ASCII_MACHINES: Final = ("Ñandú-PC", "ПК-ОФИС")


@dataclass(frozen=True, slots=True)
class _Rec:
    """One discovery record of a device scenario (creation = start - age_days)."""

    client: int | None = 1
    active: int | None = 1
    obsolete: int | None = 0
    decommissioned: int | None = 0
    age_days: float = 120.0
    lower_name: bool = False
    ad_only: bool = False


# Device scenarios: the records of one machine, and which record an experienced admin
# picks (its index), 'ambiguous' or 'unknown-device'. Written down by hand from the pick
# rule (client, not obsolete (NULL = 0), not decommissioned, active, newest creation).
_SCENARIOS: Final[dict[str, tuple[tuple[_Rec, ...], int | str]]] = {
    "reimaged": ((_Rec(active=0, obsolete=1, age_days=400), _Rec(age_days=20)), 1),
    "reimaged-twice": (
        (
            _Rec(active=0, obsolete=1, age_days=800),
            _Rec(active=0, obsolete=1, age_days=300),
            _Rec(age_days=10),
        ),
        2,
    ),
    # The AD-only record is the newest: only Client0 = 1 rules it out.
    "ad-only-beside-client": (
        (_Rec(age_days=200), _Rec(client=0, active=0, obsolete=None, age_days=5, ad_only=True)),
        0,
    ),
    "ad-only": (
        (_Rec(client=0, active=0, obsolete=None, ad_only=True, age_days=100),),
        "unknown-device",
    ),
    "obsolete-null": ((_Rec(obsolete=None, age_days=150),), 0),
    "obsolete-null-beside-obsolete": (
        (_Rec(active=0, obsolete=1, age_days=500), _Rec(obsolete=None, age_days=60)),
        1,
    ),
    "decommissioned-only": ((_Rec(decommissioned=1, age_days=90),), "unknown-device"),
    "decommissioned-newer": ((_Rec(age_days=300), _Rec(decommissioned=1, age_days=10)), 0),
    "inactive-only": ((_Rec(active=0, age_days=120),), "unknown-device"),
    "inactive-newer": ((_Rec(age_days=400), _Rec(active=0, age_days=15)), 0),
    "duplicate-newest": ((_Rec(age_days=250), _Rec(age_days=40)), 1),
    "tie": ((_Rec(age_days=77), _Rec(age_days=77)), "ambiguous"),
    "tie-after-filter": (
        (_Rec(age_days=50), _Rec(age_days=50), _Rec(obsolete=1, age_days=5)),
        "ambiguous",
    ),
    "device-lowercase": ((_Rec(lower_name=True, age_days=100),), 0),
    "message-lowercase": ((_Rec(age_days=100),), 0),
    "mixed-case-duplicate": (
        (_Rec(active=0, obsolete=1, lower_name=True, age_days=400), _Rec(age_days=30)),
        1,
    ),
}
#: The device scenarios every generate_workload() site gets one machine of.
DEVICE_SCENARIOS: Final = tuple(_SCENARIOS)

_DEMO_SCENARIOS: Final = ("reimaged", "ad-only-beside-client", "tie", "obsolete-null")

# Kinds of message that match a rule (expected_rules is set) and those that do not.
MATCHING_KINDS: Final = (
    "project", "visio", "room-plugin", "match-case", "match-trailing-space",
    "match-extra-strings", "repeat", "hostile-machine", "unknown-machine",
)  # fmt: skip
NON_MATCHING_KINDS: Final = (
    "nonmatching-msgtype", "nonmatching-value", "wrong-position", "only-one-string",
    "suffix", "leading-space", "no-strings", "empty-string", "hostile", "max-length",
    "warning-39998", "error-39999", "other-message", "other-id-matching-strings",
)  # fmt: skip
_CANONICAL: Final = {"project": 0, "visio": 1, "room-plugin": 2}

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

# Other status messages: (MessageID, ModuleName, Component, MessageType, severity,
# from the site server?, how many insertion strings).
_OtherSpec = tuple[int, str, str, int, int, bool, int]
_OTHER_MESSAGES: Final[tuple[_OtherSpec, ...]] = (
    (10002, "SMS Client", "Software Distribution", 256, SEVERITY_INFO, False, 3),
    (10005, "SMS Client", "Software Distribution", 256, SEVERITY_INFO, False, 4),
    (10008, "SMS Client", "Software Distribution", 256, SEVERITY_INFO, False, 4),
    (10018, "SMS Client", "Software Distribution", 256, SEVERITY_ERROR, False, 5),
    (11134, "SMS Client", "Task Sequence Engine", 512, SEVERITY_INFO, False, 4),
    (11144, "SMS Client", "Task Sequence Engine", 256, SEVERITY_INFO, False, 2),
    (11170, "SMS Client", "Task Sequence Manager", 256, SEVERITY_INFO, False, 2),
    (11171, "SMS Client", "Task Sequence Manager", 256, SEVERITY_INFO, False, 3),
    (500, "SMS Server", "SMS_SITE_COMPONENT_MANAGER", 256, SEVERITY_INFO, True, 1),
    (2301, "SMS Server", "SMS_DISTRIBUTION_MANAGER", 256, SEVERITY_INFO, True, 2),
    (5203, "SMS Server", "SMS_DISCOVERY_DATA_MANAGER", 512, SEVERITY_WARNING, True, 3),
    (30015, "SMS Provider", "Microsoft.ConfigurationManagement.exe", 768, SEVERITY_INFO,
     True, 4),
)  # fmt: skip

_OTHER_MSGTYPES: Final = (
    "MsgType_WindowsUpgrade", "MsgType_Office365Install", "MsgType_Office365Upgrade2",
    "MsgType_Office365", "MsgType_Office365_Upgrade", "MsgType_DriverUpdate",
)  # fmt: skip
_OTHER_VALUES: Final = (
    "accessInstalled", "projectRemoved", "visioUninstalled", "project Installed",
    "teamsInstalled", "roomPlugin", "projectInstaled", "visio", "installed",
)  # fmt: skip
_EXTRA_STRINGS: Final = (
    "Office 365 64-bit upgrade", "PS100045", "Detect installed apps", "HP EliteBook 840 G8",
    "Lenovo ThinkPad T14 Gen 3", "16.0.17928.20156", "C:\\Windows\\CCM\\Logs\\smsts.log",
)  # fmt: skip


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
class _Machine:
    name: str  # as the discovery record spells it
    site: str
    scenario: str
    message_name: str  # as the client reports it in MachineName


@dataclass
class _Spec:
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


class _Builder:
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
        self.clean: list[_Machine] = []
        self.special: list[_Machine] = []
        self.unknown: list[_Machine] = []
        self.servers: dict[str, _Machine] = {}
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

    def _add_records(self, name: str, site: str, recs: Sequence[_Rec]) -> list[int]:
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

    def add_clean(self, site: str, name: str | None = None) -> _Machine:
        """A machine with one healthy client record."""
        name = name or self._new_name()
        age = self.rng.uniform(20, 1200)
        (resource_id,) = self._add_records(name, site, [_Rec(age_days=round(age, 2))])
        machine = _Machine(name, site, "clean", name)
        self.resolution[name.upper()] = resource_id
        self.scenarios[name.upper()] = "clean"
        self.clean.append(machine)
        return machine

    def add_scenario(self, site: str, scenario: str, name: str | None = None) -> _Machine:
        """A machine whose records follow one of the duplicate/edge scenarios."""
        recs, expected = _SCENARIOS[scenario]
        name = name or self._new_name()
        ids = self._add_records(name, site, recs)
        reported = name.lower() if scenario == "message-lowercase" else name
        machine = _Machine(name, site, scenario, reported)
        self.resolution[name.upper()] = ids[expected] if isinstance(expected, int) else expected
        self.scenarios[name.upper()] = scenario
        self.special.append(machine)
        return machine

    def add_unknown(self, site: str, name: str | None = None) -> _Machine:
        """A machine that sends messages but has no discovery record at all."""
        name = name or "DESKTOP-" + "".join(
            self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(7)
        )
        machine = _Machine(name, site, "unknown", name)
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

    def _sender(self) -> _Machine:
        # Mostly ordinary machines; the special ones send now and then too.
        if self.special and self.rng.random() < 0.12:
            return self.rng.choice(self.special)
        return self.rng.choice(self.clean)

    def _rule(self) -> tuple[str, str]:
        return self.rng.choice(_RULE_VALUES)

    def _spec(
        self,
        kind: str,
        machine: _Machine,
        strings: tuple[str | None, ...],
        rules: frozenset[str] = frozenset(),
        **extra: object,
    ) -> _Spec:
        spec = _Spec(
            kind=kind, site=machine.site, machine=machine.message_name, strings=strings, rules=rules
        )
        for key, value in extra.items():
            setattr(spec, key, value)
        return spec

    def _reported_name(self, machine: _Machine) -> str:
        # Clients of a non-ASCII machine sometimes report the name in upper case.
        if machine.name in _NON_ASCII_MACHINES and self.rng.random() < 0.3:
            return machine.name.upper()
        return machine.message_name

    def build_kind(self, kind: str, machine: _Machine | None = None) -> _Spec:
        """One message of ``kind`` (not 'repeat': see :meth:`repeats`)."""
        rng = self.rng
        m = machine or self._sender()
        msg = MSG_TYPE_OFFICE365_UPGRADE
        if kind in _CANONICAL:
            name, value = _RULE_VALUES[_CANONICAL[kind]]
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
            extras: list[str | None] = [
                rng.choice(_EXTRA_STRINGS) for _ in range(rng.randint(1, 8))
            ]
            if rng.random() < 0.3:
                extras[rng.randrange(len(extras))] = None  # a gap: no row for that index
            if rng.random() < 0.4:
                extras[rng.randrange(len(extras))] = rng.choice(HOSTILE_STRINGS)
            if extras[-1] is None:
                extras[-1] = rng.choice(_EXTRA_STRINGS)
            return self._spec(kind, m, (msg, value, *extras), frozenset({name}))
        if kind in ("hostile-machine", "unknown-machine"):
            name, value = self._rule()
            if kind == "hostile-machine":
                hostile = rng.choice(HOSTILE_MACHINE_NAMES)
                host = _Machine(hostile, rng.choice(self.sites), "unknown", hostile)
            else:
                host = rng.choice(self.unknown)
            return self._spec(kind, host, (msg, value), frozenset({name}))
        if kind == "nonmatching-msgtype":
            s1 = rng.choice(_OTHER_MSGTYPES)
            return self._spec(kind, m, (s1, self._rule()[1]))
        if kind == "nonmatching-value":
            return self._spec(kind, m, (msg, rng.choice(_OTHER_VALUES)))
        if kind == "wrong-position":
            value = self._rule()[1]
            layouts: tuple[tuple[str | None, ...], ...] = (
                (value, msg),
                (msg, None, value),
                (None, msg, value),
                (msg, "", value),
                (rng.choice(_EXTRA_STRINGS), msg, value),
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
            mid, module, component, mtype, severity, server, count = rng.choice(_OTHER_MESSAGES)
            sender = self.servers.get(m.site, m) if server else m
            if kind == "other-id-matching-strings":
                other: tuple[str | None, ...] = (msg, self._rule()[1])
            else:
                other = tuple(rng.choice(_EXTRA_STRINGS) for _ in range(count))
            return self._spec(
                kind, sender, other, message_id=mid, severity=severity,
                message_type=mtype, component=component, module_name=module,
            )  # fmt: skip
        raise ValueError(f"unknown message kind {kind!r}")

    def repeats(self, originals: Sequence[_Spec], count: int) -> list[_Spec]:
        """Re-sends of facts already sent: same machine, same strings, later arrival."""
        out: list[_Spec] = []
        for _ in range(count):
            original = self.rng.choice(originals)
            later = original.arrival + timedelta(minutes=self.rng.uniform(1, 240))
            end = self.start + self.span
            if later >= end:
                later = original.arrival + (end - original.arrival) * self.rng.random()
            out.append(_Spec(
                kind="repeat", site=original.site, machine=original.machine,
                strings=original.strings, rules=original.rules, arrival=later,
            ))  # fmt: skip
        return out

    def arrival(self) -> datetime:
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

    def finish(self, specs: list[_Spec]) -> Workload:
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


def _counts(mix: dict[str, float], total: int) -> dict[str, int]:
    counts = {kind: int(share * total) for kind, share in mix.items()}
    if total >= 2 * len(mix):
        counts = {kind: max(1, n) for kind, n in counts.items()}
    counts["other-message"] += total - sum(counts.values())
    if counts["other-message"] < 0:
        raise ValueError(f"message_count {total} is too small for the mix")
    return counts


def _build_messages(
    builder: _Builder, counts: dict[str, int], must_send: Sequence[_Machine]
) -> list[_Spec]:
    canonical_kinds = [k for k in _CANONICAL if counts.get(k, 0) > 0]
    specs: list[_Spec] = []
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
    originals = [s for s in specs if s.kind in _CANONICAL or s.kind.startswith("match-")]
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
    builder = _Builder(seed=seed, sites=sites, start=start, span=span)
    # Non-ASCII machines: Ñandú-PC (re-imaged) on the first site, ПК-ОФИС (two healthy
    # records, newest wins) on the second, or on the first when there is only one.
    non_ascii: dict[int, list[tuple[str, str]]] = {0: [(_NON_ASCII_MACHINES[0], "reimaged")]}
    non_ascii.setdefault(min(1, len(builder.sites) - 1), []).append(
        (_NON_ASCII_MACHINES[1], "duplicate-newest")
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
    builder = _Builder(seed=seed, sites=("PS1", "PS2"), start=start, span=timedelta(hours=8))
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


__all__ = [
    "DEVICE_SCENARIOS",
    "GENERIC_MESSAGE_IDS",
    "HOSTILE_MACHINE_NAMES",
    "HOSTILE_STRINGS",
    "M365_RULES",
    "MATCHING_KINDS",
    "NON_MATCHING_KINDS",
    "RECORD_ID_RANGE",
    "WORKLOAD_MIX",
    "GeneratedDevice",
    "GeneratedStatusMessage",
    "RuleDict",
    "Workload",
    "default_severity",
    "generate_workload",
    "m365_demo_scenario",
    "site_record_id_base",
]
