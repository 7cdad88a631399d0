"""What a workload is made of: ConfigMgr's constants, the generated records, the rules.

``GeneratedStatusMessage`` and ``GeneratedDevice`` are rows as the site database's
views show them; ``Workload`` bundles them with the expected answers. ``M365_RULES``
are the rules the scenario's ground truth refers to.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
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
