"""Collection membership as collection evaluation leaves it: the rows behind
``v_FullCollectionMembership``, one per (collection, resource).

A whole collection is replaced with one DELETE and one ``json_to_recordset`` insert (a
single round trip for 20,000 rows, like the status message loader); one resource
joining or leaving is a delta on its own row. Collection IDs compare as the view does
(``bpchar`` with the case-insensitive collation), so the unique index serves both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

import pyodbc

from devstack.sitedb.loading import _check_text

_INT32_MAX: Final = 2**31 - 1
_COLLECTION_ID: Final = re.compile(r"[A-Za-z0-9]{1,8}")

_DELETE_COLLECTION: Final = "DELETE FROM collection_members WHERE collection_id::bpchar = ?"
_DELETE_ONE: Final = (
    "DELETE FROM collection_members WHERE collection_id::bpchar = ? AND resource_id = ?"
)
_INSERT: Final = """
INSERT INTO collection_members (collection_id, resource_id, is_direct, name, site_code)
SELECT ?, r.resource_id, r.is_direct, r.name, ?
FROM json_to_recordset(CAST(? AS json))
     AS r(resource_id integer, is_direct integer, name text)
"""
_SELECT: Final = (
    "SELECT resource_id, is_direct FROM collection_members "
    "WHERE collection_id::bpchar = ? ORDER BY resource_id"
)


def valid_collection_id(collection_id: str) -> str:
    """``collection_id`` if it fits the view's CollectionID (1-8 letters or digits)."""
    if not _COLLECTION_ID.fullmatch(collection_id):
        raise ValueError(f"CollectionID {collection_id!r}: 1 to 8 letters or digits")
    return collection_id


def _valid_resource_id(resource_id: int) -> int:
    if isinstance(resource_id, bool) or not 0 < resource_id <= _INT32_MAX:
        raise ValueError(f"ResourceID {resource_id!r} does not fit the view's int column")
    return resource_id


def member_rows(
    members: Mapping[int, bool], names: Mapping[int, str | None] | None
) -> list[dict[str, object]]:
    """Checked rows for :func:`replace_collection`, in ResourceID order."""
    rows: list[dict[str, object]] = []
    for resource_id in sorted(members):
        name = names.get(resource_id) if names is not None else None
        _check_text(name, "Name")
        rows.append({
            "resource_id": _valid_resource_id(resource_id),
            "is_direct": 1 if members[resource_id] else 0,
            "name": name,
        })  # fmt: skip
    return rows


def replace_collection(
    cursor: pyodbc.Cursor,
    collection_id: str,
    rows: list[dict[str, object]],
    site_code: str | None,
) -> None:
    """Make the collection's rows exactly ``rows`` (from :func:`member_rows`)."""
    cursor.execute(_DELETE_COLLECTION, collection_id)
    if rows:
        cursor.execute(_INSERT, collection_id, site_code, json.dumps(rows, ensure_ascii=False))


def change_member(
    cursor: pyodbc.Cursor,
    collection_id: str,
    resource_id: int,
    is_direct: bool | None,
    *,
    name: str | None,
    site_code: str | None,
) -> None:
    """One resource joins (or changes), or with ``is_direct=None`` leaves, a collection."""
    _valid_resource_id(resource_id)
    cursor.execute(_DELETE_ONE, collection_id, resource_id)
    if is_direct is not None:
        rows = member_rows({resource_id: is_direct}, {resource_id: name})
        cursor.execute(_INSERT, collection_id, site_code, json.dumps(rows, ensure_ascii=False))


def read_members(cursor: pyodbc.Cursor, collection_id: str) -> dict[int, bool]:
    """The collection's rows: ResourceID -> IsDirect."""
    rows = cursor.execute(_SELECT, collection_id).fetchall()
    return {int(row[0]): bool(row[1]) for row in rows}
