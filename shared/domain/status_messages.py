"""Status messages as the site database holds them, and how their strings compare."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

#: Generic status messages a task sequence raises (info, warning, error).
GENERIC_INFO: Final = 39997
GENERIC_WARNING: Final = 39998
GENERIC_ERROR: Final = 39999

#: A generic status message carries InsertionString1 .. InsertionString10.
INSERTION_STRING_COUNT: Final = 10
#: The client-side limit of one insertion string (Microsoft's sample checks it).
INSERTION_STRING_MAX_LENGTH: Final = 255


def insertion_string_key(number: int) -> str:
    """``InsertionStringN`` for N in 1..10, the name used by rules and queue messages."""
    if not 1 <= number <= INSERTION_STRING_COUNT:
        raise ValueError(f"insertion strings are numbered 1..{INSERTION_STRING_COUNT}")
    return f"InsertionString{number}"


INSERTION_STRING_KEYS: Final = tuple(
    insertion_string_key(n) for n in range(1, INSERTION_STRING_COUNT + 1)
)


def sql_equal(left: str, right: str) -> bool:
    """Compare like SQL Server's default collation (``SQL_Latin1_General_CP1_CI_AS``).

    Case-insensitive and accent-sensitive; ``=`` ignores trailing spaces (ANSI padding).
    """
    return left.rstrip(" ").casefold() == right.rstrip(" ").casefold()


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """One status message read from ``v_StatusMessage`` with its insertion strings.

    ``machine_name`` and every insertion string are untrusted: any client that reaches
    a management point can send any of them.
    """

    site_code: str
    record_id: int
    message_id: int
    time_utc: datetime
    machine_name: str
    #: Index 0 is InsertionString1; None where the message has no such string.
    insertion_strings: tuple[str | None, ...]
    #: The ResourceID the site attached to the message (``SMS_StatMsgWithInsStrings``
    #: has one, "may be NULL"); None where the source has none. Never trusted alone:
    #: the remediation side acts only when the machine name resolves to the same one.
    resource_id: int | None = None

    def __post_init__(self) -> None:
        if len(self.insertion_strings) != INSERTION_STRING_COUNT:
            raise ValueError(f"expected {INSERTION_STRING_COUNT} insertion string slots")
        if self.time_utc.tzinfo is None:
            object.__setattr__(self, "time_utc", self.time_utc.replace(tzinfo=UTC))

    def insertion_string(self, key: str) -> str | None:
        """The value of ``InsertionStringN``, or None when the message has none."""
        return self.insertion_strings[INSERTION_STRING_KEYS.index(key)]

    def present_insertion_strings(self) -> dict[str, str]:
        """``{"InsertionStringN": value}`` for the strings the message carries."""
        return {
            key: value
            for key, value in zip(INSERTION_STRING_KEYS, self.insertion_strings, strict=True)
            if value is not None
        }


@dataclass(frozen=True, slots=True)
class SiteSummary:
    """What a status message source holds for one site: its newest generic message."""

    site_code: str
    newest_record_id: int
    newest_time_utc: datetime
