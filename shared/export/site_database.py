"""Reading the ConfigMgr site database (SQL Server) through pyodbc.

Only the documented ``v_`` views are read. Every value is a bound parameter, and the
SQL stays in the subset SQL Server and PostgreSQL both accept (no TOP, no brackets,
no NOLOCK, columns read by position), so the tests run this very code against the
PostgreSQL stand-in in ``devstack/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol

import pyodbc

from shared.domain.devices import DeviceRecord, flag, is_text
from shared.domain.membership import Membership
from shared.domain.status_messages import (
    GENERIC_INFO,
    INSERTION_STRING_COUNT,
    SiteSummary,
    StatusMessage,
    sql_equal,
)
from shared.errors import SiteDatabaseError, SiteDatabaseRefused, SiteDatabaseUnavailable
from shared.export.paging import KeysetPaged
from shared.platform.retry import RetryPolicy, Sleep

log = logging.getLogger(__name__)

#: Idle connections kept for the next queries (the worker's threads, at most).
MAX_IDLE_CONNECTIONS: Final = 32

_SITES_SQL: Final = """
SELECT SiteCode, MAX(RecordID), MAX(Time)
FROM v_StatusMessage
WHERE MessageID = ?
GROUP BY SiteCode
ORDER BY SiteCode
"""

_PAGE_SQL: Final = """
SELECT RecordID, MessageID, SiteCode, Time, MachineName
FROM v_StatusMessage
WHERE MessageID = ? AND SiteCode = ? AND RecordID > ?{since}
ORDER BY RecordID
OFFSET 0 ROWS FETCH NEXT ? ROWS ONLY
"""

_STRINGS_SQL: Final = """
SELECT s.RecordID, s.InsStrIndex, s.InsStrValue
FROM v_StatMsgInsStrings s
INNER JOIN v_StatusMessage m ON m.RecordID = s.RecordID
WHERE m.MessageID = ? AND m.SiteCode = ? AND s.RecordID >= ? AND s.RecordID <= ?
"""

#: Every view the app reads (``ping`` reads one row of each).
_VIEWS: Final = (
    "v_StatusMessage",
    "v_StatMsgInsStrings",
    "v_R_System",
    "v_FullCollectionMembership",
)

_DEVICES_SQL: Final = """
SELECT ResourceID, Name0, Netbios_Name0, Client0, Active0, Obsolete0, Decommissioned0,
       Creation_Date0
