"""The site database reader: the SQL subset both engines accept, errors for operators."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pyodbc
import pytest

from devstack.datagen import GeneratedStatusMessage
from shared.errors import SiteDatabaseRefused, SiteDatabaseUnavailable
from shared.export import site_database
from shared.export.site_database import SiteDatabaseClient
from shared.platform.retry import RetryPolicy

# What SQL Server or PostgreSQL would refuse (azure.md, "what these machines can run").
NOT_PORTABLE = [
    r"\bTOP\b",
    r"\bLIMIT\b",
    r"\bNOLOCK\b",
    r"\[",
    r"GETUTCDATE",
    r"\bNOW\(",
    r"::",
    r"\bILIKE\b",
    r'"',
    r"\bISNULL\b",
    r"\bLEN\(",
    r"\|\|",
]


def sql_constants():
    return {name: value for name, value in vars(site_database).items() if name.endswith("_SQL")}


def test_every_query_stays_in_the_portable_subset():
    queries = sql_constants()
    assert set(queries) == {
        "_SITES_SQL",
        "_PAGE_SQL",
        "_STRINGS_SQL",
        "_DEVICES_SQL",
        "_MEMBERSHIP_SQL",
    }
    for name, sql in queries.items():
        for pattern in NOT_PORTABLE:
            assert not re.search(pattern, sql, re.IGNORECASE), f"{name} uses {pattern}"
        assert "'" not in sql, f"{name} must bind values as parameters, not literals"


@pytest.mark.stack
def test_hostile_strings_are_read_verbatim_and_never_become_sql(stack):
    hostile = [
        "x'); DROP TABLE statusmessages; --",
        "' OR 1=1 --",
        "100% \\ _ [a]",
        "line\nbreak\ttab",
        "Ñandú ПК 💻",
        "Z" * 255,
    ]
    ids = stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name=value[:128],
                time_utc=datetime(2026, 11, 20, 10, n),
                insertion_strings=("MsgType_Office365Upgrade", value, value),
            )
            for n, value in enumerate(hostile)
        ]
    )
    with SiteDatabaseClient(stack.site_db.reader_connection_string) as client:
        page = client.read_page("PS1", after_record_id=0, limit=100)
        assert [m.record_id for m in page] == ids
        for m, value in zip(page, hostile, strict=True):
            assert m.insertion_strings[1] == value
            assert m.insertion_strings[2] == value
            assert m.machine_name == value[:128]
        # the site code parameter is bound too: a hostile one finds nothing, breaks nothing
        assert client.read_page("PS1' OR '1'='1", after_record_id=0, limit=10) == []
        assert len(client.read_page("PS1", after_record_id=0, limit=100)) == len(hostile)


@pytest.mark.stack
def test_pages_are_oldest_first_and_keyset_paged(stack):
    ids = stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name=f"PC{n}",
                time_utc=datetime(2026, 11, 20, 10, n % 60),
                insertion_strings=("a", str(n)),
            )
            for n in range(25)
        ]
    )
    with SiteDatabaseClient(stack.site_db.reader_connection_string) as client:
        pages = list(client.iter_pages("PS1", after_record_id=0, page_size=10))
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [m.record_id for p in pages for m in p] == sorted(ids)
        assert [m.insertion_strings[1] for p in pages for m in p] == [str(n) for n in range(25)]
        sites = client.sites()
        assert [(s.site_code, s.newest_record_id) for s in sites] == [("PS1", max(ids))]


def test_unreachable_database_is_retried_then_reported():
    sleeps = []
    client = SiteDatabaseClient(
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=9;Database=x;Uid=u;Pwd=secret-pw",
        login_timeout_seconds=2,
        retry=RetryPolicy(attempts=3, initial_backoff_seconds=0.01),
        sleep=sleeps.append,
    )
    with pytest.raises(SiteDatabaseUnavailable) as caught:
        client.sites()
    assert len(sleeps) == 2
    assert "after 3 attempts" in str(caught.value)
    assert "secret-pw" not in str(caught.value)


class _DroppedOnce:
    """A pyodbc connection whose first query finds the connection gone."""

    def __init__(self, failures, text):
        self.failures, self.text, self.timeout = failures, text, 0

    def cursor(self):
        return self

    def execute(self, *args):
        if self.failures:
            self.failures.pop()
            raise site_database.pyodbc.Error("HY000", self.text)

    def fetchall(self):
        return []

    def close(self):
        pass


@pytest.mark.parametrize(
    "text",
    [
        # psqlODBC, the server stopped or restarted under an open connection
        "[HY000] FATAL:  terminating connection due to administrator command\n"
        "server closed the connection unexpectedly",
        # ODBC Driver 18 for SQL Server, the session was killed or the server failed over
        "[Microsoft][ODBC Driver 18 for SQL Server]Unspecified error occurred on SQL "
        "Server. Connection may have been terminated by the server.",
    ],
)
def test_a_connection_lost_as_a_general_error_is_retried(monkeypatch, text):
    failures = [1]
    monkeypatch.setattr(
        site_database.pyodbc, "connect", lambda *a, **k: _DroppedOnce(failures, text)
    )
    sleeps = []
    client = SiteDatabaseClient("Driver={x};Server=y", sleep=sleeps.append)
    assert client.sites() == []
    assert len(sleeps) == 1 and failures == []


@pytest.mark.stack
def test_wrong_password_is_refused_with_a_hint(stack):
    wrong = re.sub(r"Pwd=[^;]*", "Pwd=Wr0ngPassw0rd", stack.site_db.reader_connection_string)
    sleeps = []
    client = SiteDatabaseClient(wrong, sleep=sleeps.append)
    with pytest.raises(SiteDatabaseRefused) as caught:
        client.sites()
    assert sleeps == []  # retrying a refused login only locks the account out sooner
    assert "check user name and password" in str(caught.value)
    assert "Wr0ngPassw0rd" not in str(caught.value)


@pytest.mark.stack
def test_wrong_database_names_the_missing_view(stack):
    other = re.sub(r"Database=[^;]*", "Database=postgres", stack.site_db.reader_connection_string)
    with pytest.raises(SiteDatabaseRefused) as caught:
        SiteDatabaseClient(other).ping()
    assert "a view is missing" in str(caught.value)


@pytest.mark.stack
def test_concurrent_queries_each_get_a_connection_of_their_own(stack):
    """The worker's threads never queue behind one connection: queries that run at once
    run on as many connections, which then wait idle for the next ones."""
    client = SiteDatabaseClient(stack.site_db.reader_connection_string)
    together = threading.Barrier(4)

    def slow_read(_: int) -> list[object]:
        together.wait(timeout=10)
        return client._query("SELECT pg_sleep(0.3)", (), "a slow read")

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert len(list(pool.map(slow_read, range(4)))) == 4
        assert len(client._idle) == 4
        client._query("SELECT 1", (), "one more read")
        assert len(client._idle) == 4  # reused, not a fifth
    finally:
        client.close()
    assert client._idle == []


def test_a_failed_query_drops_its_connection_and_the_retry_opens_another(monkeypatch):
    opened: list[FakeConnection] = []

    class FakeCursor:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def execute(self, *_: object) -> None:
            if self.fail:
                raise pyodbc.OperationalError("08S01", "[08S01] communication link failure")

        def fetchall(self) -> list[tuple[int]]:
            return [(1,)]

        def close(self) -> None:
            pass

    class FakeConnection:
        """pyodbc's connection as far as the client uses it (a driver's broken link
        cannot be produced on the PostgreSQL stand-in)."""

        def __init__(self, fail: bool) -> None:
            self.fail, self.closed = fail, False

        def cursor(self) -> FakeCursor:
            return FakeCursor(self.fail)

        def close(self) -> None:
            self.closed = True

    def connect(*_: object, **__: object) -> FakeConnection:
        opened.append(FakeConnection(fail=not opened))
        return opened[-1]

    monkeypatch.setattr(site_database.pyodbc, "connect", connect)
    client = SiteDatabaseClient("Driver=x", retry=RetryPolicy(attempts=2), sleep=lambda _: None)
    assert client._query("SELECT 1", (), "a read") == [(1,)]
    assert [c.closed for c in opened] == [True, False]
    assert [c for c, _ in client._idle] == [opened[1]]
