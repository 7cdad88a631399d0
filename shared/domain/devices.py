"""Device identity: which discovery record a machine name means, chosen like an admin.

Duplicate names are normal in ConfigMgr (re-imaged machines, AD-only records beside
client records, obsolete records nobody cleaned up). The policy, in order: NetBIOS
name (case-insensitive); client installed; not obsolete (NULL counts as not); not
decommissioned; active; newest record. Records that still tie are not guessed at.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

#: Characters a NetBIOS computer name may not contain (Microsoft's naming rules), plus
#: whitespace and control characters, which no real client reports.
_NETBIOS_FORBIDDEN = re.compile(r'[\\/:*?"<>|\s]')
NETBIOS_MAX_LENGTH = 15


def flag(value: object) -> int | None:
    """A discovery flag (Client0, Active0, ...) as 0/1, or None where it is NULL."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return int(value)
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return int(value) if isinstance(value, str) and value.strip().isdecimal() else None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One discovery record (v_R_System / SMS_R_System)."""

    resource_id: int
    name: str | None
    netbios_name: str | None
    client: int | None
    active: int | None
    obsolete: int | None
    decommissioned: int | None
    creation_date: datetime | None

    def describe(self) -> str:
        """Short text for logs and audit reasons."""
        return (
            f"{self.resource_id}(client={self.client} active={self.active} "
            f"obsolete={self.obsolete} decommissioned={self.decommissioned} "
            f"created={self.creation_date.isoformat() if self.creation_date else '-'})"
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """The decision for one machine name, with the reason an operator can read."""

    kind: Literal["resolved", "ambiguous", "not-found"]
    reason: str
    resource_id: int | None = None
    #: Discovery records carrying the name, whatever their state.
    named_records: int = 0


def is_text(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (a JSON ``"\\ud800"`` escape, or
    UTF-16 cut in half): such a string has no UTF-8, so no URL, ODBC parameter, queue
    message or log can carry it, and no record read back from a service holds one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def netbios_problem(name: str) -> str | None:
    """Why ``name`` cannot be a NetBIOS computer name, or None if it can."""
    if not name:
        return "the machine name is empty"
    if len(name) > NETBIOS_MAX_LENGTH:
        return f"the machine name is longer than {NETBIOS_MAX_LENGTH} characters"
    if _NETBIOS_FORBIDDEN.search(name):
        return "the machine name holds a character NetBIOS names may not contain"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "the machine name holds a control or unassigned character"
    if name.startswith("."):
        return "the machine name starts with a period"
    return None


def choose(machine_name: str, records: list[DeviceRecord]) -> Resolution:
    """Pick the record an experienced admin would pick, or say why there is none."""
    wanted = machine_name.casefold()
    named = [r for r in records if (r.netbios_name or r.name or "").casefold() == wanted]
    if not named:
        return Resolution("not-found", f"no discovery record named {machine_name!r}")
    count = len(named)
    steps: tuple[tuple[str, Callable[[DeviceRecord], bool]], ...] = (
        ("client installed", lambda r: r.client == 1),
        ("not obsolete", lambda r: r.obsolete != 1),
        ("not decommissioned", lambda r: r.decommissioned != 1),
        ("active", lambda r: r.active == 1),
    )
    candidates = named
    for label, keep in steps:
        candidates = [r for r in candidates if keep(r)]
        if not candidates:
            return Resolution(
                "not-found",
                f"{count} record(s) named {machine_name!r}, none {label}: "
                + ", ".join(r.describe() for r in named),
                named_records=count,
            )
    newest = max((r.creation_date or datetime.min) for r in candidates)
    finalists = [r for r in candidates if (r.creation_date or datetime.min) == newest]
    if len(finalists) > 1:
        return Resolution(
            "ambiguous",
            f"{len(finalists)} records named {machine_name!r} tie on every rule: "
            + ", ".join(r.describe() for r in finalists),
            named_records=count,
        )
    chosen = finalists[0]
    reason = f"resource {chosen.resource_id}"
    if count > 1:
        reason += f", chosen among {count} records: " + ", ".join(r.describe() for r in named)
    return Resolution("resolved", reason, chosen.resource_id, named_records=count)
