"""The PostgreSQL stand-in for the site database, through pyodbc and psqlODBC.

Everything is read with the reader login, exactly as the function app reads SQL Server.
Some tests pin down where PostgreSQL/psqlODBC behave unlike SQL Server ("quirk"): the
production SQL has to live with both.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyodbc
import pytest

from devstack.datagen import (
    GENERIC_ERROR,
    GENERIC_WARNING,
    RECORD_ID_RANGE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    SEVERITY_WARNING,
    GeneratedDevice,
    GeneratedStatusMessage,
)
from devstack.ports import LOOPBACK
from devstack.sitedb import BASE_TABLES, READER_VIEWS, SiteDatabase

pytestmark = pytest.mark.stack

T0 = datetime(2024, 11, 4, 8, 0, 0)
HOSTILE = "x'); DROP TABLE status_messages; --"


@pytest.fixture(scope="module")
def db() -> Iterator[SiteDatabase]:
    began = time.perf_counter()
    with SiteDatabase() as database:
        print(f"\nSiteDatabase started in {time.perf_counter() - began:.2f}s")
        yield database


@pytest.fixture
def site(db: SiteDatabase) -> SiteDatabase:
    db.reset()
    return db


@pytest.fixture
def reader(site: SiteDatabase) -> Iterator[pyodbc.Connection]:
    connection = site.connect_reader()
    try:
        yield connection
    finally:
        connection.close()


def msg(
    machine: str = "PC01", *strings: str | None, site: str = "PS1", **kw
) -> GeneratedStatusMessage:
    kw.setdefault("time_utc", T0)
    return GeneratedStatusMessage(
        site_code=site, machine_name=machine, insertion_strings=strings, **kw
    )


def device(resource_id: int, name: str, **kw) -> GeneratedDevice:
    values = dict(
        resource_id=resource_id, name=name, netbios_name=name,
        sms_unique_identifier=f"GUID:{resource_id:08X}-0000-0000-0000-000000000000",
        domain="CONTOSO", full_domain="contoso.com", client=1, active=1, obsolete=0,
        decommissioned=0, creation_date=datetime(2024, 1, 1),
    )  # fmt: skip
    values.update(kw)
    return GeneratedDevice(**values)  # type: ignore[arg-type]


def sqlstate(error: pytest.ExceptionInfo[pyodbc.Error]) -> str:
    return str(error.value.args[0])


# -- lifecycle ---------------------------------------------------------------------------


def test_connection_strings_name_the_driver_and_options(db: SiteDatabase) -> None:
    for conn_str in (db.reader_connection_string, db.admin_connection_string):
        assert conn_str.startswith("Driver={PostgreSQL Unicode};Server=127.0.0.1;")
        assert f"Port={db.port};" in conn_str
        assert "UseServerSidePrepare=1;" in conn_str
    assert db.reader_connection_string != db.admin_connection_string
    assert db.start_seconds is not None
    assert db.start_seconds < 30


def test_every_view_is_readable_by_the_reader(reader: pyodbc.Connection) -> None:
    for view in READER_VIEWS:
        assert reader.execute(f"SELECT COUNT(*) FROM {view}").fetchone()[0] == 0


def test_reader_cannot_read_base_tables(reader: pyodbc.Connection) -> None:
    for table in BASE_TABLES:
        with pytest.raises(pyodbc.ProgrammingError) as error:
            reader.execute(f"SELECT * FROM {table}").fetchall()
        assert sqlstate(error) == "42501", table  # permission denied


def test_reader_cannot_write_or_create(reader: pyodbc.Connection) -> None:
    with pytest.raises(pyodbc.ProgrammingError) as error:
        reader.execute("DELETE FROM v_StatusMessage")
    assert sqlstate(error) == "42501"
    with pytest.raises(pyodbc.ProgrammingError) as error:
        reader.execute("CREATE TABLE mine (a int)")
    assert sqlstate(error) in ("25006", "42501")  # read-only session; no CREATE anyway


def test_reader_login_with_wrong_password_is_refused(db: SiteDatabase) -> None:
    bad = db.reader_connection_string.replace("Pwd=", "Pwd=wrong")
    with pytest.raises(pyodbc.Error) as error:
        pyodbc.connect(bad, timeout=5)
    assert sqlstate(error) == "08001"  # psqlODBC reports a failed login as 08001


# -- views, types and text -----------------------------------------------------------------


def test_status_message_columns_and_types(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    ids = site.insert_status_messages([
        msg("PC01", "MsgType_Office365Upgrade", "projectInstalled"),
        msg("PC02", "a", message_id=GENERIC_WARNING),
        msg("PC03", "b", message_id=GENERIC_ERROR, time_utc=T0 + timedelta(milliseconds=10)),
    ])  # fmt: skip
    cursor = reader.execute(
        "SELECT RecordID, ModuleName, MessageID, Severity, MessageType, Component, "
        "MachineName, SiteCode, Time, ProcessID, ThreadID, PerClient, Win32Error, "
        "TopLevelSiteCode FROM v_StatusMessage ORDER BY RecordID"
    )
    # PostgreSQL folds unquoted names: read by position, as the production code does.
    assert [d[0] for d in cursor.description][:3] == ["recordid", "modulename", "messageid"]
    rows = cursor.fetchall()
    assert [r[0] for r in rows] == ids
    first = rows[0]
    assert isinstance(first[0], int) and first[0] >= 2**56
    assert first[2] == 39997 and first[4] == 256
    assert [r[3] for r in rows] == [SEVERITY_INFO, SEVERITY_WARNING, SEVERITY_ERROR]
    assert first[6] == "PC01" and first[7] == "PS1" and first[13] == "PS1"
    assert isinstance(first[8], datetime) and first[8].tzinfo is None
    assert first[8] == T0 and rows[2][8] == T0 + timedelta(milliseconds=10)
    assert all(isinstance(v, int) for v in first[9:13])


def test_view_column_types_in_the_catalog(reader: pyodbc.Connection) -> None:
    rows = reader.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    ).fetchall()
    types = {(r[0], r[1]): r[2] for r in rows}
    assert types["v_statusmessage", "recordid"] == "bigint"
    assert types["v_statusmessage", "messageid"] == "integer"
    assert types["v_statusmessage", "severity"] == "integer"
    assert types["v_statusmessage", "time"] == "timestamp without time zone"
    assert types["v_statmsginsstrings", "insstrindex"] == "integer"
    assert types["v_r_system", "resourceid"] == "integer"
    assert types["v_r_system", "obsolete0"] == "integer"
    # Text columns are unbounded bpchar: `=` ignores trailing spaces like SQL Server.
    assert types["v_statmsginsstrings", "insstrvalue"] == "character"
    assert types["vproxy_routings", "externalurl"] == "character"
    # Only the views are visible to the reader: base tables are not even listed.
    assert not {name for name, _ in types} & set(BASE_TABLES)


@pytest.mark.parametrize(
    "value",
    [
        HOSTILE,
        "' or 1=1 --",
        "100% ;DROP TABLE x",
        "line one\nline two\r\nthree\ttab",
        "Ñandú-PC",
        "ПК-ОФИС",
        "🎉🔥 emoji 👍🏽",
        "trailing spaces   ",
        "   leading",
        "a" * 255,
        "é😀ж" * 170,  # 510 characters, 4-byte UTF-8 and UTF-16 surrogate pairs
        "",
    ],
)
def test_text_round_trips_verbatim(
    site: SiteDatabase, reader: pyodbc.Connection, value: str
) -> None:
    machine = value[:100] or "EMPTY"  # MachineName is varchar(128)
    (record_id,) = site.insert_status_messages([msg(machine, "MsgType", value)])
    row = reader.execute(
        "SELECT s.InsStrValue, m.MachineName FROM v_StatMsgInsStrings s "
        "INNER JOIN v_StatusMessage m ON m.RecordID = s.RecordID "
        "WHERE s.RecordID = ? AND s.InsStrIndex = 1",
        record_id,
    ).fetchone()
    assert isinstance(row[0], str)
    assert row[0] == value
    assert row[1] == machine


def test_insertion_strings_are_zero_based_and_pivoted(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    strings = ("one", None, "three", "", "five", None, None, None, None, "ten")
    (record_id,) = site.insert_status_messages([msg("PC01", *strings)])
    rows = reader.execute(
        "SELECT InsStrIndex, InsStrValue FROM v_StatMsgInsStrings WHERE RecordID = ? "
        "ORDER BY InsStrIndex",
        record_id,
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        (0, "one"),
        (2, "three"),
        (3, ""),
        (4, "five"),
        (9, "ten"),
    ]
    pivot = reader.execute(
        "SELECT RecordID, MessageID, MachineName, InsString1, InsString2, InsString3, "
        "InsString4, InsString5, InsString6, InsString7, InsString8, InsString9, InsString10 "
        "FROM v_StatMsgWithInsStrings WHERE RecordID = ?",
        record_id,
    ).fetchone()
    assert tuple(pivot[3:]) == strings


def test_generic_messages_carry_attribute_403(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    generic, other = site.insert_status_messages(
        [msg("PC01", "a"), msg("PC01", "b", message_id=11170, component="Task Sequence Manager")]
    )
    rows = reader.execute(
        "SELECT RecordID, AttributeID, AttributeValue, AttributeTime FROM v_StatMsgAttributes"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (generic, 403, "GenericMsg_SeeInsertionStrings", T0)
    ]
    assert other not in {r[0] for r in rows}


def test_text_compares_case_insensitively(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    site.insert_devices([device(16777300, "PC01"), device(16777301, "Ñandú-PC"),
                         device(16777302, "ПК-ОФИС")])  # fmt: skip

    def find(name: str) -> list[int]:
        rows = reader.execute(
            "SELECT ResourceID FROM v_R_System WHERE Netbios_Name0 = ? ORDER BY ResourceID", name
        ).fetchall()
        return [r[0] for r in rows]

    assert find("pc01") == [16777300]
    assert find("PC01  ") == [16777300]  # trailing spaces ignored, like SQL Server
    assert find(" PC01") == []  # leading ones are not
    assert find("ñANDÚ-pc") == [16777301]
    assert find("nandu-pc") == []  # accent-sensitive (…_CI_AS)
    assert find("пк-офис") == [16777302]
    # Also inside the database: joins and GROUP BY fold case.
    site.insert_status_messages([msg("pc01"), msg("PC01"), msg("Pc01  ")])
    groups = reader.execute(
        "SELECT COUNT(*) FROM v_StatusMessage m INNER JOIN v_R_System s "
        "ON s.Netbios_Name0 = m.MachineName GROUP BY s.ResourceID"
    ).fetchall()
    assert [g[0] for g in groups] == [3]


def test_insertion_string_equality_ignores_case_and_trailing_spaces(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    site.insert_status_messages([
        msg("A", "MsgType_Office365Upgrade", "projectInstalled"),
        msg("B", "msgtype_office365upgrade", "PROJECTINSTALLED   "),
        msg("C", "MsgType_Office365Upgrade", " projectInstalled"),
        msg("D", "MsgType_Office365Upgrade", "projectInstalledX"),
        msg("E", "MsgType_Office365Upgrade", "projectInstalled\t"),
    ])  # fmt: skip
    rows = reader.execute(
        "SELECT m.MachineName FROM v_StatusMessage m "
        "INNER JOIN v_StatMsgInsStrings s ON s.RecordID = m.RecordID AND s.InsStrIndex = 1 "
        "WHERE s.InsStrValue = ? ORDER BY m.MachineName",
        "projectInstalled",
    ).fetchall()
    assert [r[0] for r in rows] == ["A", "B"]


# -- parameters ------------------------------------------------------------------------------


def test_parameters_are_bound_not_interpolated(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    # current_query() is the statement text the server received: "$1", not the value.
    text, value = reader.execute("SELECT current_query(), CAST(? AS varchar)", HOSTILE).fetchone()
    assert value == HOSTILE
    assert "$1" in text and "DROP" not in text
    (record_id,) = site.insert_status_messages([msg(HOSTILE, HOSTILE, "' or 1=1 --")])
    found = reader.execute(
        "SELECT m.RecordID FROM v_StatusMessage m INNER JOIN v_StatMsgInsStrings s "
        "ON s.RecordID = m.RecordID WHERE m.MachineName = ? AND s.InsStrValue = ?",
        HOSTILE, "' or 1=1 --",
    ).fetchall()  # fmt: skip
    assert [r[0] for r in found] == [record_id]
    assert (
        reader.execute(
            "SELECT COUNT(*) FROM v_StatusMessage WHERE MachineName = ?", "' or 1=1 --"
        ).fetchone()[0]
        == 0
    )
    assert site.count() == 1  # nothing was dropped


def test_bigint_and_datetime_parameters(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    ids = site.insert_status_messages(
        [msg("PC01", time_utc=T0), msg("PC02", time_utc=T0 + timedelta(seconds=1))]
    )
    assert reader.execute("SELECT CAST(? AS bigint)", 2**60 + 1).fetchone()[0] == 2**60 + 1
    rows = reader.execute(
        "SELECT RecordID FROM v_StatusMessage WHERE RecordID > ? AND Time >= ?", ids[0], T0
    ).fetchall()
    assert [r[0] for r in rows] == [ids[1]]


def test_quirk_parameters_are_untyped(reader: pyodbc.Connection) -> None:
    # psqlODBC sends every parameter without a type; the server infers it from context.
    # A bare `SELECT ?` comes back as text, and arithmetic with an int literal makes
    # the parameter int4: write CAST(? AS bigint) where the context says nothing.
    assert reader.execute("SELECT ?", 5).fetchone()[0] == "5"
    with pytest.raises(pyodbc.Error) as error:
        reader.execute("SELECT ? + 1", 2**60).fetchone()
    assert sqlstate(error) == "22003"  # value out of range for type integer
    assert reader.execute("SELECT CAST(? AS bigint) + 1", 2**60).fetchone()[0] == 2**60 + 1
    with pytest.raises(pyodbc.Error) as error:
        reader.execute("SELECT ? IS NULL", None).fetchone()
    assert sqlstate(error) == "42P18"  # could not determine data type of parameter $1
    assert reader.execute("SELECT CAST(? AS integer) IS NULL", None).fetchone()[0] is True


def test_quirk_boolean_and_case_sensitive_literals(reader: pyodbc.Connection) -> None:
    # BoolsAsChar=0: a boolean is a bool (SQL Server has no boolean results at all).
    assert reader.execute("SELECT 1 = 1").fetchone()[0] is True
    # Only columns carry the case-insensitive collation: literal vs parameter is
    # case-sensitive here (SQL Server would say equal). Compare columns, not constants.
    assert reader.execute("SELECT CAST(? AS varchar) = 'a'", "A").fetchone()[0] is False


def test_quirk_like_is_refused_on_text_columns(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    site.insert_status_messages([msg("PC01")])
    with pytest.raises(pyodbc.Error) as error:
        reader.execute("SELECT RecordID FROM v_StatusMessage WHERE MachineName LIKE ?", "PC%")
    assert sqlstate(error) == "0A000"  # nondeterministic collations and LIKE (PG 15)


def test_quirk_connection_timeout_attribute_is_unsupported(db: SiteDatabase) -> None:
    # pyodbc's Connection.timeout sets SQL_ATTR_CONNECTION_TIMEOUT, which psqlODBC
    # 13.02 rejects (HY000); the connection stays usable, without a query timeout.
    connection = db.connect_reader()
    try:
        with pytest.raises(pyodbc.Error) as error:
            connection.timeout = 5
        assert sqlstate(error) == "HY000"
        assert connection.timeout == 0
        assert connection.execute("SELECT 1").fetchone()[0] == 1
    finally:
        connection.close()


def test_offset_fetch_paging(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    ids = site.insert_status_messages([msg(f"PC{i:02d}") for i in range(12)])
    sql = (
        "SELECT RecordID FROM v_StatusMessage WHERE SiteCode = ? AND RecordID > ? "
        "ORDER BY RecordID OFFSET 0 ROWS FETCH NEXT ? ROWS ONLY"
    )
    pages: list[list[int]] = []
    after = 0
    while True:
        page = [r[0] for r in reader.execute(sql, "ps1", after, 5).fetchall()]
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == ids


# -- RecordIDs -------------------------------------------------------------------------------


def test_record_ids_are_site_partitioned(site: SiteDatabase) -> None:
    site.register_sites(["PS1", "PS2"])
    ids = site.insert_status_messages(
        [msg("A", site="PS2"), msg("B"), msg("C", site="PS2"), msg("D", site="CAS")]
    )
    assert ids == [
        2 * RECORD_ID_RANGE,
        RECORD_ID_RANGE,
        2 * RECORD_ID_RANGE + 1,
        3 * RECORD_ID_RANGE,
    ]
    assert site.site_record_id_base("cas") == 3 * RECORD_ID_RANGE


def test_explicit_record_ids_are_kept_and_the_sequence_moves_past_them(site: SiteDatabase) -> None:
    site.register_sites(["PS1"])
    base = RECORD_ID_RANGE
    assert site.insert_status_messages([msg("A", record_id=base + 100)]) == [base + 100]
    assert site.insert_status_messages([msg("B")]) == [base + 101]
    with pytest.raises(ValueError, match="outside"):
        site.insert_status_messages([msg("C", record_id=5)])


def test_reset_empties_everything_and_restarts_record_ids(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    site.insert_status_messages([msg("A", "x"), msg("B", site="PS2")])
    site.insert_devices([device(16777400, "A")])
    site.set_proxy_routing("https://cmg.example/AdminService")
    site.reset()
    for view in READER_VIEWS:
        assert reader.execute(f"SELECT COUNT(*) FROM {view}").fetchone()[0] == 0, view
    assert site.insert_status_messages([msg("C", site="PS2")]) == [RECORD_ID_RANGE]


def test_late_commit_is_invisible_until_commit(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    (first,) = site.insert_status_messages([msg("EARLY")])
    late = site.begin_late_commit(msg("LATE", "MsgType_Office365Upgrade", "visioInstalled"))
    (after,) = site.insert_status_messages([msg("AFTER")])
    assert first < late.record_id < after
    sql = "SELECT RecordID FROM v_StatusMessage WHERE RecordID > ? ORDER BY RecordID"
    # The watermark reader sees AFTER but not the lower, uncommitted LATE: a naive
    # `RecordID > watermark` moved to `after` would never see LATE.
    assert [r[0] for r in reader.execute(sql, first).fetchall()] == [after]
    assert site.count("v_StatMsgInsStrings") == 0
    late.commit()
    assert not late.pending
    assert [r[0] for r in reader.execute(sql, first).fetchall()] == [late.record_id, after]
    strings = reader.execute(
        "SELECT InsString2 FROM v_StatMsgWithInsStrings WHERE RecordID = ?", late.record_id
    ).fetchone()
    assert strings[0] == "visioInstalled"


def test_late_commit_rollback_leaves_a_gap(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    with site.begin_late_commit(msg("LATE")) as late:
        pass  # the with block rolls back
    (after,) = site.insert_status_messages([msg("AFTER")])
    assert after == late.record_id + 1
    assert [r[0] for r in reader.execute("SELECT RecordID FROM v_StatusMessage").fetchall()] == [
        after
    ]
    with pytest.raises(RuntimeError):
        late.commit()


def test_reset_rolls_back_pending_late_commits(
    site: SiteDatabase, reader: pyodbc.Connection
) -> None:
    late = site.begin_late_commit(msg("LATE"))
    site.reset()
    assert not late.pending
    assert reader.execute("SELECT COUNT(*) FROM v_StatusMessage").fetchone()[0] == 0


def test_proxy_routing(site: SiteDatabase, reader: pyodbc.Connection) -> None:
    url = "https://cmg.contoso.com/CCM_Proxy_ServerAuth/72057594037927939/AdminService"
    site.set_proxy_routing(url)
    sql = "SELECT ExternalUrl FROM vProxy_Routings WHERE ExternalEndpointName = ?"
    assert [r[0] for r in reader.execute(sql, "adminservice").fetchall()] == [url]
    site.set_proxy_routing(url + "2")
    assert [r[0] for r in reader.execute(sql, "AdminService").fetchall()] == [url + "2"]
    site.set_proxy_routing(None)
    assert reader.execute(sql, "AdminService").fetchall() == []


def test_nul_is_refused_with_a_clear_error(site: SiteDatabase) -> None:
    with pytest.raises(ValueError, match="NUL"):
        site.insert_status_messages([msg("PC01", "a\x00b")])


def test_aware_datetimes_are_refused(site: SiteDatabase) -> None:
    with pytest.raises(ValueError, match="naive"):
        site.insert_devices([device(16777500, "X", creation_date=datetime(2024, 1, 1, tzinfo=UTC))])


# -- stop and restart ----------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


def test_stop_and_restart_keeps_data_and_port() -> None:
    with SiteDatabase() as db:
        ids = db.insert_status_messages([msg("PC01", "kept")])
        port, directory = db.port, db.directory
        reader = db.connect_reader()
        late = db.begin_late_commit(msg("LOST"))

        db.stop(keep_data=True)
        assert not db.running and not _port_open(port)
        assert not late.pending  # a server stop ends every transaction
        with pytest.raises(pyodbc.Error) as error:
            db.connect_reader()
        assert sqlstate(error) == "08001"  # connection refused
        with pytest.raises(pyodbc.Error) as error:
            reader.execute("SELECT 1").fetchall()
        # The old session learns it was terminated: 57P01 first, 08S01 afterwards.
        assert sqlstate(error) in ("57P01", "08S01")
        with pytest.raises(RuntimeError):
            db.insert_status_messages([msg("X")])

        db.start()
        assert db.running and db.port == port and db.directory == directory
        with pytest.raises(pyodbc.Error) as error:
            reader.execute("SELECT 1").fetchall()
        assert sqlstate(error) in ("57P01", "08S01")
        reader.close()
        with db.connect_reader() as fresh:
            rows = fresh.execute(
                "SELECT RecordID, InsString1 FROM v_StatMsgWithInsStrings"
            ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [(ids[0], "kept")]
        # The sequence kept its place too (the rolled-back LOST left a gap).
        assert db.insert_status_messages([msg("PC02")]) == [ids[0] + 2]
    assert not directory.exists()
    assert not _port_open(port)


def test_crash_keeps_committed_data_and_skips_record_ids() -> None:
    with SiteDatabase() as db:
        db.register_sites(["PS1"])  # the sequence exists before this transaction
        ids = db.insert_status_messages([msg("PC01", "committed")])
        db.stop(keep_data=True, crash=True)
        db.start()
        assert db.count() == 1
        (after,) = db.insert_status_messages([msg("PC02")])
        # Sequence values are WAL-logged 32 ahead: after a crash the next one jumps.
        print(f"\nRecordID after crash recovery: +{after - ids[0]}")
        assert ids[0] < after <= ids[0] + 33


def test_statement_log_shows_bound_parameters() -> None:
    with SiteDatabase(log_statements=True) as db, db.connect_reader() as reader:
        reader.execute(
            "SELECT COUNT(*) FROM v_StatusMessage WHERE MachineName = ?", HOSTILE
        ).fetchall()
        text = db.log_path.read_text()
    assert "WHERE MachineName = $1" in text
    assert "parameters: $1 = 'x''); DROP TABLE status_messages; --'" in text


def test_stop_is_idempotent_and_start_after_stop_makes_a_new_cluster() -> None:
    db = SiteDatabase()
    db.stop()  # never started: nothing to do
    db.start()
    first = db.directory
    db.stop()
    db.stop()
    assert not first.exists()
    db.start()
    try:
        assert db.directory != first
        assert db.count() == 0
    finally:
        db.stop()
