"""The hand-written tables the workload builder draws from.

Hostile strings and machine names, the device scenarios with the record an admin
would pick, the message kinds, and the other ConfigMgr messages and strings that fill
a realistic workload. Change a table here and the ground truth follows, because the
builder labels what it builds from these tables alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devstack.datagen.model import (
    INSERTION_STRING_MAX_LENGTH,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    SEVERITY_WARNING,
)

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

NON_ASCII_MACHINES: Final = ("Ñandú-PC", "ПК-ОФИС")


@dataclass(frozen=True, slots=True)
class Rec:
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
SCENARIO_RECORDS: Final[dict[str, tuple[tuple[Rec, ...], int | str]]] = {
    "reimaged": ((Rec(active=0, obsolete=1, age_days=400), Rec(age_days=20)), 1),
    "reimaged-twice": (
        (
            Rec(active=0, obsolete=1, age_days=800),
            Rec(active=0, obsolete=1, age_days=300),
            Rec(age_days=10),
        ),
        2,
    ),
    # The AD-only record is the newest: only Client0 = 1 rules it out.
    "ad-only-beside-client": (
        (Rec(age_days=200), Rec(client=0, active=0, obsolete=None, age_days=5, ad_only=True)),
        0,
    ),
    "ad-only": (
        (Rec(client=0, active=0, obsolete=None, ad_only=True, age_days=100),),
        "unknown-device",
    ),
    "obsolete-null": ((Rec(obsolete=None, age_days=150),), 0),
    "obsolete-null-beside-obsolete": (
        (Rec(active=0, obsolete=1, age_days=500), Rec(obsolete=None, age_days=60)),
        1,
    ),
    "decommissioned-only": ((Rec(decommissioned=1, age_days=90),), "unknown-device"),
    "decommissioned-newer": ((Rec(age_days=300), Rec(decommissioned=1, age_days=10)), 0),
    "inactive-only": ((Rec(active=0, age_days=120),), "unknown-device"),
    "inactive-newer": ((Rec(age_days=400), Rec(active=0, age_days=15)), 0),
    "duplicate-newest": ((Rec(age_days=250), Rec(age_days=40)), 1),
    "tie": ((Rec(age_days=77), Rec(age_days=77)), "ambiguous"),
    "tie-after-filter": (
        (Rec(age_days=50), Rec(age_days=50), Rec(obsolete=1, age_days=5)),
        "ambiguous",
    ),
    "device-lowercase": ((Rec(lower_name=True, age_days=100),), 0),
    "message-lowercase": ((Rec(age_days=100),), 0),
    "mixed-case-duplicate": (
        (Rec(active=0, obsolete=1, lower_name=True, age_days=400), Rec(age_days=30)),
        1,
    ),
}
#: The device scenarios every generate_workload() site gets one machine of.
DEVICE_SCENARIOS: Final = tuple(SCENARIO_RECORDS)

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
#: The kinds that carry one rule's exact values: kind -> the rule's index in M365_RULES.
CANONICAL_KINDS: Final = {"project": 0, "visio": 1, "room-plugin": 2}

# Other status messages: (MessageID, ModuleName, Component, MessageType, severity,
# from the site server?, how many insertion strings).
OtherMessage = tuple[int, str, str, int, int, bool, int]
OTHER_MESSAGES: Final[tuple[OtherMessage, ...]] = (
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

OTHER_MSGTYPES: Final = (
    "MsgType_WindowsUpgrade", "MsgType_Office365Install", "MsgType_Office365Upgrade2",
    "MsgType_Office365", "MsgType_Office365_Upgrade", "MsgType_DriverUpdate",
)  # fmt: skip
OTHER_VALUES: Final = (
    "accessInstalled", "projectRemoved", "visioUninstalled", "project Installed",
    "teamsInstalled", "roomPlugin", "projectInstaled", "visio", "installed",
)  # fmt: skip
EXTRA_STRINGS: Final = (
    "Office 365 64-bit upgrade", "PS100045", "Detect installed apps", "HP EliteBook 840 G8",
    "Lenovo ThinkPad T14 Gen 3", "16.0.17928.20156", "C:\\Windows\\CCM\\Logs\\smsts.log",
)  # fmt: skip
