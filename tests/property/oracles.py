"""Oracles: the documented rules, written out independently of the code under test."""

from __future__ import annotations

import unicodedata

#: docs/remediation.md: "1-15 characters, none of \ / : * ? " < > |, no whitespace, no
#: control, format, private-use or unassigned characters (Unicode category C), not
#: starting with a period".
FORBIDDEN = frozenset('\\/:*?"<>|')
#: The Unicode White_Space property (PropList.txt), written out rather than asking
#: Python, whose idea of whitespace is not the one under test.
WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]
    + ["\x20", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)


def is_netbios_name(name: str) -> bool:
    """The documented rule (a lone surrogate is category C too)."""
    return (
        1 <= len(name) <= 15
        and not name.startswith(".")
        and not any(c in FORBIDDEN or c in WHITE_SPACE for c in name)
        and not any(unicodedata.category(c).startswith("C") for c in name)
    )


def same_name(stored: str, asked: str) -> bool:
    """The documented name comparison (SQL_Latin1_General_CP1_CI_AS for plain names):
    case-insensitive, trailing spaces ignored."""
    return stored.rstrip(" ").lower() == asked.rstrip(" ").lower()