FROM v_R_System
WHERE Netbios_Name0 = ?
ORDER BY ResourceID
"""

_MEMBERSHIP_SQL: Final = """
SELECT IsDirect
FROM v_FullCollectionMembership
WHERE CollectionID = ? AND ResourceID = ?
"""

# SQLSTATE classes: connection trouble and timeouts are worth another try; the rest
# (login failed, no permission, no such view) needs an operator.
_TRANSIENT_PREFIXES: Final = ("08", "HYT", "40001", "40197", "40501", "40613", "57P")
_VIEW_MISSING: Final = (
    "a view is missing: is Database= in SITE_DB_CONNECTION the site database CM_<SiteCode>?"
)
_GRANTS: Final = (
    "check that the SQL login may SELECT from v_StatusMessage, v_StatMsgInsStrings, v_R_System "
    "and v_FullCollectionMembership"
)
_HINTS: Final = {
    "28000": "the SQL login in SITE_DB_CONNECTION was refused: check user name and password",
    "42000": _GRANTS,
    "42501": _GRANTS,
    "42S02": _VIEW_MISSING,
    "42P01": _VIEW_MISSING,
    "TLS": "the SQL Server certificate was refused: use the host name the certificate names in "
    "Server= (or HostNameInCertificate=), and a certificate from a CA this machine trusts (or "
    "ServerCertificate= with its file); the check cannot be switched off "
    "(TrustServerCertificate=yes is refused)",
    "IM002": "the ODBC driver named in SITE_DB_CONNECTION is not installed "
    "(production: 'ODBC Driver 18 for SQL Server')",
}


def _sqlstate(error: pyodbc.Error) -> str:
    first = error.args[0] if error.args else ""
    return first if isinstance(first, str) and len(first) == 5 else ""


#: Drivers differ in the SQLSTATE of a refused login (SQL Server: 28000; others report
#: it as a connection failure), so the message decides too.
_LOGIN_REFUSED = re.compile(r"login failed|password authentication failed", re.IGNORECASE)


#: ODBC Driver 18 encrypts and validates the server certificate against the host name.
_CERTIFICATE = re.compile(r"certificate|SSL Provider|TLS", re.IGNORECASE)


#: A connection that broke under a query. Some drivers report it as a general error,
#: HY000 (psqlODBC: "server closed the connection unexpectedly" when the server stops or
#: restarts, "SSL SYSCALL error: EOF detected" when the link under TLS is cut, as when
#: a relay listener goes away; ODBC Driver 18: "Connection may have been terminated by
#: the server"): a retry on a new connection gets past it, as it does past the 08xxx
#: states.
_CONNECTION_LOST = re.compile(
    r"server closed the connection|terminating connection|no connection to the server"
    r"|connection may have been terminated|communication link failure"
    r"|transport-level error|SSL SYSCALL error",
    re.IGNORECASE,
)


def _text(error: pyodbc.Error) -> str:
    return str(error.args[1] if len(error.args) > 1 else error).strip()


def _diagnose(error: pyodbc.Error) -> tuple[str, str, bool]:
    """The SQLSTATE (or what the message shows it to be), the driver's text, and
    whether another attempt on a new connection may get past it."""
    state = _sqlstate(error)
    detail = _text(error)
    lost = False
    if _LOGIN_REFUSED.search(detail):
        state = "28000"
    elif _CERTIFICATE.search(detail):
        state = "TLS"
    else:
        lost = bool(_CONNECTION_LOST.search(detail))
    return state, detail, lost or state.startswith(_TRANSIENT_PREFIXES) or not state


def _transient(error: Exception) -> str | None:
    if not isinstance(error, pyodbc.Error):
        return None
    state, _, transient = _diagnose(error)
    return f"SQLSTATE {state or 'none'}" if transient else None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class NetworkPath(Protocol):
    """What the network path to SQL Server (the relay tunnel) knows: why a link broke,
    and how long a connection may be reused."""

    def failure_since(self, since: float) -> SiteDatabaseError | None:
        """Its failure at or after ``since`` (``time.monotonic``), if any."""
        ...

    def reuse_until(self) -> float:
        """Until when (``time.monotonic``) a connection opened now may be reused."""
        ...


class SiteDatabaseClient(KeysetPaged):
    """Reads status messages from the site database. Create once, reuse, ``close()``.

    Connections are opened lazily and reopened after a transient failure; a query that
    keeps failing raises SiteDatabaseUnavailable, one the server refuses raises
    SiteDatabaseRefused with a hint for the operator.
    """

    def __init__(
        self,
        connection_string: str,
        *,
        login_timeout_seconds: int = 15,
        query_timeout_seconds: int = 120,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        path: NetworkPath | None = None,
    ) -> None:
        self._connection_string = connection_string
        self._path = path
        self._login_timeout = login_timeout_seconds
        self._query_timeout = query_timeout_seconds
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._warned_no_timeout = False
        # One connection per concurrent query: the worker's threads never queue behind
        # one connection. Idle ones wait here for the next query, each with the time
        # after which it must not be reused (the path's, or never).
        self._idle: list[tuple[Any, float]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> SiteDatabaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections. A query still running (a health probe waiting
        past its deadline for a server that does not answer) keeps its own, which goes
        back to the idle ones when it returns."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            _close_quietly(connection)

    def _checkout(self) -> tuple[Any, float]:
        """An idle connection still fit for reuse, or a new one; with its reuse limit."""
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                break
            if time.monotonic() < idle[1]:
                return idle
            _close_quietly(idle[0])  # retired before its relay link's token expires
        until = self._path.reuse_until() if self._path is not None else math.inf
        return self._connect(), until

    def _connect(self) -> Any:
        connection = pyodbc.connect(
            self._connection_string, timeout=self._login_timeout, autocommit=True
        )
        try:
            connection.timeout = self._query_timeout
        except pyodbc.Error:
            # ODBC Driver 18 supports it; some drivers (psqlODBC) refuse the attribute.
            if not self._warned_no_timeout:
                log.info("site database driver does not support query timeouts")
                self._warned_no_timeout = True
        return connection

    def _query(self, sql: str, params: Sequence[object], what: str) -> list[Any]:
        """Run one read, on a new connection after a transient failure."""
        started = time.monotonic()
        try:
            return self._retry.call(
                partial(self._execute, sql, params),
                transient=_transient,
                what=f"site database: {what}",
                sleep=self._sleep,
            )
        except pyodbc.Error as error:
            state, detail, transient = _diagnose(error)
            # The driver only saw a broken link; the tunnel knows why.
            cause = self._path.failure_since(started) if self._path is not None else None
            if transient and cause is not None:
                raise type(cause)(f"site database unavailable for {what}: {cause}") from None
            if transient:
                raise SiteDatabaseUnavailable(
                    f"site database unavailable for {what} after {self._retry.attempts} "
                    f"attempts (SQLSTATE {state or 'none'}: {detail}); check that the SQL "
                    "Server is up and reachable from the function app (VNet, firewall, "
                    "static port in Server=host,port)"
                ) from None
            hint = _HINTS.get(state, "check SITE_DB_CONNECTION and the SQL login")
            raise SiteDatabaseRefused(
                f"site database refused {what} (SQLSTATE {state}: {detail}); {hint}"
            ) from None

    def _execute(self, sql: str, params: Sequence[object]) -> list[Any]:
        connection, until = self._checkout()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, *params)
                rows = list(cursor.fetchall())
            finally:
                cursor.close()
        except pyodbc.Error:
            _close_quietly(connection)  # broken, or unknown: the retry opens another
            raise
        with self._lock:
            keep = len(self._idle) < MAX_IDLE_CONNECTIONS
            if keep:
                self._idle.append((connection, until))
        if not keep:
            _close_quietly(connection)
        return rows

    def ping(self) -> None:
        """Read every view the app reads: proves login, permissions and the views."""
        for view in _VIEWS:
            key = (
                "RecordID"
                if view.startswith("v_StatMsg") or view == "v_StatusMessage"
                else "ResourceID"
            )
            self._query(
                f"SELECT {key} FROM {view} ORDER BY {key} OFFSET 0 ROWS FETCH NEXT 1 ROWS ONLY",
                (),
                f"a test query on {view}",
            )

    def sites(self) -> list[SiteSummary]:
        """Every site that has generic (39997) status messages, with its newest one."""
        rows = self._query(_SITES_SQL, (GENERIC_INFO,), "the list of sites")
        return [
            SiteSummary(
                site_code=str(row[0]).strip().upper(),
                newest_record_id=int(row[1]),
                newest_time_utc=_utc(row[2]),
            )
            for row in rows
        ]

    def read_page(
        self,
        site_code: str,
        *,
        after_record_id: int,
        limit: int,
        since: datetime | None = None,
    ) -> list[StatusMessage]:
        """Up to ``limit`` 39997 messages of a site with RecordID > ``after_record_id``,
        oldest first, with their insertion strings."""
        sql = _PAGE_SQL.format(since=" AND Time >= ?" if since is not None else "")
        params: list[object] = [GENERIC_INFO, site_code, after_record_id]
        if since is not None:
            # The column is a UTC datetime without a zone; compare like with like.
            params.append(since.astimezone(UTC).replace(tzinfo=None))
        params.append(limit)
        rows = self._query(sql, params, f"status messages of site {site_code}")
        if not rows:
            return []
        first, last = int(rows[0][0]), int(rows[-1][0])
        strings: dict[int, list[str | None]] = {
            int(row[0]): [None] * INSERTION_STRING_COUNT for row in rows
        }
        for record_id, index, value in self._query(
            _STRINGS_SQL,
            (GENERIC_INFO, site_code, first, last),
            f"insertion strings of site {site_code}",
        ):
            slots = strings.get(int(record_id))
            if slots is not None and index is not None and 0 <= int(index) < INSERTION_STRING_COUNT:
                slots[int(index)] = value
        return [
            StatusMessage(
                site_code=str(row[2]).strip().upper(),
                record_id=int(row[0]),
                message_id=int(row[1]),
                time_utc=_utc(row[3]),
                machine_name=str(row[4] or ""),
                insertion_strings=tuple(strings[int(row[0])]),
            )
            for row in rows
        ]

    def membership(self, collection_id: str, resource_id: int) -> Membership:
        """How the device is in the collection as the site last evaluated it (None: not
        at all): one indexed row, whatever the collection's size."""
        rows = self._query(
            _MEMBERSHIP_SQL,
            (collection_id, int(resource_id)),
            f"membership of {resource_id} in {collection_id}",
        )
        if not rows:
            return None
        return "direct" if any(flag(row[0]) for row in rows) else "other"

    def find_devices(self, netbios_name: str) -> list[DeviceRecord]:
        """Discovery records named ``netbios_name`` (the view's collation compares
        case-insensitively). The name is a bound parameter, never SQL text."""
        if not is_text(netbios_name):
            return []  # no driver can send it, and no record is named with it
        rows = self._query(_DEVICES_SQL, (netbios_name,), f"devices named {netbios_name!r}")
        # The server may compare another value than ours: psqlODBC cuts a parameter at
        # NUL, and collations ignore some characters (U+200B) and fold widths (U+FF30
        # is P). Keep the records that carry the very name, case and trailing spaces aside.
        rows = [row for row in rows if sql_equal(str(row[2] or ""), netbios_name)]
        return [
            DeviceRecord(
                resource_id=int(row[0]),
                name=row[1],
                netbios_name=row[2],
                client=flag(row[3]),
                active=flag(row[4]),
                obsolete=flag(row[5]),
                decommissioned=flag(row[6]),
                creation_date=row[7],
            )
            for row in rows
        ]


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(pyodbc.Error):  # already broken: nothing to release
        connection.close()
