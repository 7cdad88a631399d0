"""RecordIDs as ConfigMgr hands them out: one range, and one sequence, per site.

The n-th site registered gets slot n (from 1) and RecordIDs ``n * 2^56`` up to
``(n + 1) * 2^56 - 1``; ``site_record_id_ranges`` remembers each site's slot and
sequence. Every function takes a cursor of the caller's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Final

import pyodbc

from devstack.datagen.model import RECORD_ID_RANGE, GeneratedStatusMessage

_SITE_CODE: Final = re.compile(r"^[A-Z0-9]{3}$")


def valid_site_code(code: str) -> str:
    """``code`` in upper case, once checked to be 3 letters or digits."""
    upper = code.upper()
    if not _SITE_CODE.match(upper):
        raise ValueError(f"site code {code!r} is not 3 letters or digits")
    return upper


def ensure_site(cursor: pyodbc.Cursor, code: str) -> str:
    """The name of the site's sequence; a new site gets the next free slot."""
    row = cursor.execute(
        "SELECT sequence_name FROM site_record_id_ranges WHERE site_code = ?", code
    ).fetchone()
    if row is not None:
        return str(row[0])
    slot_row = cursor.execute(
        "SELECT COALESCE(MAX(slot), 0) + 1 FROM site_record_id_ranges"
    ).fetchone()
    slot = int(slot_row[0])
    base = slot * RECORD_ID_RANGE
    name = f"record_id_{code.lower()}"  # code is [A-Z0-9]{3}: safe as an identifier
    # Sequences, like SQL Server identity values, are not transactional: a value
    # handed out is never handed out again, even if its transaction rolls back.
    cursor.execute(
        f"CREATE SEQUENCE {name} AS bigint START WITH {base} MINVALUE {base} "
        f"MAXVALUE {base + RECORD_ID_RANGE - 1} NO CYCLE"
    )
    cursor.execute(
        "INSERT INTO site_record_id_ranges (site_code, slot, sequence_name) "
        "VALUES (?, ?, ?)",
        code, slot, name,
    )  # fmt: skip
    return name


def slot_base(cursor: pyodbc.Cursor, code: str) -> int:
    """The first RecordID of a registered site's range."""
    row = cursor.execute(
        "SELECT slot FROM site_record_id_ranges WHERE site_code = ?", code
    ).fetchone()
    return int(row[0]) * RECORD_ID_RANGE


def assign_record_ids(
    cursor: pyodbc.Cursor, messages: Sequence[GeneratedStatusMessage]
) -> list[int]:
    """RecordIDs for ``messages`` in order: its own ``record_id`` when set (it must lie
    in its site's range), else the next value of its site's sequence."""
    sequences: dict[str, str] = {}
    needed: dict[str, int] = {}
    for message in messages:
        code = valid_site_code(message.site_code)
        if code not in sequences:
            sequences[code] = ensure_site(cursor, code)
        if message.record_id is None:
            needed[code] = needed.get(code, 0) + 1
    reserved: dict[str, Iterator[int]] = {}
    for code, count in needed.items():
        rows = cursor.execute(
            "SELECT nextval(CAST(? AS regclass)) FROM generate_series(1, CAST(? AS integer))",
            sequences[code], count,
        ).fetchall()  # fmt: skip
        reserved[code] = iter(sorted(int(row[0]) for row in rows))
    ids: list[int] = []
    explicit_max: dict[str, int] = {}
    for message in messages:
        code = message.site_code.upper()
        if message.record_id is None:
            ids.append(next(reserved[code]))
            continue
        base = slot_base(cursor, code)
        if not base <= message.record_id < base + RECORD_ID_RANGE:
            raise ValueError(
                f"RecordID {message.record_id} is outside site {code}'s range "
                f"{base}..{base + RECORD_ID_RANGE - 1}"
            )
        ids.append(message.record_id)
        explicit_max[code] = max(explicit_max.get(code, 0), message.record_id)
    for code, highest in explicit_max.items():
        # Keep the sequence above explicitly numbered rows, as IDENTITY_INSERT does.
        cursor.execute(
            "SELECT setval(CAST(? AS regclass), GREATEST(CAST(? AS bigint), "
            "COALESCE(pg_sequence_last_value(CAST(? AS regclass)), 0)))",
            sequences[code], highest, sequences[code],
        )  # fmt: skip
    return ids
