"""v_FullCollectionMembership in the site database stand-in, read as the reader login
through pyodbc, as cm-remediate reads it to decide "already a member"."""

from __future__ import annotations

import time

import pyodbc
import pytest

from devstack.sitedb import SiteDatabase

pytestmark = pytest.mark.stack

LOOKUP = (
    "SELECT CollectionID, ResourceID, IsDirect, Name, SiteCode, ResourceType "
    "FROM v_FullCollectionMembership WHERE CollectionID = ? AND ResourceID = ?"
)


def rows_of(reader: pyodbc.Connection, collection_id: str) -> dict[int, int]:
    cursor = reader.execute(
        "SELECT ResourceID, IsDirect FROM v_FullCollectionMembership "
        "WHERE CollectionID = ? ORDER BY ResourceID",
        collection_id,
    )
    return {int(row[0]): int(row[1]) for row in cursor.fetchall()}


def test_view_columns_and_types(reader: pyodbc.Connection) -> None:
    rows = reader.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'v_fullcollectionmembership' ORDER BY ordinal_position"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("collectionid", "character"),  # unbounded bpchar, like every text column here
        ("resourceid", "integer"),
        ("resourcetype", "integer"),
        ("name", "character"),
        ("sitecode", "character"),
        ("isdirect", "integer"),  # 0/1, as v_R_System's flags
    ]


def test_reader_reads_the_view_but_not_the_base_table(
    db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    db.set_collection_members("PS100123", {16777219: True}, names={16777219: "PC01"})
    row = reader.execute(LOOKUP, "PS100123", 16777219).fetchone()
    assert tuple(row) == ("PS100123", 16777219, 1, "PC01", "PS1", 5)
    with pytest.raises(pyodbc.ProgrammingError) as error:
        reader.execute("SELECT * FROM collection_members").fetchall()
    assert error.value.args[0] == "42501"  # permission denied
    with pytest.raises(pyodbc.Error):
        reader.execute("DELETE FROM v_FullCollectionMembership")


def test_collection_id_compares_case_insensitively(
    db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    db.set_collection_members("PS100123", {16777219: True, 16777220: False})
    assert reader.execute(LOOKUP, "ps100123", 16777219).fetchone() is not None
    assert reader.execute(LOOKUP, "Ps100123", 16777220).fetchone()[2] == 0
    assert reader.execute(LOOKUP, "PS100124", 16777219).fetchone() is None
    assert reader.execute(LOOKUP, "PS100123", 16777221).fetchone() is None
    (name,) = reader.execute(LOOKUP, "PS100123", 16777219).fetchone()[3:4]
    assert name is None  # no name given: NULL


def test_set_replaces_one_collection_only(db: SiteDatabase, reader: pyodbc.Connection) -> None:
    db.set_collection_members("PS100123", {1: True, 2: True, 3: True})
    db.set_collection_members("PS100124", {1: True})
    db.set_collection_members("ps100123", {3: True, 4: False})
    assert rows_of(reader, "PS100123") == {3: 1, 4: 0}
    assert rows_of(reader, "PS100124") == {1: 1}
    db.set_collection_members("PS100123", {})
    assert rows_of(reader, "PS100123") == {}
    assert db.collection_members("PS100124") == {1: True}


def test_single_changes(db: SiteDatabase, reader: pyodbc.Connection) -> None:
    db.set_collection_members("PS100123", {1: True, 2: True})
    db.apply_membership_change("PS100123", 3, True, name="PC03")
    db.apply_membership_change("PS100123", 1, False)  # changed in place, not doubled
    db.apply_membership_change("PS100123", 2, None)
    db.apply_membership_change("PS100123", 99, None)  # not a member: nothing to remove
    assert rows_of(reader, "PS100123") == {1: 0, 3: 1}
    assert reader.execute(LOOKUP, "PS100123", 3).fetchone()[3] == "PC03"
    assert db.count("v_FullCollectionMembership") == 2


def test_reset_clears_membership(db: SiteDatabase, reader: pyodbc.Connection) -> None:
    db.set_collection_members("PS100123", {1: True})
    db.reset()
    assert rows_of(reader, "PS100123") == {}


@pytest.mark.parametrize(
    ("collection_id", "resource_id"),
    [("PS1001234", 1), ("PS1'0012", 1), ("", 1), ("PS100123", 2**31), ("PS100123", 0)],
)
def test_values_the_view_cannot_hold_are_refused(
    db: SiteDatabase, collection_id: str, resource_id: int
) -> None:
    with pytest.raises(ValueError, match=r"CollectionID|ResourceID"):
        db.set_collection_members(collection_id, {resource_id: True})
    with pytest.raises(ValueError, match=r"CollectionID|ResourceID"):
        db.apply_membership_change(collection_id, resource_id, True)


def test_twenty_thousand_members_load_fast_and_lookups_use_the_index(
    db: SiteDatabase, reader: pyodbc.Connection
) -> None:
    members = {16800000 + i: True for i in range(20_000)}
    began = time.perf_counter()
    db.set_collection_members("PS100123", members)
    elapsed = time.perf_counter() - began
    assert elapsed < 2.0, f"20,000 rows took {elapsed:.2f}s"
    db.set_collection_members("PS100124", {16800000: True})
    assert db.count("v_FullCollectionMembership") == 20_001
    assert reader.execute(LOOKUP, "ps100123", 16819999).fetchone()[1] == 16819999
    plan = "\n".join(
        str(row[0]) for row in reader.execute("EXPLAIN " + LOOKUP, "PS100123", 16800005)
    )
    assert "collection_members_collection_resource" in plan, plan
    began = time.perf_counter()
    db.apply_membership_change("PS100123", 16900000, True)
    assert time.perf_counter() - began < 0.5
    assert len(rows_of(reader, "PS100123")) == 20_001
